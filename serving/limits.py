"""Request limits: body size per route and a per-session frame rate."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class TokenBucket:
    """``rate`` events per second with bursts of ``burst``; ``take`` says how long to wait when refused."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self._tokens = self.burst
        self._at = time.monotonic()

    def take(self, n: int = 1) -> float:
        """Take ``n`` tokens: 0.0 when allowed, else the seconds until they would be (nothing taken)."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if n > self.burst:
            return math.inf
        if self._tokens >= n:
            self._tokens -= n
            return 0.0
        return (n - self._tokens) / self.rate


class BodyLimitMiddleware:
    """413 for bodies over the limit of their route, from Content-Length or while the body streams in."""

    def __init__(self, app: ASGIApp, default: int, routes: list[tuple[str, int]]) -> None:
        self.app = app
        self.default = default
        self.routes = [(re.compile(pattern), limit) for pattern, limit in routes]

    def limit(self, path: str) -> int:
        """The body limit of a request path, in bytes."""
        for pattern, limit in self.routes:
            if pattern.fullmatch(path):
                return limit
        return self.default

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]], send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope["path"])
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _reject(send, limit)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _reject(send, limit)


class _BodyTooLarge(HTTPException):
    """Raised from ``receive``: an HTTPException so the app's handlers answer it as a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body exceeds the limit of {limit} bytes")


async def _reject(send: Any, limit: int) -> None:
    body = json.dumps(
        {"error": {"code": "body_too_large", "message": f"the request body exceeds the limit of {limit} bytes"}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
