"""What every frame source yields and how it reports: ``Frame``, ``SourceEnd``, the ``FrameSource`` protocol, errors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np

EndReason = Literal["eof", "truncated", "closed", "error"]
Pace = float | Literal["realtime", "max"]


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame as a source yields it (after sampling)."""

    index: int
    """0, 1, 2, ... in the order the source yields."""
    t: float
    """Stream time in seconds since the start of the stream."""
    image: np.ndarray
    """[H, W, 3] uint8 RGB, C-contiguous."""
    source_index: int
    """Index of the frame in the source before sampling."""


class SourceError(Exception):
    """A source cannot be used; the message says what was wrong and what to do."""


class SourceNotFoundError(SourceError):
    """The video file does not exist."""


class SourceOpenError(SourceError):
    """The file or stream exists but cannot be opened as video, has no video stream, or is unreachable."""


class InvalidFrameError(SourceError, ValueError):
    """A frame that cannot be used (unreadable image, wrong shape or type, too many pixels); it fails alone."""


class FrameTimeError(InvalidFrameError):
    """A frame's stream time is unusable (not finite, negative, or before the previous frame)."""


@dataclass(frozen=True, slots=True)
class SourceEnd:
    """Why and where a source stopped."""

    reason: EndReason
    message: str
    frames_decoded: int
    """Frames read from the source before sampling and trimming."""
    frames_yielded: int


@runtime_checkable
class FrameSource(Protocol):
    """An iterable of frames; ``end`` is None until iteration stops."""

    @property
    def end(self) -> SourceEnd | None: ...

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...
