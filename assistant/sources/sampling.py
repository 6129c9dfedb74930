"""The core every source runs: causal fps sampling, real-time pacing, and the one sampled, paced loop."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from typing import Any, Self

import numpy as np

from assistant.sources.frame import EndReason, Frame, Pace, SourceEnd

log = logging.getLogger(__name__)

TIME_TOLERANCE = 1e-6
"""Seconds: due times, trim bounds and timestamps closer than this count as equal."""


class FpsSampler:
    """Causal sampling by timestamps: keeps the first frame at or after each due time first_t + k / fps."""

    def __init__(self, fps: float | None) -> None:
        if fps is not None and (isinstance(fps, bool) or not isinstance(fps, int | float) or not 0 < fps < math.inf):
            raise ValueError(f"fps must be a positive number, or None to keep every frame; got {fps!r}")
        self.fps = None if fps is None else float(fps)
        self._first: float | None = None
        self._k = 0  # the next due time is first + k / fps

    def accept(self, t: float) -> bool:
        """Whether the frame at stream time ``t`` is kept; after a gap the next due time jumps past ``t``."""
        if self.fps is None:
            return True
        if self._first is None:
            self._first, self._k = t, 1
            return True
        if t < self._first + self._k / self.fps - TIME_TOLERANCE:
            return False
        self._k = max(self._k + 1, math.floor((t - self._first + TIME_TOLERANCE) * self.fps) + 1)
        return True


class Pacer:
    """Real-time pacing: ``wait(t)`` returns at wall_start + (t - t_first) / speed; ``"max"`` never waits."""

    def __init__(self, speed: Pace, interrupt: threading.Event | None = None) -> None:
        """``interrupt``, when set, cuts any wait short (used by ``close()``)."""
        if speed == "realtime":
            speed = 1.0
        if speed != "max" and (isinstance(speed, bool) or not isinstance(speed, int | float) or not speed > 0):
            raise ValueError(f"pace must be 'realtime', 'max' or a positive speed factor, got {speed!r}")
        self.speed: float | None = None if speed == "max" else float(speed)
        self._interrupt = interrupt if interrupt is not None else threading.Event()
        self._start: tuple[float, float] | None = None  # (wall time, stream time) of the first wait

    def wait(self, t: float) -> None:
        """Sleep until stream time ``t`` is due; the first call fixes the start."""
        if self.speed is None:
            return
        now = time.monotonic()
        if self._start is None:
            self._start = (now, t)
            return
        due = self._start[0] + (t - self._start[1]) / self.speed
        if due > now:
            self._interrupt.wait(due - now)


class EndOfSource(Exception):
    """Raised inside a source's pipeline to end iteration with a reason other than a plain end."""

    def __init__(self, reason: EndReason, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


Timeline = Iterator[tuple[int, float, Any]]
"""(source_index, t, handle) per frame of a source, in order; a handle becomes an image only if kept."""


class SampledSource:
    """The one loop every source runs: timeline -> trim window -> FpsSampler -> images -> Pacer -> Frame."""

    def __init__(self, fps: float | None, pace: Pace, start: float = 0.0, stop: float | None = None) -> None:
        FpsSampler(fps)  # validate now rather than at the first iteration
        Pacer(pace)
        self.fps, self.pace = fps, pace
        self._start, self._stop = start, stop
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._iterating = False
        self.end: SourceEnd | None = None
        self._decoded = self._yielded = 0

    # What a source provides.
    def _timeline(self) -> Timeline:
        raise NotImplementedError

    def _images(self, selected: Timeline) -> Iterator[tuple[int, float, np.ndarray]]:
        """Turn kept handles into [H, W, 3] images (a source may batch here)."""
        return selected

    def _halted(self) -> bool:
        return self._closed.is_set()

    def _release(self) -> None:
        """Free what the source holds between passes (called once no pass is running)."""

    def _label(self) -> str:
        return type(self).__name__

    # The shared loop.
    def _select(self, timeline: Timeline, sampler: FpsSampler) -> Timeline:
        for source_index, t, handle in timeline:
            self._decoded += 1
            if t < self._start - TIME_TOLERANCE:
                continue
            if self._stop is not None and t >= self._stop - TIME_TOLERANCE:
                raise EndOfSource("eof", f"{self._label()}: reached the end of the window at {self._stop:g} s")
            if sampler.accept(t):
                yield source_index, t, handle

    def __iter__(self) -> Iterator[Frame]:
        with self._lock:
            if self._iterating:
                raise RuntimeError(f"{self._label()} is already being iterated; use one consumer per source")
            self._iterating = True
        self.end, self._decoded, self._yielded = None, 0, 0
        reason: EndReason = "closed"
        message = f"{self._label()}: iteration stopped before the end of the source"
        sampler, pacer = FpsSampler(self.fps), Pacer(self.pace, interrupt=self._closed)
        timeline = self._timeline()
        selected = self._select(timeline, sampler)
        images = self._images(selected)
        try:
            if self._halted():
                raise EndOfSource("closed", f"{self._label()}: the source is closed")
            for source_index, t, image in images:
                pacer.wait(t)
                if self._halted():
                    raise EndOfSource("closed", f"{self._label()}: closed while iterating")
                yield Frame(self._yielded, t, image, source_index)
                self._yielded += 1
            reason, message = "eof", f"{self._label()}: end of video after {self._decoded} frames"
        except EndOfSource as stop:
            reason, message = stop.reason, stop.message
        finally:
            for generator in (images, selected, timeline):
                generator.close()  # type: ignore[attr-defined]
            self.end = SourceEnd(reason, message, self._decoded, self._yielded)
            if reason in ("truncated", "error"):
                log.warning("%s", message)
            with self._lock:
                self._iterating = False
                self._release()

    def close(self) -> None:
        """Stop iteration at the next frame and free resources; safe to call twice and from another thread."""
        with self._lock:
            self._closed.set()
            if not self._iterating:  # otherwise the iterating thread releases when it stops
                self._release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
