"""OpenAI's chat completion protocol translated to and from a live session (``model: "vigil:<session id>"``).

Only the last user message is asked: the session keeps its own bounded history of questions and answers.
Image parts with ``data:`` URLs are pushed into the session as frames (at "now") before the question.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass, field
from typing import Any

from assistant.events import AnswerFinished
from serving.errors import ServiceError
from serving.schemas import ChatCompletionRequest, SessionView

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


def finish_reason(reason: str) -> str:
    """OpenAI's finish reason for one of ours (a cancelled answer just stops)."""
    return "length" if reason == "length" else "stop"


def usage(done: AnswerFinished) -> dict[str, Any]:
    """OpenAI's token usage of a finished answer."""
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.generated_tokens,
        "total_tokens": done.prompt_tokens + done.generated_tokens,
        "prompt_tokens_details": {"cached_tokens": done.cached_tokens},
    }


def model_list(sessions: list[SessionView]) -> dict[str, Any]:
    """The live sessions as OpenAI models ``vigil:<id>``."""
    data = [
        {"id": PREFIX + s.id, "object": "model", "created": int(s.created), "owned_by": "vigil"}
        for s in sessions
        if s.status == "live"
    ]
    return {"object": "list", "data": data}


@dataclass(frozen=True, slots=True)
class Completion:
    """One chat completion's identity, shared by its whole body or all of its chunks."""

    id: str
    model: str
    created: int = field(default_factory=lambda: int(time.time()))

    def body(self, done: AnswerFinished, session_id: str) -> dict[str, Any]:
        """The non-streaming response."""
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": done.text},
                    "finish_reason": finish_reason(done.finish_reason),
                }
            ],
            "usage": usage(done),
            "vigil": {"t": round(done.t, 4), "ttft_s": round(done.ttft_s, 4), "session_id": session_id},
        }

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        """A streamed piece of the answer."""
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def usage_chunk(self, done: AnswerFinished) -> dict[str, Any]:
        """The last chunk when the client asked for usage: no choices, the token usage."""
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage(done),
        }
