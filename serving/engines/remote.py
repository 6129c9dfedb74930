"""The remote reaction engine: the same context as the vLLM engine, over OpenAI-compatible ``vllm serve`` replicas.

The steps (absorb, compact, request, remember, stats) are ``serving.engines.prefix_core``'s; this module is the
HTTP transport: request bodies, replica pinning, retries.

Each request is a streamed chat completion whose user turn is the session's context: timestamp texts and one
image part per memory entry, each carrying a stable ``uuid`` so that the replica's prefix cache reuses the KV
of everything before the first change. A session is pinned to one replica (the one with the fewest sessions
when it opens) so its prefix stays in one cache; it moves only when its replica cannot be reached.

A request is retried (``retries`` times, after a short backoff, on another replica when its own is down) only
while it has produced no output, so an answer is never duplicated; a failure after the first delta ends the
answer with an ``EngineError``. For exact probes and cache figures start the replicas with
``--logprobs-mode raw_logprobs`` (the default) and ``--enable-prompt-tokens-details``; embeddings need
``--enable-mm-embeds``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import torch

from assistant.config import EngineConfig
from assistant.models.base import VisionLanguageAdapter
from assistant.reaction import AnswerRequest, EngineError
from serving.engines._context import Segment, SessionState, VisualItem, split_frames
from serving.engines.prefix_core import Completion, Piece, PrefixCachedEngine, Usage

log = logging.getLogger(__name__)

DOWN_FOR_S = 10.0
"""A replica that refused a connection is skipped for this long when sessions are placed."""
BACKOFF_S = 0.2


class ReplicaUnavailableError(EngineError):
    """No replica could be reached."""


class _Retryable(Exception):
    """A failure before any output: the request may be sent again."""

    def __init__(self, message: str, *, down: bool) -> None:
        super().__init__(message)
        self.down = down


@dataclass(slots=True)
class Replica:
    """One ``vllm serve`` endpoint."""

    url: str
    sessions: int = 0
    down_until: float = 0.0
    last_error: str = ""

    @property
    def up(self) -> bool:
        return time.monotonic() >= self.down_until


def _tensor_b64(tensor: torch.Tensor) -> str:
    buf = io.BytesIO()
    torch.save(tensor.contiguous().cpu(), buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _png_data_url(frame: torch.Tensor) -> str:
    """A data URL of one uint8 frame [1, H, W, 3] as PNG (lossless)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame[0].cpu().numpy()).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class RemoteEngine(PrefixCachedEngine):
    """ReactionEngine over one or more OpenAI-compatible vLLM servers."""

    def __init__(self, adapter: VisionLanguageAdapter, config: EngineConfig) -> None:
        opts = config.remote
        if not opts.urls:
            raise EngineError("the remote engine needs at least one replica URL (engine.remote.urls / --remote-url)")
        super().__init__(adapter, config)
        self.model = opts.served_model or adapter.name
        self.replicas = [Replica(url) for url in opts.urls]
        self._pins: dict[str, Replica] = {}
        self._parts: dict[str, dict[str, Any]] = {}  # image uuid -> encoded content part
        headers = {"Authorization": f"Bearer {opts.api_key}"} if opts.api_key else {}
        self._timeout = httpx.Timeout(opts.timeout_s, connect=opts.connect_timeout_s)
        self._client = httpx.AsyncClient(headers=headers, timeout=self._timeout)

    def replica_of(self, session_id: str) -> str:
        """URL of the replica a session is pinned to."""
        self.context.get(session_id)
        return self._pins[session_id].url

    async def shutdown(self) -> None:
        await super().shutdown()
        await self._client.aclose()

    # -- transport -----------------------------------------------------------------------------------------
    async def _opened(self, session_id: str) -> None:
        self._pin(session_id)

    def _closed(self, state: SessionState) -> None:
        replica = self._pins.pop(state.session_id, None)
        if replica is not None:
            replica.sessions -= 1
        prefix = f"vigil-{state.session_id}-{state.nonce}-"
        for key in [k for k in self._parts if k.startswith(prefix)]:
            del self._parts[key]

    async def _prefill(self, state: SessionState, segments: Sequence[Segment]) -> int:
        body = self._body(segments, None, max_tokens=1, temperature=0.0)
        prompt, cached = _usage(await self._post(state.session_id, body))
        self._forget_parts(state)  # a session that only syncs frees what left its context too
        return prompt - cached

    async def _complete(
        self, state: SessionState, segments: Sequence[Segment], completion: Completion
    ) -> AsyncIterator[Piece | Usage]:
        body = self._body(
            segments, completion.request, max_tokens=completion.max_new_tokens, temperature=completion.temperature
        )
        if completion.min_new_tokens:
            body["min_tokens"] = completion.min_new_tokens
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        body["return_token_ids"] = True  # vLLM: the generated ids ride along with the text
        usage: dict[str, Any] = {}
        finish = "length"
        async with contextlib.aclosing(self._stream(state.session_id, body)) as stream:
            async for chunk in stream:
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or ():
                    piece = (choice.get("delta") or {}).get("content") or ""
                    ids = tuple(int(i) for i in choice.get("token_ids") or ())
                    if piece or ids:
                        yield Piece(piece, ids)
                    if choice.get("finish_reason"):
                        finish = "length" if choice["finish_reason"] == "length" else "stop"
        prompt, cached = _usage({"usage": usage})
        yield Usage(prompt, cached, finish, int(usage["completion_tokens"]) if usage.get("completion_tokens") else None)

    async def _logprobs(
        self, state: SessionState, segments: Sequence[Segment], request: AnswerRequest, labels: list[int]
    ) -> dict[int, float]:
        body = self._body(segments, request, max_tokens=1, temperature=0.0)
        body.update(logprobs=True, top_logprobs=len(labels), logprob_token_ids=labels)
        body["return_tokens_as_token_ids"] = True
        data = await self._post(state.session_id, body)
        self._forget_parts(state)
        try:
            content = data["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            return {int(str(e["token"]).rsplit(":", 1)[-1]): float(e["logprob"]) for e in content}
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise EngineError(f"the replica returned no usable log-probabilities: {exc}") from exc

    def _answered(self, state: SessionState, segments: Sequence[Segment], completion: Completion, usage: Usage) -> None:
        self._forget_parts(state)

    # -- requests ------------------------------------------------------------------------------------------
    def _pin(self, session_id: str, avoid: Replica | None = None) -> Replica:
        """Pin a session to the reachable replica with the fewest sessions (any replica when none is up)."""
        old = self._pins.get(session_id)
        candidates = [r for r in self.replicas if r.up and r is not avoid] or [
            r for r in self.replicas if r is not avoid
        ]
        if not candidates:
            candidates = list(self.replicas)
        replica = min(candidates, key=lambda r: (r.sessions, self.replicas.index(r)))
        if old is not None:
            old.sessions -= 1
        replica.sessions += 1
        self._pins[session_id] = replica
        return replica

    def _body(
        self, segments: Sequence[Segment], request: AnswerRequest | None, *, max_tokens: int, temperature: float
    ) -> dict[str, Any]:
        """A chat completion request whose user turn is the context (and the question)."""
        parts: list[dict[str, Any]] = []
        for seg in segments:
            if seg.kind == "system":
                continue
            parts.append({"type": "text", "text": seg.text})
            if seg.item is not None:
                parts += [self._image_part(image) for image in split_frames(seg.item)]
        if request is not None:
            parts.append({"type": "text", "text": self.layout.question_text(request.t, request.question)})
        return {
            "model": self.model,
            "messages": [
                {"role": "system", "content": self.config.system_prompt},
                {"role": "user", "content": parts},
            ],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "skip_special_tokens": True,
            **({"seed": request.seed} if request is not None and request.seed is not None else {}),
        }

    def _forget_parts(self, state: SessionState) -> None:
        """Drop the encoded parts of items that left the session's context."""
        prefix = f"vigil-{state.session_id}-{state.nonce}-"
        live = {image.uuid for seg in state.segments if seg.item is not None for image in split_frames(seg.item)}
        for key in [k for k in self._parts if k.startswith(prefix) and k not in live]:
            del self._parts[key]

    def _image_part(self, image: VisualItem) -> dict[str, Any]:
        part = self._parts.get(image.uuid)
        if part is not None:
            return part
        if image.embeds is not None:
            m = self.adapter.geometry.merge_size
            gh, gw = image.grid
            payload = {"image_embeds": _tensor_b64(image.embeds.float()), "image_grid_thw": [1, gh * m, gw * m]}
            if image.offsets is not None:  # a kept-token item (serving.engines.vllm_kept's fields)
                payload["image_positions"] = _tensor_b64(image.offsets.long())
                payload["image_num_tokens"] = [int(image.embeds.shape[0])]
            part = {"type": "image_embeds", "image_embeds": payload, "uuid": image.uuid}
        else:
            part = {"type": "image_url", "image_url": {"url": _png_data_url(image.frames)}, "uuid": image.uuid}
        self._parts[image.uuid] = part
        return part

    async def _post(self, session_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed request with retries; returns the response JSON."""
        chunks = [chunk async for chunk in self._stream(session_id, {**body, "stream": False})]
        return chunks[0] if chunks else {}

    async def _stream(self, session_id: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The response chunks of a request; retried on another attempt only while nothing was received."""
        attempts = self.config.remote.retries + 1
        errors: list[str] = []
        for attempt in range(attempts):
            replica = self._pins[session_id]
            received = False
            try:
                async with contextlib.aclosing(self._once(replica, body)) as stream:
                    async for chunk in stream:
                        received = received or _has_output(chunk)
                        yield chunk
                return
            except _Retryable as exc:
                if received:  # never resend what already produced output
                    raise EngineError(f"replica {replica.url} failed mid-answer: {exc}") from None
                errors.append(f"{replica.url}: {exc}")
                replica.last_error = str(exc)
                if exc.down:
                    replica.down_until = time.monotonic() + DOWN_FOR_S
                    if len(self.replicas) > 1:
                        moved = self._pin(session_id, avoid=replica)
                        log.warning("session %s moved from %s to %s: %s", session_id, replica.url, moved.url, exc)
                if attempt + 1 < attempts:
                    await asyncio.sleep(BACKOFF_S * (attempt + 1))
        raise ReplicaUnavailableError(f"request failed after {attempts} attempt(s): " + "; ".join(errors))

    async def _once(self, replica: Replica, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        url = f"{replica.url}/chat/completions"
        try:
            async with self._client.stream("POST", url, json=body) as response:
                if response.status_code >= 400:
                    detail = (await response.aread()).decode("utf-8", "replace")[:500]
                    message = f"HTTP {response.status_code}: {detail}"
                    if response.status_code >= 500 or response.status_code in (408, 429):
                        raise _Retryable(message, down=False)
                    raise EngineError(f"replica {replica.url} rejected the request: {message}")
                if not body.get("stream"):
                    yield json.loads(await response.aread())
                    return
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    chunk = json.loads(data)
                    if "error" in chunk:
                        raise _Retryable(f"stream error: {chunk['error']}", down=False)
                    yield chunk
                raise _Retryable("the stream ended without [DONE]", down=False)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise _Retryable(f"cannot connect ({type(exc).__name__}: {exc})", down=True) from None
        except httpx.TimeoutException as exc:
            raise _Retryable(
                f"timed out after {self.config.remote.timeout_s:g} s ({type(exc).__name__})", down=False
            ) from None
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise _Retryable(f"connection lost ({type(exc).__name__}: {exc})", down=False) from None
        except json.JSONDecodeError as exc:
            raise EngineError(f"replica {replica.url} sent a malformed response: {exc}") from None


def _usage(data: dict[str, Any]) -> tuple[int, int]:
    """(prompt tokens, cached prompt tokens) of a response's usage (0, 0 when the replica sent none)."""
    usage = data.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    return int(usage.get("prompt_tokens") or 0), int(details.get("cached_tokens") or 0)


def _has_output(chunk: dict[str, Any]) -> bool:
    """Whether a response chunk carries answer text or tokens (after which a request is never resent)."""
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or choice.get("message") or {}
        if delta.get("content") or choice.get("token_ids"):
            return True
    return False
