"""What clients upload: video containers checked by their magic bytes and saved to a temporary file, paths and URLs
checked against an allow-list."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

VIDEO_SIGNATURES = "MP4/MOV, Matroska/WebM, AVI, MPEG-TS, FLV or Ogg"


class UploadError(ValueError):
    """An upload or a playback request that is refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def sniff_video(head: bytes) -> str | None:
    """The container family the first bytes of a file announce (None: not a video container we read)."""
    if len(head) >= 12 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith(b"FLV"):
        return "flv"
    if head.startswith(b"OggS"):
        return "ogg"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "mpegts"
    return None


def check_video_head(head: bytes) -> str:
    """The container family, or UploadError 415 for anything else."""
    kind = sniff_video(head)
    if kind is None:
        raise UploadError(415, "unsupported_media", f"not a video file: expected {VIDEO_SIGNATURES} data")
    return kind


def allowed_source(spec: str, allow: tuple[str, ...]) -> str:
    """``spec`` (a path or URL) when it falls under one of the allowed prefixes, else UploadError 403.

    Paths are compared after resolving symlinks and ``..``; URLs by scheme, host and path prefix.
    """
    if not allow:
        raise UploadError(403, "source_not_allowed", "this server plays no server-side paths or URLs; upload the file")
    parts = urlsplit(spec)
    if parts.scheme and parts.scheme != "file" and len(parts.scheme) > 1:
        for prefix in allow:
            p = urlsplit(prefix)
            same_origin = p.scheme and (parts.scheme, parts.netloc) == (p.scheme, p.netloc)
            if same_origin and parts.path.startswith(p.path) and ".." not in parts.path.split("/"):
                return spec
        raise UploadError(403, "source_not_allowed", f"URL {spec!r} is not on this server's allow-list")
    path = os.path.realpath(parts.path if parts.scheme == "file" else spec)
    for prefix in allow:
        if urlsplit(prefix).scheme not in ("", "file"):
            continue
        root = os.path.realpath(urlsplit(prefix).path if prefix.startswith("file:") else prefix)
        if path == root or path.startswith(root.rstrip(os.sep) + os.sep):
            if not os.path.isfile(path):
                raise UploadError(404, "source_not_found", f"no video file at {spec!r}")
            return path
    raise UploadError(403, "source_not_allowed", f"path {spec!r} is not under an allowed directory")


async def save_upload(chunks: AsyncIterator[bytes], max_bytes: int) -> str:
    """Write an uploaded video to a temporary file and return its path (the caller deletes it).

    UploadError 413 over ``max_bytes``, 422 when empty, 415 when it is not a video container; nothing is left
    behind when refused.
    """
    fd, path = tempfile.mkstemp(prefix="vigil-upload-", suffix=".video")
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            head = b""
            async for chunk in chunks:
                if len(head) < 512:
                    head += chunk[: 512 - len(head)]
                size += len(chunk)
                if size > max_bytes:
                    raise UploadError(413, "upload_too_large", f"videos are limited to {max_bytes}")
                await asyncio.to_thread(out.write, chunk)
        if size == 0:
            raise UploadError(422, "empty_upload", "the video file is empty")
        check_video_head(head)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return path
