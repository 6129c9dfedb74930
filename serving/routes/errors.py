"""How the API answers errors: always ``{"error": {"code", "message"}}`` with a stable code."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.errors import ServiceError

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media",
    422: "invalid_request",
    429: "rate_limited",
}
"""Error codes of the framework's own HTTP errors, by status."""

COUNTED = (413, 415, 422, 429)
"""Statuses of refused requests counted in ``vigil_requests_rejected``."""


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The API's error body."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
    """A refused request; a redirect points at the same path on the session's worker."""
    headers = dict(exc.headers)
    if exc.redirect:
        query = f"?{request.url.query}" if request.url.query else ""
        headers["Location"] = exc.redirect.rstrip("/") + request.url.path + query
    if exc.status in COUNTED:
        request.app.state.service.metrics.rejected.labels(exc.code).inc()
    return error_response(exc.status, exc.code, exc.message, headers)


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """The framework's HTTP errors (unknown route, wrong method, body too large) in the API's shape."""
    code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 ``invalid_request`` naming up to ten problems as ``field: message``."""
    problems = []
    for err in exc.errors()[:10]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        problems.append(f"{where}: {err.get('msg')}")
    return error_response(422, "invalid_request", "; ".join(problems))


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    """500 without details for the client; the log has the traceback."""
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal", "internal error; the server log has details")


def add_error_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` in the API's shape."""
    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, internal_error)
