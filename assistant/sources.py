"""Frame sources: video files, network streams and pushed frames, sampled to a target fps and paced.

Every source is an iterable of ``Frame`` (RGB image + stream time) with ``close()`` and ``end``, which says
why iteration stopped. All of them go through one sampled, paced loop (``FpsSampler`` + ``Pacer``).
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import os
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self, runtime_checkable

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import av.container
    import av.video.frame

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 4096 * 4096
TIME_TOLERANCE = 1e-6
"""Seconds: due times, trim bounds and timestamps closer than this count as equal."""
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP")
"""Encoded formats ``decode_image`` accepts."""

EndReason = Literal["eof", "truncated", "closed", "error"]
Pace = float | Literal["realtime", "max"]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_DECORD_BATCH = 8  # frames per get_batch call
_MAX_BAD_PACKETS_IN_A_ROW = 100  # consecutive undecodable packets before a source gives up
_PROBE_PACKETS = 500  # packets read at construction to find a first decodable frame


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
    """Index of the frame in the source before sampling (push: arrival count)."""


class SourceError(Exception):
    """A source cannot be used; the message says what was wrong and what to do."""


class SourceNotFoundError(SourceError):
    """The video file does not exist."""


class SourceOpenError(SourceError):
    """The file or stream exists but cannot be opened as video, has no video stream, or is unreachable."""


class InvalidFrameError(SourceError, ValueError):
    """A pushed frame that cannot be used; the source stays usable."""


class FrameTimeError(InvalidFrameError):
    """A pushed frame's stream time is unusable (not finite, negative, or before the previous frame)."""


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


class _EndOfSource(Exception):
    """Raised inside a source's pipeline to end iteration with a reason other than a plain end."""

    def __init__(self, reason: EndReason, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


Timeline = Iterator[tuple[int, float, Any]]
"""(source_index, t, handle) per frame of a source, in order; a handle becomes an image only if kept."""


class _SampledSource:
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
                raise _EndOfSource("eof", f"{self._label()}: reached the end of the window at {self._stop:g} s")
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
                raise _EndOfSource("closed", f"{self._label()}: the source is closed")
            for source_index, t, image in images:
                pacer.wait(t)
                if self._halted():
                    raise _EndOfSource("closed", f"{self._label()}: closed while iterating")
                yield Frame(self._yielded, t, image, source_index)
                self._yielded += 1
            reason, message = "eof", f"{self._label()}: end of video after {self._decoded} frames"
        except _EndOfSource as stop:
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


# --- PyAV ---


def _open_container(target: str, options: dict[str, str] | None = None, timeout: tuple[float, float] | None = None):
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


def _pyav_timeline(
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
                raise _EndOfSource("closed", f"{label}: closed while reading")
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:
                bad, in_a_row = bad + 1, in_a_row + 1
                log.debug("%s: skipping an undecodable packet: %s", label, exc)
                if in_a_row >= _MAX_BAD_PACKETS_IN_A_ROW:
                    raise _EndOfSource(
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
        raise _EndOfSource(
            read_error, f"{label}: reading stopped after {index} frames ({type(exc).__name__}: {exc})"
        ) from None
    if bad and decode_errors_end:
        raise _EndOfSource(
            "truncated",
            f"{label}: {bad} packets could not be decoded (a damaged or truncated file); {index} frames were",
        )
    if bad:
        log.warning("%s: %d packets could not be decoded", label, bad)


def _rgb(frame: av.video.frame.VideoFrame) -> np.ndarray:
    return np.ascontiguousarray(frame.to_ndarray(format="rgb24"))  # [H, W, 3]


def _pyav_images(selected: Timeline) -> Iterator[tuple[int, float, np.ndarray]]:
    for source_index, t, frame in selected:
        yield source_index, t, _rgb(frame)


@dataclass(frozen=True, slots=True)
class _VideoInfo:
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


def _probe(path: str) -> _VideoInfo:
    """Read the metadata and decode one frame to prove the file is usable video."""
    import av

    container = _open_container(path)
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
        return _VideoInfo(
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


# --- decord ---


class _DecordReader:
    """decord.VideoReader with frame timestamps from its index and batched decoding of the kept frames."""

    def __init__(self, path: str) -> None:
        import decord

        self.path = path
        self._bad = self._bad_in_a_row = 0  # undecodable frames in this pass, and in a row
        try:
            self.reader = decord.VideoReader(path, ctx=decord.cpu(0))
        except (decord.DECORDError, RuntimeError) as exc:
            raise SourceOpenError(f"decord cannot open {path!r}: {str(exc).strip()[-300:]}") from None

    def timeline(self, closed: threading.Event, info: _VideoInfo) -> Timeline:
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
                raise _EndOfSource("closed", f"{self.path}: closed while reading")
            yield i, times[i], i

    def images(self, selected: Timeline) -> Iterator[tuple[int, float, np.ndarray]]:
        """Decode the kept frames in batches; undecodable frames are skipped and counted ("truncated")."""
        self._bad = self._bad_in_a_row = 0
        pending: list[tuple[int, float, int]] = []
        ending: _EndOfSource | None = None
        while ending is None:
            try:
                pending.append(next(selected))
            except StopIteration:
                break
            except _EndOfSource as exc:
                ending = exc
            if len(pending) == _DECORD_BATCH:
                yield from self._decode(pending)
                pending = []
        yield from self._decode(pending)
        if self._bad:
            raise _EndOfSource(
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
                if self._bad_in_a_row >= _MAX_BAD_PACKETS_IN_A_ROW:
                    raise _EndOfSource(
                        "truncated", f"{self.path}: decoding stopped at frame {i}: {str(exc).strip()[-200:]}"
                    ) from None
                continue
            self._bad_in_a_row = 0
            yield i, t, np.ascontiguousarray(image)


# --- files and streams ---


class VideoFileSource(_SampledSource):
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
        self._info = _probe(self.path)
        self.backend: Literal["pyav", "decord"] = "pyav"
        self._decord: _DecordReader | None = None
        if backend == "decord":
            try:
                self._decord = _DecordReader(self.path)
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
        container = _open_container(self.path)
        container.streams.video[0].thread_type = "SLICE"  # frame threads hide decode errors and lose frames
        period = 1.0 / (self.native_fps or 25.0)
        try:
            yield from _pyav_timeline(
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
            self._decord = _DecordReader(self.path)
        return self._decord.timeline(self._closed, self._info)

    def _images(self, selected: Timeline) -> Iterator[tuple[int, float, np.ndarray]]:
        if self.backend == "decord":
            assert self._decord is not None
            return self._decord.images(selected)
        return _pyav_images(selected)

    def _check_complete(self, last: float | None) -> None:
        """End as "truncated" when the frames stop well before the length the file declares."""
        declared = self._info.video_duration
        if last is None or declared is None:
            return
        period = 1.0 / (self.native_fps or 25.0)
        covered = self._info.first_offset + last + period
        if covered < declared - max(3 * period, 0.25):
            raise _EndOfSource(
                "truncated",
                f"{self.path}: frames stop at {covered:.2f} s but the file declares {declared:.2f} s; "
                "the file is probably truncated",
            )

    def _release(self) -> None:
        self._decord = None


class StreamSource(_SampledSource):
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
        self._container = _open_container(url, self.options, (float(open_timeout), float(read_timeout)))
        self._container.streams.video[0].thread_type = "SLICE"  # frame threads delay frames, hide errors

    def _label(self) -> str:
        return self.url

    def _timeline(self) -> Timeline:
        if self._container is None:
            raise _EndOfSource("eof", f"{self.url}: the stream has already been read; open a new source")
        first_arrival: list[float] = []

        def arrival_time(_: int) -> float:
            now = time.monotonic()
            if not first_arrival:
                first_arrival.append(now)
            return now - first_arrival[0]

        yield from _pyav_timeline(
            self._container, self.url, self._closed, arrival_time, read_error="error", decode_errors_end=False
        )

    def _images(self, selected: Timeline) -> Iterator[tuple[int, float, np.ndarray]]:
        return _pyav_images(selected)

    def _release(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


# --- pushed frames ---


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode JPEG/PNG/WebP bytes to [H, W, 3] uint8 RGB; InvalidFrameError for anything unusable.

    The size declared in the header is checked against ``max_pixels`` before any pixel is decoded.
    """
    if not data:
        raise InvalidFrameError("empty image data; send JPEG, PNG or WebP bytes")
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
            _check_pixels(img.width, img.height, max_pixels)
            img.load()
            rgb = np.array(img.convert("RGB"))  # [H, W, 3]
    except InvalidFrameError:
        raise
    except Exception as exc:  # Pillow raises many types for malformed data
        if isinstance(exc, Image.DecompressionBombError):
            raise InvalidFrameError(f"image exceeds the pixel limit: {exc}") from None
        raise InvalidFrameError(
            f"not a decodable {'/'.join(IMAGE_FORMATS)} image ({type(exc).__name__}: {exc})"
        ) from None
    return as_rgb(rgb, max_pixels)


def as_rgb(image: np.ndarray, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Validate an array frame and return it as C-contiguous [H, W, 3] uint8 RGB.

    Accepts [H, W, 3] RGB, [H, W, 4] RGBA (alpha dropped) and [H, W] or [H, W, 1] gray.
    """
    if not isinstance(image, np.ndarray):
        raise InvalidFrameError(f"frames must be numpy arrays, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InvalidFrameError(f"frames must be uint8 arrays, got dtype {image.dtype}; convert with .astype(np.uint8)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidFrameError(f"expected an [H, W, 3] RGB (or RGBA or gray) image, got shape {image.shape}")
    _check_pixels(image.shape[1], image.shape[0], max_pixels)
    return np.ascontiguousarray(image)


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise InvalidFrameError(
            f"image of {width}x{height} exceeds the limit of {max_pixels} pixels; send a smaller image "
            "or raise max_pixels"
        )


class PushSource(_SampledSource):
    """Frames pushed by producer threads (a webcam, an HTTP client), consumed by iterating in another thread.

    The queue is bounded: when it is full the oldest queued frame is dropped and counted in ``dropped``.
    ``close()`` lets iteration drain what is queued, then end with reason "closed".
    """

    def __init__(self, max_queue: int = 64, max_pixels: int = DEFAULT_MAX_PIXELS, fps: float | None = None) -> None:
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise ValueError(f"max_queue must be an integer >= 1, got {max_queue!r}")
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
            raise ValueError(f"max_pixels must be an integer >= 1, got {max_pixels!r}")
        super().__init__(fps, "max")
        self.max_queue, self.max_pixels = max_queue, max_pixels
        self._queue: deque[tuple[int, float, np.ndarray]] = deque()
        self._ready = threading.Condition(self._lock)
        self._t0: float | None = None
        self._last_t = -math.inf
        self._accepted = self._dropped = self._rejected = 0

    @property
    def accepted(self) -> int:
        """Frames queued by ``push`` (including those later dropped)."""
        return self._accepted

    @property
    def dropped(self) -> int:
        """Queued frames dropped because the consumer fell behind (backpressure)."""
        return self._dropped

    @property
    def rejected(self) -> int:
        """Pushes refused with InvalidFrameError."""
        return self._rejected

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def push(self, image: np.ndarray | bytes | Image.Image, t: float | None = None) -> bool:
        """Queue a frame: an array, encoded JPEG/PNG/WebP bytes or a PIL image; False once closed.

        ``t`` None stamps the frame with the monotonic time since the first push. InvalidFrameError for an
        unusable frame or a time before the previous frame's; the source stays usable.
        """
        if self._closed.is_set():
            return False
        try:
            rgb = self._to_rgb(image)
            if t is not None and (isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t)):
                raise InvalidFrameError(f"t must be a finite number of seconds or None, got {t!r}")
        except InvalidFrameError:
            with self._lock:
                self._rejected += 1
            raise
        with self._ready:
            if self._closed.is_set():
                return False
            now = time.monotonic()
            if self._t0 is None:
                self._t0 = now
            stamp = now - self._t0 if t is None else float(t)
            if stamp < self._last_t:
                self._rejected += 1
                raise InvalidFrameError(
                    f"frame time {stamp:.3f} s is before the previous frame's ({self._last_t:.3f} s); "
                    "push frames in time order"
                )
            self._last_t = stamp
            if len(self._queue) >= self.max_queue:
                self._queue.popleft()
                self._dropped += 1
            self._queue.append((self._accepted, stamp, rgb))
            self._accepted += 1
            self._ready.notify()
            return True

    def _to_rgb(self, image: object) -> np.ndarray:
        if isinstance(image, bytes | bytearray | memoryview):
            return decode_image(bytes(image), self.max_pixels)
        if isinstance(image, Image.Image):
            _check_pixels(image.width, image.height, self.max_pixels)
            try:
                return np.array(image.convert("RGB"))  # [H, W, 3]
            except Exception as exc:  # a lazily loaded image can fail here
                raise InvalidFrameError(f"the PIL image cannot be read ({type(exc).__name__}: {exc})") from None
        rgb = as_rgb(image, self.max_pixels)  # type: ignore[arg-type]
        return rgb.copy() if np.shares_memory(rgb, image) else rgb  # the producer may reuse its buffer

    def _timeline(self) -> Timeline:
        while True:
            with self._ready:
                while not self._queue and not self._closed.is_set():
                    self._ready.wait()
                if not self._queue:
                    raise _EndOfSource(
                        "closed",
                        f"PushSource: closed after {self._accepted} frames ({self._dropped} dropped for "
                        f"backpressure, {self._rejected} rejected)",
                    )
                item = self._queue.popleft()
            yield item

    def _halted(self) -> bool:
        return False  # a closed push source still drains its queue

    def close(self) -> None:
        """Refuse further pushes; iteration ends once the queue is drained."""
        with self._ready:
            self._closed.set()
            self._ready.notify_all()


# --- async and factory ---


class _Failure:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


async def aiter_frames(source: Iterable[Frame], max_buffered: int = 8) -> AsyncIterator[Frame]:
    """Iterate a blocking source in a worker thread and yield its frames on the event loop.

    At most ``max_buffered`` frames wait for the consumer. Errors from the source are raised here.
    Leaving the loop early closes a FrameSource so the worker thread stops (a plain iterable is left
    as it is; the worker stops at its next item).
    """
    loop = asyncio.get_running_loop()
    items: asyncio.Queue[object] = asyncio.Queue()
    room = threading.Semaphore(max_buffered)
    stop = threading.Event()

    def deliver(item: object) -> bool:
        while not room.acquire(timeout=0.1):
            if stop.is_set():
                return False
        try:
            loop.call_soon_threadsafe(items.put_nowait, item)
        except RuntimeError:  # the event loop is gone
            return False
        return True

    def produce() -> None:
        try:
            for frame in source:
                if stop.is_set() or not deliver(frame):
                    return
        except BaseException as exc:  # handed to the consumer
            deliver(_Failure(exc))
            return
        deliver(_DONE)

    threading.Thread(target=produce, name="frame-source", daemon=True).start()
    finished = False
    try:
        while True:
            item = await items.get()
            room.release()
            if item is _DONE:
                finished = True
                return
            if isinstance(item, _Failure):
                finished = True
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        if not finished and isinstance(source, FrameSource):
            source.close()


def open_source(spec: str | os.PathLike[str], fps: float | None = None, pace: Pace = "max") -> FrameSource:
    """``"push"`` -> PushSource; a URL (``rtsp://``, ``http://``, ...) -> StreamSource; else VideoFileSource.

    ``file://`` URLs open the file. ``pace`` applies to files and streams, not to pushed frames.
    """
    spec = os.fspath(spec)
    if spec == "push":
        return PushSource(fps=fps)
    if spec.lower().startswith("file://"):
        return VideoFileSource(spec[len("file://") :], fps=fps, pace=pace)
    if _URL.match(spec):
        return StreamSource(spec, fps=fps, pace=pace)
    return VideoFileSource(spec, fps=fps, pace=pace)
