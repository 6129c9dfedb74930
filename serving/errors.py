"""The one error type of the service: a refused request with its HTTP status and a stable code."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from serving.directory import DirectoryError

T = TypeVar("T")


class ServiceError(Exception):
    """A refused request: HTTP status, a stable error code and a message for people."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        redirect: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.redirect = redirect
        """Base URL of the worker that runs the session (the API appends the request path)."""


def not_found(session_id: str) -> ServiceError:
    """404 for a session that does not exist, or not for this caller."""
    return ServiceError(404, "session_not_found", f"no session {session_id!r}")


def closed(message: str) -> ServiceError:
    """410 for a session that no longer takes frames or questions."""
    return ServiceError(410, "session_closed", message)


async def directory_call(call: Awaitable[T]) -> T:
    """Await a directory call; an unreachable directory is a 503 the client may retry."""
    try:
        return await call
    except DirectoryError as exc:
        raise ServiceError(503, "directory_unavailable", str(exc), headers={"Retry-After": "5"}) from None
