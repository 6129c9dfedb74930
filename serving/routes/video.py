"""Videos played into a session as live: an upload, or a server-side path or URL on the allow-list."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from serving.deps import Owner, Service
from serving.errors import ServiceError
from serving.routes.common import ERRORS, media_type, read_form
from serving.schemas import MAX_SPEED, MIN_SPEED, ErrorResponse, VideoRequest, VideoView
from serving.uploads import UploadError, allowed_source, save_upload

router = APIRouter(prefix="/v1/sessions/{session_id}", tags=["frames"])

VIDEO_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {
            "application/json": {"schema": VideoRequest.model_json_schema()},
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
            },
            "video/mp4": {"schema": {"type": "string", "format": "binary"}},
        },
        "required": True,
    }
}


@router.post(
    "/video",
    status_code=202,
    response_model=VideoView,
    responses={**ERRORS, 403: {"model": ErrorResponse}, 409: {"model": ErrorResponse}},
    openapi_extra=VIDEO_BODY,
)
async def play_video(
    session_id: str,
    request: Request,
    who: Owner,
    service: Service,
    speed: Annotated[str, Query(pattern=r"^(realtime|max|\d+(\.\d+)?)$")] = "realtime",
) -> VideoView:
    """Play a video into the session as live: an upload (multipart ``file`` or a raw video body) or a
    server-side path/URL on the allow-list (JSON ``{"source": ...}``)."""
    await service.get(who, session_id)
    pace: str | float = speed if speed in ("realtime", "max") else float(speed)
    if isinstance(pace, float) and not MIN_SPEED <= pace <= MAX_SPEED:
        raise ServiceError(
            422, "invalid_request", f"speed must be realtime, max or a factor in [{MIN_SPEED:g}, {MAX_SPEED:g}]"
        )
    content_type = media_type(request)
    max_bytes = service.limits.max_upload_bytes
    try:
        if content_type == "application/json":
            try:
                body = VideoRequest.model_validate_json(await request.body())
            except ValidationError as exc:
                raise ServiceError(422, "invalid_request", _first_problem(exc)) from None
            source = allowed_source(body.source, service.config.server.video_allow)
            return await service.play(who, session_id, source, speed=body.speed)
        if content_type == "multipart/form-data":
            path, name = await _save_multipart_video(request, max_bytes)
        elif content_type.startswith("video/") or content_type == "application/octet-stream":
            path, name = await save_upload(request.stream(), max_bytes), "upload"
        else:
            raise ServiceError(
                415, "unsupported_media", "send a video (multipart file or video/* body) or JSON with a source"
            )
    except UploadError as exc:
        raise ServiceError(exc.status, exc.code, str(exc)) from None
    return await service.play(who, session_id, path, speed=pace, cleanup=path, label=name)


def _first_problem(exc: ValidationError) -> str:
    """The first validation problem as ``field: message``."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "body"
    return f"{where}: {err.get('msg')}"


async def _save_multipart_video(request: Request, max_bytes: int) -> tuple[str, str]:
    """Save the multipart field ``file`` to a temporary file: its path and the uploaded file's name."""
    async with read_form(request, max_files=1, max_fields=4) as form:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ServiceError(422, "invalid_multipart", "the video goes in a form field named 'file'")
        return await save_upload(_chunks(upload), max_bytes), upload.filename or "upload"


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(1 << 20):
        yield chunk


@router.get("/video", response_model=VideoView, responses=ERRORS)
async def video_status(session_id: str, who: Owner, service: Service) -> VideoView:
    """The video played into the session: its state and how many frames it sent."""
    return await service.video(who, session_id)


@router.delete("/video", response_model=VideoView, responses=ERRORS)
async def stop_video(session_id: str, who: Owner, service: Service) -> VideoView:
    """Stop the video that plays into the session (what it sent stays in memory)."""
    return await service.stop_video(who, session_id)
