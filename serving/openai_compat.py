"""OpenAI's chat completion protocol translated to and from Vigil, the way ``vllm serve`` speaks it.

- ``model: "vigil:<session id>"`` (or a ``session_id`` field) asks a live session: only the last user message is
  asked (the session keeps its own history); its ``image_url`` parts are pushed as frames first.
- ``model: <the served model>`` is stateless: the request's ``video_url`` (or its ``image_url`` frames) is played
  into a short-lived session, and the system messages and the dialogue so far are given with the question.

Errors take OpenAI's shape ``{"error": {"message", "type", "param", "code"}}`` with Vigil's stable codes in
``code``; parameters Vigil cannot honour are refused by name rather than ignored.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from assistant.events import AnswerFinished
from serving.errors import ServiceError
from serving.schemas import SessionView

PREFIX = "vigil:"

ROLES = ("system", "developer", "user", "assistant")

NEUTRAL: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "top_p": (1, 1.0),
    "top_k": (0, -1),
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "repetition_penalty": (1, 1.0),
    "tools": ((), []),
    "tool_choice": ("none", "auto"),
    "functions": ((), []),
    "function_call": ("none", "auto"),
    "stop": ("", (), []),
    "logit_bias": ({},),
    "response_format": ({"type": "text"},),
    "modalities": (["text"],),
    "parallel_tool_calls": (True, False),
}
"""Parameters Vigil does not implement, accepted only with a value that asks for nothing (None always is)."""

IGNORED = frozenset({"user", "store", "metadata", "service_tier", "reasoning_effort"})
"""Parameters that do not change an answer, accepted with any value."""


class ChatError(ServiceError):
    """A refused chat completion request, with the request parameter at fault (``param``)."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(status, code, message)
        self.param = param


class ChatRequest(BaseModel):
    """OpenAI's chat completion request, as far as it applies to a video (other fields: see ``NEUTRAL``)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="The served model (stateless, see /v1/models), or vigil:<session id>.")
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1, le=8192)
    max_completion_tokens: int | None = Field(None, ge=1, le=8192)
    temperature: float | None = Field(None, ge=0, le=2)
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="Sampling seed (with temperature > 0).")
    min_tokens: int | None = Field(None, ge=0, le=8192, description="As vLLM's extra parameter.")
    session_id: str | None = Field(None, description="A live session, when `model` does not name one.")
    stream_options: dict[str, Any] | None = None

    def check_supported(self) -> None:
        """ChatError 400 naming every parameter given that Vigil would otherwise have to ignore."""
        refused = []
        for name, value in (self.model_extra or {}).items():
            if name in IGNORED or value is None:
                continue
            if name not in NEUTRAL or value not in NEUTRAL[name]:
                refused.append(name)
        if refused:
            names = ", ".join(sorted(refused))
            raise ChatError(
                400, "unsupported_parameter", f"Vigil does not support these parameters: {names}", sorted(refused)[0]
            )

    def answer_options(self) -> dict[str, Any]:
        """The engine options this request asks for."""
        return {
            "max_new_tokens": self.max_completion_tokens or self.max_tokens,
            "min_new_tokens": self.min_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
        }


@dataclass(slots=True)
class Video:
    """A ``video_url`` part: the decoded bytes of a data URL, or a path or URL for the server's allow-list."""

    data: bytes | None = None
    source: str | None = None


@dataclass(slots=True)
class Conversation:
    """The messages of a request: the question, what came before it, and the visual input they carry."""

    question: str
    system: list[str] = field(default_factory=list)
    history: list[tuple[str, str]] = field(default_factory=list)
    """Earlier turns as (role, text), oldest first."""
    images: list[bytes] = field(default_factory=list)
    """Every ``image_url`` part of the user messages, in order."""
    last_images: int = 0
    """How many of ``images`` the last user message carries."""
    video: Video | None = None

    def prompt(self) -> str:
        """The question with the system messages and the dialogue before it (the stateless question)."""
        if not self.system and not self.history:
            return self.question
        lines = [*self.system]
        if self.history:
            lines.append("The conversation so far:")
            lines += [f"{'User' if role == 'user' else 'Assistant'}: {text}" for role, text in self.history]
        lines.append(self.question)
        return "\n".join(lines)


def session_of(request: ChatRequest, served_model: str) -> str | None:
    """The live session a request names (``vigil:<id>`` or ``session_id``), None for the served model (stateless)."""
    if request.session_id:
        return request.session_id
    if request.model.startswith(PREFIX) and len(request.model) > len(PREFIX):
        return request.model[len(PREFIX) :]
    if request.model == served_model:
        return None
    raise ChatError(
        404,
        "model_not_found",
        f"The model {request.model!r} does not exist: use {served_model!r} (stateless) or 'vigil:<session id>'",
        "model",
    )


def conversation_of(request: ChatRequest) -> Conversation:
    """The request's messages parsed and checked (ChatError 400 with the message and part at fault)."""
    turns: list[tuple[str, str, list[bytes], Video | None]] = []
    for i, message in enumerate(request.messages):
        role = message.get("role")
        if role not in ROLES:
            raise ChatError(400, "invalid_request", f"messages[{i}].role must be one of {', '.join(ROLES)}", "messages")
        text, images, video = _content(message.get("content"), f"messages[{i}]", visual=role == "user")
        turns.append(("system" if role == "developer" else role, text, images, video))
    if turns[-1][0] != "user":
        raise ChatError(400, "invalid_request", "the last message must be the user's question", "messages")
    question = turns[-1][1].strip()
    if not question:
        raise ChatError(400, "invalid_request", "the last user message needs a text part: the question", "messages")
    conversation = Conversation(question, last_images=len(turns[-1][2]))
    for n, (role, text, images, video) in enumerate(turns, 1):
        conversation.images += images
        if video is not None:
            if conversation.video is not None:
                raise ChatError(400, "invalid_request", "one video_url per request", "messages")
            conversation.video = video
        if n == len(turns):
            break
        if role == "system":
            conversation.system.append(text)
        elif text.strip():
            conversation.history.append((role, text.strip()))
    if conversation.video is not None and conversation.images:
        raise ChatError(400, "invalid_request", "give either a video_url or image_url frames, not both", "messages")
    return conversation


def _content(content: Any, where: str, *, visual: bool) -> tuple[str, list[bytes], Video | None]:
    """The text, images and video of one message's content."""
    if isinstance(content, str):
        return content, [], None
    if content is None:
        return "", [], None
    if not isinstance(content, list):
        raise ChatError(400, "invalid_request", f"{where}.content must be a string or a list of parts", "messages")
    texts: list[str] = []
    images: list[bytes] = []
    video = None
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        at = f"{where}.content[{j}]"
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind in ("image_url", "video_url") and visual:
            url = _url_of(part, kind, at)
            if kind == "image_url":
                images.append(_data_url(url, "image", at))
            elif video is not None:
                raise ChatError(400, "invalid_request", "one video_url per request", "messages")
            else:
                video = Video(data=_data_url(url, "video", at)) if url.startswith("data:") else Video(source=url)
        elif kind in ("image_url", "video_url"):
            raise ChatError(400, "invalid_request", f"{at}: only user messages may carry {kind} parts", "messages")
        else:
            raise ChatError(
                400,
                "invalid_request",
                f"{at}: unsupported content part {kind!r}; use text, image_url or video_url",
                "messages",
            )
    return " ".join(texts), images, video


def _url_of(part: dict[str, Any], kind: str, at: str) -> str:
    """The ``url`` of an ``image_url`` / ``video_url`` part (a string, or ChatError 400)."""
    inner = part.get(kind)
    url = inner.get("url") if isinstance(inner, dict) else inner
    if not isinstance(url, str) or not url:
        raise ChatError(400, "invalid_request", f"{at}.{kind}.url must be a non-empty string", "messages")
    return url


def _data_url(url: str, media: str, at: str) -> bytes:
    """The bytes of a ``data:{media}/...;base64,`` URL (ChatError 400 otherwise)."""
    head, sep, payload = url.partition(",")
    if not (url.startswith(f"data:{media}/") and sep and head.endswith(";base64")):
        hint = "data:image/...;base64 URLs" if media == "image" else "data:video/...;base64 URLs, paths or URLs"
        raise ChatError(400, "invalid_request", f"{at}: {media} parts must be {hint}", "messages")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ChatError(400, "invalid_frame", f"{at}: the {media} part is not valid base64", "messages") from None


# -- responses ---------------------------------------------------------------------------------------------------
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    410: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


def openai_status(status: int) -> int:
    """The status OpenAI's clients get: an invalid request is 400, as in vLLM (Vigil's API says 422)."""
    return 400 if status == 422 else status


def error_body(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object, with Vigil's stable code."""
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(
    status: int, code: str, message: str, param: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An error in OpenAI's shape."""
    status = openai_status(status)
    return JSONResponse(error_body(status, code, message, param), status_code=status, headers=headers)


def finish_reason(reason: str) -> str:
    """OpenAI's finish reason for one of ours (a cancelled answer just stops)."""
    return "length" if reason == "length" else "stop"


def usage(done: AnswerFinished) -> dict[str, Any]:
    """OpenAI's token usage of a finished answer; as in vLLM, ``prompt_tokens`` counts the cached ones too."""
    prompt = done.prompt_tokens + done.synced_tokens + done.cached_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": done.generated_tokens,
        "total_tokens": prompt + done.generated_tokens,
        "prompt_tokens_details": {"cached_tokens": min(done.cached_tokens, prompt)},
    }


def model_list(served: dict[str, Any], sessions: list[SessionView]) -> dict[str, Any]:
    """The served model, then the caller's live sessions as models ``vigil:<id>``."""
    data = [served] + [
        {"id": PREFIX + s.id, "object": "model", "created": int(s.created), "owned_by": "vigil", "root": served["id"]}
        for s in sessions
        if s.status == "live" and not s.options.get("metadata", {}).get("stateless")
    ]
    return {"object": "list", "data": data}


def served_model(name: str, created: float, max_model_len: int) -> dict[str, Any]:
    """The served model as ``/v1/models`` lists it (vLLM's fields)."""
    return {
        "id": name,
        "object": "model",
        "created": int(created),
        "owned_by": "vigil",
        "root": name,
        "parent": None,
        "max_model_len": max_model_len,
    }


@dataclass(frozen=True, slots=True)
class Completion:
    """One chat completion's identity, shared by its whole body or all of its chunks."""

    id: str
    model: str
    created: int = field(default_factory=lambda: int(time.time()))

    def body(self, done: AnswerFinished, session_id: str | None) -> dict[str, Any]:
        """The non-streaming response."""
        vigil: dict[str, Any] = {"t": round(done.t, 4), "ttft_s": round(done.ttft_s, 4)}
        if session_id is not None:
            vigil["session_id"] = session_id
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": done.text},
                    "logprobs": None,
                    "finish_reason": finish_reason(done.finish_reason),
                }
            ],
            "usage": usage(done),
            "vigil": vigil,
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
