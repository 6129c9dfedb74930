"""A session's events as Server-Sent Events (resumable by id), and its memory statistics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from serving.deps import Owner, Service
from serving.routes.common import ERRORS, MAX_SEQ, parse_seq
from serving.schemas import MemoryView
from serving.sse import KEEPALIVE, sse, sse_response

router = APIRouter(prefix="/v1/sessions/{session_id}")

_END = object()


@router.get(
    "/events",
    tags=["events"],
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}}}},
    response_class=Response,
)
async def session_events(
    session_id: str,
    request: Request,
    who: Owner,
    service: Service,
    after: Annotated[int | None, Query(ge=0, le=MAX_SEQ, description="Resume after this event id.")] = None,
) -> Response:
    """Every session event as SSE with ``id`` = sequence number; ``Last-Event-ID`` resumes without a gap."""
    last = parse_seq(request.headers.get("last-event-id"), "Last-Event-ID")
    if last is not None:
        after = last
    stream = service.events(who, session_id, after or 0)
    first = await _first(stream)  # errors (404, 307) before the response starts
    return sse_response(_messages(first, stream))


async def _first(stream: AsyncIterator[Any]) -> Any:
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return _END


async def _messages(first: Any, stream: AsyncIterator[dict[str, Any] | None]) -> AsyncIterator[bytes]:
    """The SSE messages of ``first`` and the rest of ``stream``."""
    if first is _END:
        return
    yield _event_message(first)
    async for event in stream:
        yield _event_message(event)


def _event_message(event: dict[str, Any] | None) -> bytes:
    if event is None:
        return KEEPALIVE
    return sse(event, event=event["type"], id=event.get("seq"))


@router.get("/memory", tags=["sessions"], response_model=MemoryView, responses=ERRORS)
async def memory(session_id: str, who: Owner, service: Service) -> MemoryView:
    """Memory, drop and engine statistics of a session."""
    return await service.memory(who, session_id)
