"""What several routers share: the documented error responses and reading a request's media type and times."""

from __future__ import annotations

from typing import Any

from starlette.requests import HTTPConnection

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
    if not (t >= 0 and t < float("inf")):
        raise ServiceError(422, "invalid_time", f"frame time must be a finite number >= 0, got {value!r}")
    return t
