"""The live stream over a WebSocket: binary messages are frames, text messages JSON commands; events come back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from serving.auth import KeyRing, Unauthorized
from serving.errors import ServiceError
from serving.routes.common import parse_seq, parse_time
from serving.service import VigilService

log = logging.getLogger(__name__)
router = APIRouter()


@router.websocket("/v1/sessions/{session_id}/stream")
async def stream(ws: WebSocket, session_id: str) -> None:
    """Binary messages are frames (encoded images); text messages are JSON commands; events come back."""
    service: VigilService = ws.app.state.service
    keys: KeyRing = ws.app.state.keys
    try:
        who = keys.owner(ws.headers.get("authorization"), ws.query_params.get("api_key"))
        h = await service.get(who, session_id)
        after = parse_seq(ws.query_params.get("after"), "after")
    except (Unauthorized, ServiceError) as exc:
        await ws.accept()
        code = getattr(exc, "code", "unauthorized")
        await ws.send_json({"type": "error", "code": code, "message": str(exc)})
        await ws.close(code=1008)
        return
    await ws.accept()
    cursor = after if after is not None else h.live.events.last_seq

    async def send_events() -> None:
        try:
            async for event in service.events(who, session_id, cursor):
                if event is not None:
                    await ws.send_json(event)
        except ServiceError as exc:  # the stream cannot go on (directory gone): say so, then close
            await ws.send_json({"type": "error", "code": exc.code, "message": exc.message})
        except Exception:
            log.exception("event sender of %s failed", session_id)
            await ws.send_json({"type": "error", "code": "internal", "message": "the event stream failed"})
        await ws.close()

    sender = asyncio.create_task(send_events())
    next_t: float | None = None
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            try:
                if message.get("bytes") is not None:
                    await service.push_frames(who, session_id, [(message["bytes"], next_t)])
                    next_t = None
                elif message.get("text") is not None:
                    next_t = await _command(ws, service, who, session_id, message["text"], next_t)
            except ServiceError as exc:
                await ws.send_json({"type": "error", "code": exc.code, "message": exc.message})
    except WebSocketDisconnect:
        pass
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender


async def _command(
    ws: WebSocket, service: VigilService, who: str, session_id: str, text: str, next_t: float | None
) -> float | None:
    """Run one JSON command (``time`` sets the next frame's time, ``ask`` queues a question); the next time."""
    try:
        command = json.loads(text)
        kind = command["type"]
    except (ValueError, KeyError, TypeError):
        raise ServiceError(422, "invalid_command", 'commands are JSON objects with a "type"') from None
    if kind == "time":
        return parse_time(command.get("t"))
    if kind == "ask":
        question = command.get("question")
        if not isinstance(question, str):
            raise ServiceError(422, "invalid_command", "ask needs a question string")
        queued = await service.ask(who, session_id, question)
        await ws.send_json({"type": "question_queued", "answer_id": queued.answer_id, "question": question})
        return next_t
    raise ServiceError(422, "invalid_command", f"unknown command {kind!r}; use time or ask")
