"""Reading a video file with decord: frame timestamps from its index and batched decoding of the kept frames."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import numpy as np

from assistant.sources.frame import SourceOpenError
from assistant.sources.pyav import MAX_BAD_PACKETS_IN_A_ROW, VideoInfo
from assistant.sources.sampling import EndOfSource, Timeline

log = logging.getLogger(__name__)

_DECORD_BATCH = 8  # frames per get_batch call


class DecordReader:
    """decord.VideoReader with frame timestamps from its index and batched decoding of the kept frames."""

    def __init__(self, path: str) -> None:
        import decord

        self.path = path
        self._bad = self._bad_in_a_row = 0  # undecodable frames in this pass, and in a row
        try:
            self.reader = decord.VideoReader(path, ctx=decord.cpu(0))
        except (decord.DECORDError, RuntimeError) as exc:
            raise SourceOpenError(f"decord cannot open {path!r}: {str(exc).strip()[-300:]}") from None

    def timeline(self, closed: threading.Event, info: VideoInfo) -> Timeline:
        n = len(self.reader)
        stamps = self.reader.get_frame_timestamp(np.arange(n))[:, 0].astype(np.float64) if n else np.zeros(0)
        usable = n > 0 and np.isfinite(stamps).all() and np.abs(stamps).max() < 1e9 and (np.diff(stamps) >= 0).all()
        tb = info.time_base
        if usable and tb is not None:  # decord keeps float32 times: snap them back to whole pts ticks
            ticks = np.rint((stamps - stamps[0]) / float(tb)).astype(np.int64)  # [n]
            times = [float(int(tick) * tb) for tick in ticks]  # the same arithmetic as the PyAV clock
        elif usable:
            times = (stamps - stamps[0]).tolist()
        else:
            period = 1.0 / (info.native_fps or self.reader.get_avg_fps() or 25.0)
            times = [i * period for i in range(n)]
        for i in range(n):
            if closed.is_set():
                raise EndOfSource("closed", f"{self.path}: closed while reading")
            yield i, times[i], i

    def images(self, selected: Timeline) -> Iterator[tuple[int, float, np.ndarray]]:
        """Decode the kept frames in batches; undecodable frames are skipped and counted ("truncated")."""
        self._bad = self._bad_in_a_row = 0
        pending: list[tuple[int, float, int]] = []
        ending: EndOfSource | None = None
        while ending is None:
            try:
                pending.append(next(selected))
            except StopIteration:
                break
            except EndOfSource as exc:
                ending = exc
            if len(pending) == _DECORD_BATCH:
                yield from self._decode(pending)
                pending = []
        yield from self._decode(pending)
        if self._bad:
            raise EndOfSource(
                "truncated",
                f"{self.path}: {self._bad} frames could not be decoded (a damaged or truncated file)",
            )
        if ending is not None:
            raise ending

    def _decode(self, items: list[tuple[int, float, int]]) -> Iterator[tuple[int, float, np.ndarray]]:
        import decord

        if not items:
            return
        try:
            batch = self.reader.get_batch([i for i, _, _ in items]).asnumpy()  # [B, H, W, 3]
        except (decord.DECORDError, RuntimeError):
            batch = None
        if batch is not None:
            self._bad_in_a_row = 0
            for (i, t, _), image in zip(items, batch, strict=True):
                yield i, t, np.array(image)  # a copy, so one kept frame does not hold the whole batch
            return
        for i, t, _ in items:  # salvage the frames of the failed batch one by one
            try:
                image = self.reader[i].asnumpy()  # [H, W, 3]
            except (decord.DECORDError, RuntimeError) as exc:
                self._bad, self._bad_in_a_row = self._bad + 1, self._bad_in_a_row + 1
                log.debug("%s: skipping undecodable frame %d: %s", self.path, i, exc)
                if self._bad_in_a_row >= MAX_BAD_PACKETS_IN_A_ROW:
                    raise EndOfSource(
                        "truncated", f"{self.path}: decoding stopped at frame {i}: {str(exc).strip()[-200:]}"
                    ) from None
                continue
            self._bad_in_a_row = 0
            yield i, t, np.ascontiguousarray(image)
