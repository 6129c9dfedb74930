"""Reading video with PyAV: open a container, a monotonic stream clock from pts, the decode timeline, the probe."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

from assistant.sources.frame import EndReason, SourceOpenError
from assistant.sources.sampling import EndOfSource, Timeline

if TYPE_CHECKING:
    import av.container
    import av.video.frame

log = logging.getLogger(__name__)

MAX_BAD_PACKETS_IN_A_ROW = 100
"""Consecutive undecodable packets (or frames) before a source gives up."""
_PROBE_PACKETS = 500  # packets read at construction to find a first decodable frame


def open_container(target: str, options: dict[str, str] | None = None, timeout: tuple[float, float] | None = None):
    """Open ``target`` with PyAV and check that it has a video stream."""
    import av

    try:
        container = av.open(target, options=options or {}, timeout=timeout)
    except Exception as exc:  # FFmpeg and PyAV raise many types for unreadable input
        raise SourceOpenError(
            f"cannot open {target!r} as video ({type(exc).__name__}: {exc}); check that it is a video file "
            "or a reachable stream URL"
        ) from None
    if not container.streams.video:
        container.close()
        raise SourceOpenError(f"{target!r} has no video stream; give a file or URL that carries video")
    return container


class _StreamClock:
    """Stream time from pts relative to the first frame (else ``fallback(index)``); never runs backwards."""

    def __init__(self, time_base: Fraction | None, fallback: Callable[[int], float], label: str) -> None:
        self._time_base, self._fallback, self._label = time_base, fallback, label
        self._first_pts: int | None = None
        self._shift = 0.0
        self._last = -math.inf

    def __call__(self, pts: int | None, index: int) -> float:
        if pts is None or self._time_base is None:
            t = self._fallback(index)
        else:
            if self._first_pts is None:
                self._first_pts = pts
            t = float((pts - self._first_pts) * self._time_base)
        t += self._shift
        if t < self._last:  # a timestamp reset or a broken file: continue from the previous time
            log.warning(
                "%s: timestamps went back by %.3f s; continuing from %.3f s",
                self._label,
                self._last - t,
                self._last,
            )
            self._shift += self._last - t
            t = self._last
        self._last = t
        return t


def pyav_timeline(
    container: av.container.InputContainer,
    label: str,
    closed: threading.Event,
    fallback: Callable[[int], float],
    read_error: EndReason,
    decode_errors_end: bool,
) -> Timeline:
    """Decode the first video stream packet by packet; undecodable packets are skipped and counted.

    A read (demux) error ends with ``read_error``; skipped packets end as "truncated" if ``decode_errors_end``.
    """
    import av

    stream = container.streams.video[0]
    clock = _StreamClock(stream.time_base, fallback, label)
    index = bad = in_a_row = 0
    try:
        for packet in container.demux(stream):
            if closed.is_set():
                raise EndOfSource("closed", f"{label}: closed while reading")
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:
                bad, in_a_row = bad + 1, in_a_row + 1
                log.debug("%s: skipping an undecodable packet: %s", label, exc)
                if in_a_row >= MAX_BAD_PACKETS_IN_A_ROW:
                    raise EndOfSource(
                        read_error, f"{label}: stopped after {in_a_row} undecodable packets in a row ({exc})"
                    ) from None
                continue
            in_a_row = 0
            for frame in frames:
                yield index, clock(frame.pts, index), frame
                index += 1
    except av.FFmpegError as exc:
        try:
            frames = stream.codec_context.decode(None)  # what the decoder still holds
        except av.FFmpegError:
            frames = []
        for frame in frames:
            yield index, clock(frame.pts, index), frame
            index += 1
        raise EndOfSource(
            read_error, f"{label}: reading stopped after {index} frames ({type(exc).__name__}: {exc})"
        ) from None
    if bad and decode_errors_end:
        raise EndOfSource(
            "truncated",
            f"{label}: {bad} packets could not be decoded (a damaged or truncated file); {index} frames were",
        )
    if bad:
        log.warning("%s: %d packets could not be decoded", label, bad)


def _rgb(frame: av.video.frame.VideoFrame) -> np.ndarray:
    return np.ascontiguousarray(frame.to_ndarray(format="rgb24"))  # [H, W, 3]


def pyav_images(selected: Timeline) -> Iterator[tuple[int, float, np.ndarray]]:
    for source_index, t, frame in selected:
        yield source_index, t, _rgb(frame)


@dataclass(frozen=True, slots=True)
class VideoInfo:
    width: int
    height: int
    native_fps: float | None
    duration: float | None
    """Declared length of the stream (None when unknown)."""
    video_duration: float | None
    """Declared length of the video alone (None when it may include other streams)."""
    first_offset: float
    """Seconds from the declared stream start to the first frame."""
    time_base: Fraction | None


def probe_video(path: str) -> VideoInfo:
    """Read the metadata and decode one frame to prove the file is usable video."""
    import av

    container = open_container(path)
    try:
        stream = container.streams.video[0]
        tb = stream.time_base
        first = None
        try:
            for n, packet in enumerate(container.demux(stream)):
                frames = _decode_quietly(packet)
                if frames:
                    first = frames[0]
                    break
                if n >= _PROBE_PACKETS:
                    break
        except av.FFmpegError:
            pass
        if first is None:
            raise SourceOpenError(f"{path!r}: no video frame could be decoded; the file is damaged or not video")
        fps = float(stream.average_rate) if stream.average_rate else None
        stream_duration = float(stream.duration * tb) if stream.duration is not None and tb is not None else None
        container_duration = container.duration / 1_000_000 if container.duration else None
        video_duration = stream_duration
        if video_duration is None and len(container.streams) == 1:
            video_duration = container_duration
        start = float(stream.start_time * tb) if stream.start_time is not None and tb is not None else None
        offset = max(0.0, float(first.time) - start) if first.time is not None and start is not None else 0.0
        return VideoInfo(
            width=first.width,
            height=first.height,
            native_fps=fps,
            duration=stream_duration if stream_duration is not None else container_duration,
            video_duration=video_duration,
            first_offset=offset,
            time_base=tb,
        )
    finally:
        container.close()


def _decode_quietly(packet: Any) -> list:
    import av

    try:
        return packet.decode()
    except av.FFmpegError:
        return []
