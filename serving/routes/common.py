"""What several routers share: the documented error responses, reading a request's media type, times and form."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection, Request

from assistant.intake import MAX_STREAM_T
from serving.errors import ServiceError
from serving.schemas import ErrorResponse

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (401, 404, 410, 413, 415, 422, 429)
}
"""The error responses of a route on a session."""


def media_type(conn: HTTPConnection) -> str:
    """The request's ``Content-Type`` without parameters, lower case ('' when absent)."""
    return conn.headers.get("content-type", "").split(";")[0].strip().lower()


def parse_time(value: Any) -> float:
    """A frame time sent by a client: a finite number of seconds >= 0 (ServiceError 422 ``invalid_time``)."""
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise ServiceError(422, "invalid_time", f"frame time must be a number of seconds, got {value!r}") from None
    if not 0 <= t <= MAX_STREAM_T:  # also refuses NaN and infinities
        raise ServiceError(
            422, "invalid_time", f"frame time must be a finite number in [0, {MAX_STREAM_T:g}] seconds, got {value!r}"
        )
    return t


MAX_SEQ = 2**53
"""Largest event id a client may resume after (an event id is a sequence number; JSON keeps it exact)."""


def parse_seq(value: str | None, what: str) -> int | None:
    """An event id sent by a client (``Last-Event-ID``, ``?after``): ASCII digits, at most ``MAX_SEQ``;
    ServiceError 422 ``invalid_request`` otherwise; None when absent."""
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 16 and int(text) <= MAX_SEQ):
        raise ServiceError(422, "invalid_request", f"{what} must be an event id (an integer in [0, {MAX_SEQ}])")
    return int(text)


@contextlib.asynccontextmanager
async def read_form(request: Request, *, max_files: int, max_fields: int) -> AsyncIterator[FormData]:
    """The request's multipart form (422 ``invalid_multipart`` when unreadable), closed whatever happens."""
    try:
        form = await request.form(max_files=max_files, max_fields=max_fields)
    except StarletteHTTPException:
        raise
    except Exception as exc:
        raise ServiceError(422, "invalid_multipart", f"unreadable multipart body: {exc}") from None
    try:
        yield form
    finally:
        await form.close()
