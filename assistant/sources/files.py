"""Video files: decoded sequentially with PyAV or by index with decord, trimmed, sampled and paced."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from typing import Literal

import numpy as np

from assistant.sources.decord_reader import DecordReader
from assistant.sources.frame import Pace, SourceNotFoundError, SourceOpenError
from assistant.sources.pyav import open_container, probe_video, pyav_images, pyav_timeline
from assistant.sources.sampling import EndOfSource, SampledSource, Timeline

log = logging.getLogger(__name__)


class VideoFileSource(SampledSource):
    """A video file, decoded sequentially with PyAV (``auto``/``pyav``) or by index with decord (``decord``).

    ``start``/``end`` trim the file to [start, end) in stream time; frame times stay those of the whole file.
    A damaged or truncated file yields every frame it can, then ends with reason "truncated".
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float | None = None,
        pace: Pace = "max",
        backend: Literal["auto", "pyav", "decord"] = "auto",
        start: float = 0.0,
        end: float | None = None,
    ) -> None:
        if backend not in ("auto", "pyav", "decord"):
            raise ValueError(f"backend must be 'auto', 'pyav' or 'decord', got {backend!r}")
        if not (isinstance(start, int | float) and 0 <= start < math.inf):
            raise ValueError(f"start must be a finite number of seconds >= 0, got {start!r}")
        if end is not None and not (isinstance(end, int | float) and start < end):
            raise ValueError(f"end must be None or a time after start={start} s, got {end!r}")
        super().__init__(fps, pace, float(start), None if end is None else float(end))
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise SourceNotFoundError(f"video file not found: {self.path!r}; check the path")
        if not os.path.isfile(self.path):
            raise SourceOpenError(f"{self.path!r} is not a file; give the path of a video file")
        self._info = probe_video(self.path)
        self.backend: Literal["pyav", "decord"] = "pyav"
        self._decord: DecordReader | None = None
        if backend == "decord":
            try:
                self._decord = DecordReader(self.path)
                self.backend = "decord"
            except SourceOpenError as exc:
                log.warning("%s; decoding with PyAV instead", exc)

    @property
    def width(self) -> int:
        return self._info.width

    @property
    def height(self) -> int:
        return self._info.height

    @property
    def native_fps(self) -> float | None:
        """Average frame rate the file declares (None when unknown)."""
        return self._info.native_fps

    @property
    def duration(self) -> float | None:
        """Length in seconds the file declares (None when unknown)."""
        return self._info.duration

    def _label(self) -> str:
        return self.path

    def _timeline(self) -> Timeline:
        last: float | None = None
        for item in self._decord_timeline() if self.backend == "decord" else self._pyav_timeline():
            last = item[1]
            yield item
        self._check_complete(last)

    def _pyav_timeline(self) -> Timeline:
        container = open_container(self.path)
        container.streams.video[0].thread_type = "SLICE"  # frame threads hide decode errors and lose frames
        period = 1.0 / (self.native_fps or 25.0)
        try:
            yield from pyav_timeline(
                container,
                self.path,
                self._closed,
                lambda i: i * period,
                read_error="truncated",
                decode_errors_end=True,
            )
        finally:
            container.close()

    def _decord_timeline(self) -> Timeline:
        if self._decord is None:  # a later pass
            self._decord = DecordReader(self.path)
        return self._decord.timeline(self._closed, self._info)

    def _images(self, selected: Timeline) -> Iterator[tuple[int, float, np.ndarray]]:
        if self.backend == "decord":
            assert self._decord is not None
            return self._decord.images(selected)
        return pyav_images(selected)

    def _check_complete(self, last: float | None) -> None:
        """End as "truncated" when the frames stop well before the length the file declares."""
        declared = self._info.video_duration
        if last is None or declared is None:
            return
        period = 1.0 / (self.native_fps or 25.0)
        covered = self._info.first_offset + last + period
        if covered < declared - max(3 * period, 0.25):
            raise EndOfSource(
                "truncated",
                f"{self.path}: frames stop at {covered:.2f} s but the file declares {declared:.2f} s; "
                "the file is probably truncated",
            )

    def _release(self) -> None:
        self._decord = None
