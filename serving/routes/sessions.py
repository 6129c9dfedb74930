"""Sessions: create, list, read, delete."""

from __future__ import annotations

from fastapi import APIRouter, Response

from serving.deps import Owner, Service
from serving.routes.common import ERRORS
from serving.schemas import SessionCreate, SessionList, SessionView

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])


@router.post("", status_code=201, response_model=SessionView, responses=ERRORS)
async def create_session(who: Owner, service: Service, spec: SessionCreate | None = None) -> SessionView:
    """Start a live session; per-session options override the server's defaults."""
    return await service.create(who, spec or SessionCreate())


@router.get("", response_model=SessionList)
async def list_sessions(who: Owner, service: Service) -> SessionList:
    """Sessions of this API key, on every worker."""
    return SessionList(data=await service.list(who))


@router.get("/{session_id}", response_model=SessionView, responses=ERRORS)
async def get_session(session_id: str, who: Owner, service: Service) -> SessionView:
    """A session of this API key, on this worker or known from the directory."""
    return await service.describe(who, session_id)


@router.delete("/{session_id}", status_code=204, responses=ERRORS)
async def delete_session(session_id: str, who: Owner, service: Service) -> Response:
    """End a session and forget it."""
    await service.delete(who, session_id)
    return Response(status_code=204)
