"""OpenAI-compatible routes: ``POST /v1/chat/completions`` (stateless about a video, or about a live session) and
``GET /v1/models``; their errors take OpenAI's shape."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from serving.deps import Owner, Service
from serving.errors import ServiceError
from serving.openai_compat import (
    ChatRequest,
    Completion,
    Conversation,
    conversation_of,
    error_response,
    finish_reason,
    model_list,
    served_model,
    session_of,
)
from serving.openai_session import StatelessSession
from serving.questions import QueuedAnswer
from serving.routes.errors import service_error
from serving.service import VigilService
from serving.sse import KEEPALIVE, sse, sse_response


class OpenAIRoute(APIRoute):
    """A route whose errors (validation, refusals, authentication) are answered in OpenAI's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                where = [str(p) for p in first.get("loc", ()) if p != "body"]
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
                    for e in exc.errors()[:10]
                )
                return error_response(400, "invalid_request", problems, where[0] if where else None)
            except ServiceError as exc:
                if exc.redirect:  # the session runs on another worker: the API's redirect
                    return await service_error(request, exc)
                await service_error(request, exc)  # counted as the API counts refusals
                return error_response(exc.status, exc.code, exc.message, getattr(exc, "param", None), exc.headers)

        return route


router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)

STARTED = time.time()
"""When the served model came up, as ``/v1/models`` reports it."""


@router.get("/models")
async def models(request: Request, who: Owner, service: Service) -> dict[str, Any]:
    """The served model (stateless chat completions about a video), then the caller's live sessions
    as models ``vigil:<id>``."""
    served = served_model(request.app.state.model_name, STARTED, service.config.engine.kv_cap_tokens)
    return model_list(served, await service.list(who))


@router.post("/chat/completions")
async def chat_completions(body: ChatRequest, request: Request, who: Owner, service: Service) -> Any:
    """Chat completions, streaming or not: about the request's video or images with the served model's name, or
    about a live session with ``vigil:<session id>``."""
    body.check_supported()
    session_id = session_of(body, request.app.state.model_name)
    conversation = conversation_of(body)
    stateless = None
    if session_id is None:
        stateless = StatelessSession(service, who)
        queued = await stateless.ask(conversation, body.answer_options())
    else:
        queued = await _ask_live(service, who, session_id, conversation, body)
    completion = Completion(f"chatcmpl-{queued.answer_id}", body.model)
    if not body.stream:
        try:
            return completion.body(await service.wait_answer(queued.future), session_id)
        finally:
            if stateless is not None:
                await stateless.close()
    include_usage = bool((body.stream_options or {}).get("include_usage"))
    return sse_response(_chunks(service, queued, completion, include_usage, stateless))


async def _ask_live(
    service: VigilService, who: str, session_id: str, conversation: Conversation, body: ChatRequest
) -> QueuedAnswer:
    """Queue the last user message in a live session, after its images (nothing is pushed when it is refused)."""
    if conversation.video is not None:
        raise ServiceError(
            400, "invalid_request", f"play a video into a live session with POST /v1/sessions/{session_id}/video"
        )
    await service.get(who, session_id)
    limit = service.limits.max_question_chars
    if len(conversation.question) > limit:
        raise ServiceError(413, "question_too_long", f"questions are limited to {limit}")
    images = conversation.images[len(conversation.images) - conversation.last_images :]
    if images:
        await service.push_frames(who, session_id, [(image, None) for image in images])
    return await service.ask(who, session_id, conversation.question, **body.answer_options())


async def _chunks(
    service: VigilService,
    queued: QueuedAnswer,
    completion: Completion,
    include_usage: bool,
    stateless: StatelessSession | None,
) -> AsyncIterator[bytes]:
    """The answer as OpenAI chunks, then ``[DONE]``; a client that goes away cancels the answer."""
    h, answer_id, _, after = queued
    finished = False
    try:
        yield sse(completion.chunk({"role": "assistant", "content": ""}))
        async for event in service.answer_events(h, answer_id, after):
            if event is None:
                yield KEEPALIVE
            elif event.type == "answer_delta":
                yield sse(completion.chunk({"content": event.text}))
            elif event.type == "answer_done":
                finished = True
                yield sse(completion.chunk({}, finish_reason(event.finish_reason)))
                if include_usage:
                    yield sse(completion.usage_chunk(event))
            elif event.type == "error":
                finished = True
                yield _error_chunk(500, event.code, event.message)
    except ServiceError as exc:
        finished = True
        yield _error_chunk(exc.status, exc.code, exc.message)
    finally:
        if not finished:
            h.live.cancel(answer_id)
        if stateless is not None:
            with contextlib.suppress(Exception):
                await stateless.close()
    yield sse("[DONE]")


def _error_chunk(status: int, code: str, message: str) -> bytes:
    """An error in the middle of a stream, as vLLM sends it (an error object in a data line)."""
    return sse(json.loads(error_response(status, code, message).body))
