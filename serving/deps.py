"""FastAPI dependencies shared by the API's routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from serving.auth import KeyRing, Unauthorized
from serving.service import ServiceError


def request_owner(request: Request) -> str:
    """The owner id of the caller (401 without a valid key; GET requests may pass ``?api_key=`` for browsers)."""
    keys: KeyRing = request.app.state.keys
    query_key = request.query_params.get("api_key") if request.method == "GET" else None
    try:
        return keys.owner(request.headers.get("authorization"), query_key)
    except Unauthorized as exc:
        raise ServiceError(401, "unauthorized", str(exc), headers={"WWW-Authenticate": "Bearer"}) from None


Owner = Annotated[str, Depends(request_owner)]
"""A route parameter that authenticates the caller and names the owner of its sessions."""
