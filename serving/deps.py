"""FastAPI dependencies shared by the API's routes: the caller's identity and the service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from serving.auth import KeyRing, Unauthorized
from serving.errors import ServiceError
from serving.service import VigilService


def request_owner(request: Request) -> str:
    """The owner id of the caller (401 without a valid key; GET requests may pass ``?api_key=`` for browsers)."""
    keys: KeyRing = request.app.state.keys
    query_key = request.query_params.get("api_key") if request.method == "GET" else None
    try:
        return keys.owner(request.headers.get("authorization"), query_key)
    except Unauthorized as exc:
        raise ServiceError(401, "unauthorized", str(exc), headers={"WWW-Authenticate": "Bearer"}) from None


def app_service(conn: HTTPConnection) -> VigilService:
    """The service of the app that serves the request (``app.state.service``)."""
    return conn.app.state.service


Owner = Annotated[str, Depends(request_owner)]
"""A route parameter that authenticates the caller and names the owner of its sessions."""

Service = Annotated[VigilService, Depends(app_service)]
"""A route parameter that is the worker's service."""
