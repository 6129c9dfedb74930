"""Network streams PyAV can open (RTSP, RTMP, HTTP(S), UDP, SRT, ...), timed by pts or by arrival."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import numpy as np

from assistant.sources.frame import Pace
from assistant.sources.pyav import open_container, pyav_images, pyav_timeline
from assistant.sources.sampling import EndOfSource, SampledSource, Timeline


class StreamSource(SampledSource):
    """A network stream PyAV can open (RTSP over TCP by default, RTMP, HTTP(S), UDP, SRT, ...).

    Connects at construction. Times come from pts relative to the first frame (arrival time when pts is
    missing). A stream that stops sending ends within ``read_timeout`` with reason "error".
    """

    def __init__(
        self,
        url: str,
        fps: float | None = None,
        open_timeout: float = 10.0,
        read_timeout: float = 10.0,
        options: dict[str, str] | None = None,
        pace: Pace = "max",
    ) -> None:
        for name, value in (("open_timeout", open_timeout), ("read_timeout", read_timeout)):
            if not (isinstance(value, int | float) and 0 < value < math.inf):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        super().__init__(fps, pace)
        self.url = url
        self.options = {"rtsp_transport": "tcp"} if url.lower().startswith("rtsp") else {}
        self.options.update(options or {})
        self._container = open_container(url, self.options, (float(open_timeout), float(read_timeout)))
        self._container.streams.video[0].thread_type = "SLICE"  # frame threads delay frames, hide errors

    def _label(self) -> str:
        return self.url

    def _timeline(self) -> Timeline:
        if self._container is None:
            raise EndOfSource("eof", f"{self.url}: the stream has already been read; open a new source")
        first_arrival: list[float] = []

        def arrival_time(_: int) -> float:
            now = time.monotonic()
            if not first_arrival:
                first_arrival.append(now)
            return now - first_arrival[0]

        yield from pyav_timeline(
            self._container, self.url, self._closed, arrival_time, read_error="error", decode_errors_end=False
        )

    def _images(self, selected: Timeline) -> Iterator[tuple[int, float, np.ndarray]]:
        return pyav_images(selected)

    def _release(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
