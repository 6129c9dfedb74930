"""Requests for a session that runs on another worker are forwarded to it, so any worker serves every session.

A redirect would do for a browser, but stock clients (httpx, the ``openai`` client) drop ``Authorization`` on a
redirect to another origin and then report a misleading 401. The worker that gets the request therefore relays it
to the session's worker — the body as it streams in, the response (JSON, SSE) as it streams out, a WebSocket
message by message — with the client's own headers; the owner checks the key. A forwarded request carries
``X-Vigil-Forwarded`` and is never forwarded again. When the owner cannot be reached and its heartbeat has expired,
its sessions are ended (``lost``) and the request is answered here, from the mirrored events where it can be.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serving.service import VigilService

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SESSION_PATH = re.compile(r"^/v1/sessions/([^/]+)(/.*)?$")
CHAT_PATH = "/v1/chat/completions"
FORWARDED = b"x-vigil-forwarded"
HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"host",
    b"content-length",
}
WS_HEADERS = {b"authorization", b"origin", b"user-agent", b"cookie"}


class _Unreachable(Exception):
    """The owner worker did not accept the connection."""


class ForwardMiddleware:
    """Relays requests for sessions of other live workers to them (HTTP streaming both ways, and WebSockets)."""

    def __init__(self, app: Any, service: VigilService) -> None:
        self.app = app
        self.service = service
        self._client: Any = None

    async def close(self) -> None:
        """Release the connections to other workers."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def client(self) -> Any:
        import httpx

        if self._client is None:
            timeout = httpx.Timeout(connect=2.0, read=None, write=60.0, pool=10.0)
            self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        return self._client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body: bytes | None = None
        if scope["type"] == "http" and scope["path"] == CHAT_PATH and self.service.directory.shared:
            body = await _read_body(receive, self.service.limits.max_body_bytes)  # the session is named inside
            if body is None:  # over the limit, or the client left: the app answers
                await self.app(scope, receive, send)
                return
            receive = _replay_body(body, receive)
        target = await self._target(scope, _chat_session(body) if body is not None else None)
        if target is None:
            await self.app(scope, receive, send)
            return
        record, url = target
        replay: list[Message] = []
        try:
            if scope["type"] == "http":
                await self._http(url, scope, receive, send, body)
            else:
                await self._websocket(url, scope, receive, send, replay)
            return
        except _Unreachable as exc:
            log.warning("worker %s at %s is unreachable: %s", record.worker, url, exc)
            lost = await self.service.registry.unreachable(record)
        if not lost and scope["type"] == "http":
            await _error(send, 503, "worker_unreachable", f"the worker of session {record.id!r} does not answer")
            return
        # answered here: a lost session's mirrored events, or its 410
        await self.app(scope, _once(replay[0], receive) if replay else receive, send)

    async def _target(self, scope: Scope, session_id: str | None) -> tuple[Any, str] | None:
        if scope["type"] not in ("http", "websocket") or not self.service.directory.shared:
            return None
        if session_id is None:
            match = SESSION_PATH.match(scope["path"])
            session_id = match.group(1) if match is not None else None
        if session_id is None or session_id in self.service.hosted:
            return None
        if any(name == FORWARDED for name, _ in scope.get("headers") or []):
            return None  # forwarded once already: answered here, whatever this worker knows
        return await self.service.registry.forward_target(session_id)

    def _url(self, base: str, scope: Scope, websocket: bool = False) -> str:
        query = scope.get("query_string") or b""
        url = base.rstrip("/") + scope["path"] + (f"?{query.decode('latin-1')}" if query else "")
        return re.sub(r"^http", "ws", url) if websocket else url

    async def _http(self, base: str, scope: Scope, receive: Receive, send: Send, body: bytes | None) -> None:
        import httpx

        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        headers.append((FORWARDED, self.service.worker_id.encode()))
        has_body = scope["method"] not in ("GET", "HEAD", "DELETE", "OPTIONS")
        content = body if body is not None else (_body(receive) if has_body else None)
        request = self.client().build_request(scope["method"], self._url(base, scope), headers=headers, content=content)
        try:
            response = await self.client().send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise _Unreachable(str(exc)) from None
        gone = asyncio.ensure_future(until_disconnected(receive))  # the client may leave while the response streams
        try:
            out = [(k, v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP - {b"content-length"}]
            out.append((b"x-vigil-forwarded-by", self.service.worker_id.encode()))
            await send({"type": "http.response.start", "status": response.status_code, "headers": out})
            pump = asyncio.ensure_future(_pump(response.aiter_raw(), send))
            await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not pump.done():  # the client went away: closing the upstream response tells the owner
                pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError, OSError):
                await pump
        finally:
            gone.cancel()
            await response.aclose()

    async def _websocket(self, base: str, scope: Scope, receive: Receive, send: Send, replay: list[Message]) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

        first = await receive()  # websocket.connect
        replay.append(first)
        headers = [(k.decode(), v.decode("latin-1")) for k, v in scope["headers"] if k.lower() in WS_HEADERS]
        headers.append((FORWARDED.decode(), self.service.worker_id))
        try:
            upstream = await connect(
                self._url(base, scope, websocket=True), additional_headers=headers, open_timeout=5, max_size=None
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise _Unreachable(str(exc)) from None
        replay.clear()
        await send({"type": "websocket.accept"})

        async def to_owner() -> None:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("bytes") is not None:
                    await upstream.send(message["bytes"])
                elif message.get("text") is not None:
                    await upstream.send(message["text"])

        async def to_client() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for data in upstream:
                    key = "bytes" if isinstance(data, bytes) else "text"
                    await send({"type": "websocket.send", key: data})

        async with upstream:
            tasks = {asyncio.ensure_future(to_owner()), asyncio.ensure_future(to_client())}
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, OSError, RuntimeError):
                    await task
        with contextlib.suppress(OSError, RuntimeError):
            await send({"type": "websocket.close", "code": upstream.close_code or 1000})


def _once(first: Message, receive: Receive) -> Receive:
    """``receive`` that gives ``first`` again before the next messages (a consumed ``websocket.connect``)."""
    pending = [first]

    async def again() -> Message:
        return pending.pop() if pending else await receive()

    return again


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None past ``limit`` bytes (or when the client leaves)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay_body(body: bytes, receive: Receive) -> Receive:
    """``receive`` that gives the body read already, then what the connection says next."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


def _chat_session(body: bytes) -> str | None:
    """The session a chat completion names (``model: vigil:<id>`` or ``session_id``), if any."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    sid = data.get("session_id")
    model = data.get("model")
    if not isinstance(sid, str) and isinstance(model, str) and model.startswith("vigil:"):
        sid = model.removeprefix("vigil:")
    return sid if isinstance(sid, str) and sid else None


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise OSError("the client went away while sending its body")
        yield message.get("body", b"")
        if not message.get("more_body"):
            return


async def until_disconnected(receive: Receive) -> None:
    """Return once the client has closed the connection (read after the request body)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _pump(chunks: AsyncIterator[bytes], send: Send) -> None:
    async for chunk in chunks:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _error(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*headers, (b"retry-after", b"2")]})
    await send({"type": "http.response.body", "body": body})
