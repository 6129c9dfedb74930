"""OpenAI-compatible routes: ``POST /v1/chat/completions`` about a live session, ``GET /v1/models``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter

from serving.deps import Owner, Service
from serving.errors import ServiceError
from serving.openai_compat import Completion, finish_reason, model_list, question_of, session_of
from serving.questions import QueuedAnswer
from serving.schemas import ChatCompletionRequest
from serving.service import VigilService
from serving.sse import KEEPALIVE, sse, sse_response

router = APIRouter(prefix="/v1", tags=["openai"])


@router.get("/models")
async def models(who: Owner, service: Service) -> dict[str, Any]:
    """The caller's live sessions, each as a model ``vigil:<id>``."""
    return model_list(await service.list(who))


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, who: Owner, service: Service) -> Any:
    """Ask a live session through the OpenAI chat completions protocol (streaming or not)."""
    session_id = session_of(body)
    question, images = question_of(body)
    if images:
        await service.push_frames(who, session_id, [(image, None) for image in images])
    queued = await service.ask(
        who,
        session_id,
        question,
        max_new_tokens=body.max_completion_tokens or body.max_tokens,
        min_new_tokens=body.min_tokens,
        temperature=body.temperature,
    )
    completion = Completion(f"chatcmpl-{queued.answer_id}", body.model)
    if not body.stream:
        return completion.body(await service.wait_answer(queued.future), session_id)
    include_usage = bool((body.stream_options or {}).get("include_usage"))
    return sse_response(_chunks(service, queued, completion, include_usage))


async def _chunks(
    service: VigilService, queued: QueuedAnswer, completion: Completion, include_usage: bool
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
                yield sse({"error": {"code": event.code, "message": event.message}})
    except ServiceError as exc:
        finished = True
        yield sse({"error": {"code": exc.code, "message": exc.message}})
    finally:
        if not finished:
            h.live.cancel(answer_id)
    yield sse("[DONE]")
