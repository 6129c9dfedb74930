"""OpenAI-compatible chat completions about a live session (``model: "vigil:<session id>"``).

Only the last user message is asked: the session keeps its own bounded history of questions and answers.
Image parts with ``data:`` URLs are pushed into the session as frames (at "now") before the question.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from serving.deps import Owner
from serving.schemas import ChatCompletionRequest
from serving.service import ServiceError, VigilService
from serving.sse import KEEPALIVE, sse, sse_response

PREFIX = "vigil:"


def session_of(request: ChatCompletionRequest) -> str:
    """The session a request names, by ``model`` (``vigil:<id>``) or ``session_id``."""
    if request.session_id:
        return request.session_id
    if request.model.startswith(PREFIX) and len(request.model) > len(PREFIX):
        return request.model[len(PREFIX) :]
    raise ServiceError(
        404,
        "model_not_found",
        f"model {request.model!r} names no session: use 'vigil:<session id>' or a session_id field",
    )


def question_of(request: ChatCompletionRequest) -> tuple[str, list[bytes]]:
    """The last user message's text and the images it carries (decoded data URLs)."""
    users = [m for m in request.messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise ServiceError(422, "invalid_request", "messages need at least one user message")
    content = users[-1].get("content")
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise ServiceError(422, "invalid_request", "message content must be a string or a list of parts")
    texts, images = [], []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            url = (part.get("image_url") or {}).get("url", "") if isinstance(part.get("image_url"), dict) else ""
            images.append(_data_url(url))
        else:
            raise ServiceError(422, "invalid_request", f"unsupported content part {kind!r}; use text or image_url")
    return " ".join(texts), images


def _data_url(url: str) -> bytes:
    head, sep, payload = url.partition(",")
    if not (url.startswith("data:image/") and sep and head.endswith(";base64")):
        raise ServiceError(422, "invalid_request", "image parts must be data:image/...;base64 URLs")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ServiceError(422, "invalid_frame", "the image part is not valid base64") from None


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def _usage(done: Any) -> dict[str, Any]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.generated_tokens,
        "total_tokens": done.prompt_tokens + done.generated_tokens,
        "prompt_tokens_details": {"cached_tokens": done.cached_tokens},
    }


def add_routes(app: FastAPI, service: VigilService) -> None:
    """Add ``POST /v1/chat/completions`` and ``GET /v1/models`` to ``app``."""

    @app.get("/v1/models", tags=["openai"])
    async def models(who: Owner) -> dict[str, Any]:
        """The caller's live sessions, each as a model ``vigil:<id>``."""
        sessions = await service.list(who)
        data = [
            {"id": PREFIX + s.id, "object": "model", "created": int(s.created), "owned_by": "vigil"}
            for s in sessions
            if s.status == "live"
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions", tags=["openai"])
    async def chat_completions(body: ChatCompletionRequest, who: Owner) -> Any:
        """Ask a live session through the OpenAI chat completions protocol (streaming or not)."""
        session_id = session_of(body)
        question, images = question_of(body)
        if images:
            await service.push_frames(who, session_id, [(image, None) for image in images])
        max_tokens = body.max_completion_tokens or body.max_tokens
        h, answer_id, future, after = await service.ask(
            who,
            session_id,
            question,
            max_new_tokens=max_tokens,
            min_new_tokens=body.min_tokens,
            temperature=body.temperature,
        )
        completion_id = f"chatcmpl-{answer_id}"
        created = int(time.time())
        if not body.stream:
            done = await service.wait_answer(future)
            return {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": body.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": done.text},
                        "finish_reason": _finish(done.finish_reason),
                    }
                ],
                "usage": _usage(done),
                "vigil": {"t": round(done.t, 4), "ttft_s": round(done.ttft_s, 4), "session_id": session_id},
            }
        include_usage = bool((body.stream_options or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return sse(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": body.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
            )

        async def events() -> AsyncIterator[bytes]:
            finished = False
            try:
                yield chunk({"role": "assistant", "content": ""})
                async for event in service.answer_events(h, answer_id, after):
                    if event is None:
                        yield KEEPALIVE
                    elif event.type == "answer_delta":
                        yield chunk({"content": event.text})
                    elif event.type == "answer_done":
                        finished = True
                        yield chunk({}, _finish(event.finish_reason))
                        if include_usage:
                            yield sse(
                                {
                                    "id": completion_id,
                                    "object": "chat.completion.chunk",
                                    "created": created,
                                    "model": body.model,
                                    "choices": [],
                                    "usage": _usage(event),
                                }
                            )
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

        return sse_response(events())
