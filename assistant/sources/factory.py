"""``open_source``: a file path, a ``file://`` URL or a stream URL to the right frame source."""

from __future__ import annotations

import os
import re

from assistant.sources.files import VideoFileSource
from assistant.sources.frame import FrameSource, Pace
from assistant.sources.streams import StreamSource

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def open_source(spec: str | os.PathLike[str], fps: float | None = None, pace: Pace = "max") -> FrameSource:
    """A URL (``rtsp://``, ``http://``, ...) -> StreamSource; else (and ``file://`` URLs) VideoFileSource."""
    spec = os.fspath(spec)
    if spec.lower().startswith("file://"):
        return VideoFileSource(spec[len("file://") :], fps=fps, pace=pace)
    if _URL.match(spec):
        return StreamSource(spec, fps=fps, pace=pace)
    return VideoFileSource(spec, fps=fps, pace=pace)
