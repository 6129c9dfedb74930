"""Questions about the stream (answers as JSON or Server-Sent Events), cancelling them, standing instructions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from assistant.events import AnswerFinished, SessionEvent
from serving.deps import Owner, Service
from serving.errors import ServiceError
from serving.forward import until_disconnected
from serving.questions import QueuedAnswer
from serving.routes.common import ERRORS
from serving.schemas import AnswerView, Instruction, Question
from serving.service import VigilService
from serving.sse import KEEPALIVE, sse, sse_response

router = APIRouter(prefix="/v1/sessions/{session_id}", tags=["questions"])


@router.post(
    "/messages",
    response_model=AnswerView,
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}, "application/json": {}}}},
)
async def ask(
    session_id: str,
    request: Request,
    body: Question,
    who: Owner,
    service: Service,
    stream: Annotated[bool, Query(description="Stream the answer as Server-Sent Events.")] = True,
) -> Any:
    """Ask about the stream; the answer streams as SSE (``answer_start``, ``answer_delta``, ``answer_done``)."""
    queued = await service.ask(
        who,
        session_id,
        body.question,
        body.t,
        max_new_tokens=body.max_new_tokens,
        min_new_tokens=body.min_new_tokens,
        temperature=body.temperature,
    )
    if not stream:
        return AnswerView.of(await _answer_unless_gone(request, service, queued))
    return sse_response(_answer_stream(service, queued))


async def _answer_unless_gone(request: Request, service: VigilService, queued: QueuedAnswer) -> AnswerFinished:
    """The finished answer; a client that goes away before it cancels the answer (nobody would read it)."""
    answer = asyncio.ensure_future(service.wait_answer(queued.future, queued.hosted))
    gone = asyncio.ensure_future(until_disconnected(request.receive))
    try:
        await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not answer.done():
        queued.hosted.live.cancel(queued.answer_id)
        answer.cancel()
        with contextlib.suppress(BaseException):
            await answer
        raise ServiceError(499, "client_closed", "the client went away; the answer was cancelled")
    return answer.result()


def _answer_message(answer_id: str, event: SessionEvent) -> bytes:
    """One answer event as an SSE message."""
    if event.type == "answer_done":
        return sse(AnswerView.of(event).model_dump(), event="answer_done")
    if event.type == "error":
        return sse({"code": event.code, "message": event.message}, event="error")
    if event.type == "answer_delta":
        return sse({"id": answer_id, "text": event.text}, event="answer_delta")
    return sse({"id": answer_id, "question": event.question, "t": event.t}, event="answer_start")


async def _answer_stream(service: VigilService, queued: QueuedAnswer) -> AsyncIterator[bytes]:
    """The answer's events as SSE until it is done; a client that goes away cancels the answer."""
    h, answer_id, _, after = queued
    finished = False
    try:
        async for event in service.answer_events(h, answer_id, after):
            if event is None:
                yield KEEPALIVE
                continue
            finished = event.type in ("answer_done", "error")
            yield _answer_message(answer_id, event)
    except ServiceError as exc:
        finished = True
        yield sse({"code": exc.code, "message": exc.message}, event="error")
    finally:
        if not finished:  # the client went away: stop generating
            h.live.cancel(answer_id)


@router.delete("/messages/{answer_id}", status_code=204)
async def cancel_answer(session_id: str, answer_id: str, who: Owner, service: Service) -> Response:
    """Cancel a queued or running answer."""
    if not await service.cancel(who, session_id, answer_id):
        raise ServiceError(404, "answer_not_found", f"no queued or running answer {answer_id!r}")
    return Response(status_code=204)


@router.post("/instructions", status_code=201, response_model=Instruction, responses=ERRORS)
async def add_instruction(session_id: str, body: Instruction, who: Owner, service: Service) -> Instruction:
    """Add a standing instruction ("tell me when ..."), checked from now on."""
    return Instruction(instruction=await service.add_instruction(who, session_id, body.instruction))
