"""One pass over a frame source, played in stretches that end at given stream times.

A benchmark asks a question with exactly the frames up to its time: ``LiveSession.play(cursor.upto(t))`` plays
the frames at or before ``t`` and stops; the first later frame waits for the next stretch, so nothing is read
twice and nothing is skipped.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Self

from assistant.sources import Frame, FrameSource, SourceEnd


class SourceCursor:
    """Reads ``source`` once, stretch by stretch; closing the cursor closes the source."""

    def __init__(self, source: FrameSource) -> None:
        self.source = source
        self._frames: Iterator[Frame] | None = None
        self._held: Frame | None = None

    @property
    def next_t(self) -> float | None:
        """Stream time of the frame the last stretch stopped before (None: none seen yet, or the source ended)."""
        return None if self._held is None else self._held.t

    def upto(self, t: float, *, inclusive: bool = True) -> Stretch:
        """The frames from here up to stream time ``t`` (before ``t`` when not ``inclusive``)."""
        return Stretch(self, t, inclusive)

    def rest(self) -> Stretch:
        """The frames from here to the end of the source."""
        return Stretch(self, math.inf, True)

    def next_frame(self) -> Frame | None:
        """The next frame of the pass (the held one first); None at the end of the source."""
        if self._held is not None:
            frame, self._held = self._held, None
            return frame
        if self._frames is None:
            self._frames = iter(self.source)
        return next(self._frames, None)

    def hold(self, frame: Frame) -> None:
        """Keep ``frame`` for the next stretch."""
        self._held = frame

    def close(self) -> None:
        """Close the source and end the pass."""
        self.source.close()
        if self._frames is not None:
            with contextlib.suppress(ValueError):  # still running in a reader thread: it stops at its next frame
                self._frames.close()  # type: ignore[attr-defined]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Stretch:
    """A FrameSource over part of a cursor's pass; closing a stretch leaves the cursor open."""

    def __init__(self, cursor: SourceCursor, limit: float, inclusive: bool) -> None:
        self._cursor = cursor
        self._limit = limit
        self._inclusive = inclusive

    @property
    def end(self) -> SourceEnd | None:
        """How the underlying source ended (None while it has frames)."""
        return self._cursor.source.end

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self._cursor.next_frame()) is not None:
            if frame.t > self._limit or (not self._inclusive and frame.t >= self._limit):
                self._cursor.hold(frame)
                return
            yield frame

    def close(self) -> None:
        """Nothing to release: the cursor owns the source."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
