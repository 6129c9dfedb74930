"""Frames pushed into a session: one image per request, or several as ``multipart/form-data``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from serving.deps import Owner, Service
from serving.errors import ServiceError
from serving.routes.common import ERRORS, media_type, parse_time, read_form
from serving.schemas import FramesResult

router = APIRouter(prefix="/v1/sessions/{session_id}", tags=["frames"])

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp")

FRAME_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {
            **{t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "frame": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "t": {"type": "array", "items": {"type": "number"}},
                    },
                }
            },
        },
        "required": True,
    }
}


@router.post("/frames", response_model=FramesResult, responses=ERRORS, openapi_extra=FRAME_BODY)
async def push_frames(
    session_id: str,
    request: Request,
    who: Owner,
    service: Service,
    t: Annotated[float | None, Query(description="Stream time of a single image (default: now).")] = None,
) -> FramesResult:
    """One image (``image/jpeg``, ``image/png``, ``image/webp``) or several as ``multipart/form-data``."""
    await service.get(who, session_id)  # 404/307 before reading a body
    content_type = media_type(request)
    if content_type in IMAGE_TYPES:
        header_t = request.headers.get("x-frame-time")
        if t is None and header_t is not None:
            t = parse_time(header_t)
        frames = [(await request.body(), t)]
    elif content_type == "multipart/form-data":
        frames = await multipart_frames(request, service.limits.max_frames_per_request)
    else:
        raise ServiceError(
            415,
            "unsupported_media",
            f"send frames as {', '.join(IMAGE_TYPES)} or multipart/form-data, not {content_type or 'nothing'}",
        )
    return await service.push_frames(who, session_id, frames)


async def multipart_frames(request: Request, max_frames: int) -> list[tuple[bytes, float | None]]:
    """The images of a multipart body (fields ``frame``) with their times (fields ``t``, all or none)."""
    images: list[bytes] = []
    times: list[float] = []
    async with read_form(request, max_files=max_frames, max_fields=max_frames) as form:
        for key, value in form.multi_items():
            if isinstance(value, str):
                if key != "t":
                    raise ServiceError(422, "invalid_multipart", f"unexpected form field {key!r}; use frame and t")
                times.append(parse_time(value))
            else:
                images.append(await value.read())
    if times and len(times) != len(images):
        raise ServiceError(422, "invalid_multipart", f"{len(times)} times for {len(images)} frames")
    return [(img, times[i] if times else None) for i, img in enumerate(images)]
