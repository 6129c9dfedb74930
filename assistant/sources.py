"""Frame sources: video files, network streams and pushed frames, sampled to a target fps and paced.

Every source yields ``Frame`` objects carrying their stream time; ``end`` tells why iteration stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 4096 * 4096
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


@dataclass(frozen=True, slots=True)
class Frame:
    """One sampled frame."""

    index: int
    """0, 1, 2, ... in the order yielded (after sampling)."""
    t: float
    """Stream time in seconds since the stream started."""
    image: np.ndarray
    """[H, W, 3] uint8 RGB."""
    source_index: int
    """Index of the decoded frame before sampling (push: arrival count)."""


class SourceError(Exception):
    """A source could not be used; the message says what to do."""


class SourceNotFoundError(SourceError):
    """The file does not exist."""


class SourceOpenError(SourceError):
    """The file or stream exists but cannot be opened as video."""


class InvalidFrameError(SourceError, ValueError):
    """A pushed frame that cannot be used (the source stays usable)."""


@dataclass(frozen=True, slots=True)
class SourceEnd:
    """Why a source stopped."""

    reason: Literal["eof", "truncated", "closed", "error"]
    message: str
    frames_decoded: int
    frames_yielded: int


class FrameSource(Protocol):
    end: SourceEnd | None

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


class FpsSampler:
    """Causal sampling by timestamps: keeps a frame when its time reaches the next due time."""

    def __init__(self, fps: float | None) -> None:
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = fps
        self._next: float | None = None

    def accept(self, t: float) -> bool:
        if self.fps is None:
            return True
        period = 1.0 / self.fps
        if self._next is None:
            self._next = t + period
            return True
        if t + 1e-6 < self._next:
            return False
        behind = int((t + 1e-6 - self._next) // period)  # after a gap, jump to the next due time after t
        self._next += (behind + 1) * period
        return True


class Pacer:
    """Waits so that frames come out at stream speed (or a multiple); ``max`` never waits."""

    def __init__(self, speed: float | Literal["realtime", "max"] = "max") -> None:
        if speed == "realtime":
            speed = 1.0
        if speed != "max" and not (isinstance(speed, int | float) and speed > 0):
            raise ValueError(f"pace must be 'realtime', 'max' or a positive speed, got {speed!r}")
        self.speed = speed
        self._start: tuple[float, float] | None = None

    def wait(self, t: float) -> None:
        if self.speed == "max":
            return
        now = time.monotonic()
        if self._start is None:
            self._start = (now, t)
            return
        due = self._start[0] + (t - self._start[1]) / self.speed
        if due > now:
            time.sleep(due - now)


class _SampledSource:
    """Shared loop: sample decoded (t, image) pairs, pace them, number them, record the end."""

    def __init__(self, fps: float | None, pace: float | str) -> None:
        self.fps = fps
        self._sampler = FpsSampler(fps)
        self._pacer = Pacer(pace)  # type: ignore[arg-type]
        self.end: SourceEnd | None = None
        self._closed = False
        self.frames_decoded = 0
        self.frames_yielded = 0

    def _decode(self) -> Iterator[tuple[float, np.ndarray]]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Frame]:
        reason, message = "eof", ""
        try:
            for source_index, (t, image) in enumerate(self._decode()):
                if self._closed:
                    reason = "closed"
                    break
                self.frames_decoded += 1
                if not self._sampler.accept(t):
                    continue
                self._pacer.wait(t)
                yield Frame(self.frames_yielded, t, image, source_index)
                self.frames_yielded += 1
        except _Truncated as exc:
            reason, message = "truncated", str(exc)
            log.warning("%s", message)
        except SourceError as exc:
            reason, message = "error", str(exc)
            log.warning("%s", message)
        finally:
            if self.end is None:
                self.end = SourceEnd(reason, message, self.frames_decoded, self.frames_yielded)
            self._release()

    def close(self) -> None:
        self._closed = True
        self._release()

    def _release(self) -> None:
        pass

    def __enter__(self) -> _SampledSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Truncated(Exception):
    pass


def _open_av(target: str, options: dict[str, str] | None = None, timeout: tuple[float, float] | None = None):
    import av

    try:
        container = av.open(target, options=options or {}, timeout=timeout)
    except (av.FFmpegError, OSError) as exc:
        raise SourceOpenError(f"cannot open {target!r} as video: {exc}") from None
    if not container.streams.video:
        container.close()
        raise SourceOpenError(f"{target!r} has no video stream")
    return container


def _pyav_frames(container, label: str) -> Iterator[tuple[float, np.ndarray]]:
    import av

    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    first_pts: float | None = None
    fallback = float(stream.average_rate or 25)
    count = 0
    try:
        for frame in container.decode(stream):
            t = float(frame.time) if frame.time is not None else count / fallback
            if first_pts is None:
                first_pts = t
            count += 1
            yield t - first_pts, frame.to_ndarray(format="rgb24")
    except av.FFmpegError as exc:
        if count:
            raise _Truncated(f"{label}: stopped after {count} frames: {exc}") from None
        raise SourceOpenError(f"{label}: no frame could be decoded: {exc}") from None


class VideoFileSource(_SampledSource):
    """A video file decoded with PyAV (default, robust to truncation) or decord."""

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float | None = None,
        pace: float | str = "max",
        backend: Literal["auto", "pyav", "decord"] = "auto",
        start: float = 0.0,
        end: float | None = None,
    ) -> None:
        super().__init__(fps, pace)
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise SourceNotFoundError(f"video file not found: {self.path}")
        if backend not in ("auto", "pyav", "decord"):
            raise ValueError(f"backend must be auto, pyav or decord, got {backend!r}")
        if start < 0 or (end is not None and end <= start):
            raise ValueError(f"need 0 <= start < end, got start={start}, end={end}")
        self.backend = "pyav" if backend == "auto" else backend
        self.start, self.stop = start, end
        container = _open_av(self.path)
        stream = container.streams.video[0]
        self.width, self.height = stream.codec_context.width, stream.codec_context.height
        self.native_fps = float(stream.average_rate) if stream.average_rate else None
        if stream.duration is not None and stream.time_base is not None:
            self.duration: float | None = float(stream.duration * stream.time_base)
        elif container.duration:
            self.duration = container.duration / 1_000_000
        else:
            self.duration = None
        container.close()
        self._container = None

    def _decode(self) -> Iterator[tuple[float, np.ndarray]]:
        frames = self._decode_decord() if self.backend == "decord" else self._decode_pyav()
        for t, image in frames:
            if t + 1e-6 < self.start:
                continue
            if self.stop is not None and t >= self.stop:
                break
            yield t - self.start, image

    def _decode_pyav(self) -> Iterator[tuple[float, np.ndarray]]:
        self._container = _open_av(self.path)
        yield from _pyav_frames(self._container, self.path)

    def _decode_decord(self) -> Iterator[tuple[float, np.ndarray]]:
        import decord

        try:
            reader = decord.VideoReader(self.path, ctx=decord.cpu(0))
        except (decord.DECORDError, RuntimeError) as exc:
            raise SourceOpenError(f"decord cannot open {self.path!r}: {exc}") from None
        n = len(reader)
        times = reader.get_frame_timestamp(list(range(n)))[:, 0] if n else np.zeros(0)
        t0 = float(times[0]) if n else 0.0
        for i in range(n):
            try:
                image = reader[i].asnumpy()
            except (decord.DECORDError, RuntimeError) as exc:
                raise _Truncated(f"{self.path}: stopped after {i} frames: {exc}") from None
            yield float(times[i]) - t0, image

    def _release(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


class StreamSource(_SampledSource):
    """A network stream PyAV can open (RTSP over TCP by default, RTMP, HTTP, UDP, SRT...)."""

    def __init__(
        self,
        url: str,
        fps: float | None = None,
        open_timeout: float = 10.0,
        read_timeout: float = 10.0,
        options: dict[str, str] | None = None,
    ) -> None:
        super().__init__(fps, "max")
        self.url = url
        opts = {"rtsp_transport": "tcp"} if url.startswith("rtsp") else {}
        opts.update(options or {})
        self._container = _open_av(url, opts, (open_timeout, read_timeout))

    def _decode(self) -> Iterator[tuple[float, np.ndarray]]:
        yield from _pyav_frames(self._container, self.url)

    def _release(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode JPEG/PNG/WebP bytes to [H, W, 3] uint8 RGB; InvalidFrameError for anything unusable."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InvalidFrameError("empty image data")
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise InvalidFrameError(f"image of {w}x{h} exceeds the limit of {max_pixels} pixels")
            img.load()
            return np.asarray(img.convert("RGB"))
    except InvalidFrameError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidFrameError(f"not a decodable image: {exc}") from None


def as_rgb(image: np.ndarray, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Validate an array frame and return [H, W, 3] uint8 RGB (gray and RGBA converted)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise InvalidFrameError("frames must be uint8 numpy arrays")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise InvalidFrameError(f"expected an [H, W, 3] image, got shape {image.shape}")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise InvalidFrameError(f"image of {image.shape[1]}x{image.shape[0]} exceeds {max_pixels} pixels")
    return np.ascontiguousarray(image)


class PushSource:
    """Frames pushed by another thread (a webcam, an HTTP client); the oldest queued frame goes when full."""

    def __init__(self, max_queue: int = 64, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.max_pixels = max_pixels
        self._queue: queue.Queue[tuple[float, np.ndarray, int] | None] = queue.Queue(max_queue)
        self._lock = threading.Lock()
        self._closed = False
        self._t0: float | None = None
        self._last_t = -float("inf")
        self._arrivals = 0
        self.accepted = 0
        self.dropped = 0
        self.end: SourceEnd | None = None

    def push(self, image: np.ndarray | bytes | object, t: float | None = None) -> bool:
        """Queue a frame (array, encoded bytes or PIL image); False once closed."""
        if isinstance(image, bytes | bytearray):
            rgb = decode_image(bytes(image), self.max_pixels)
        elif isinstance(image, np.ndarray):
            rgb = as_rgb(image, self.max_pixels)
        elif hasattr(image, "convert"):
            rgb = as_rgb(np.asarray(image.convert("RGB")), self.max_pixels)
        else:
            raise InvalidFrameError(f"unsupported frame type {type(image).__name__}")
        with self._lock:
            if self._closed:
                return False
            now = time.monotonic()
            if self._t0 is None:
                self._t0 = now
            stamp = now - self._t0 if t is None else float(t)
            if stamp < self._last_t:
                raise InvalidFrameError(f"frame time {stamp:.3f} s is before the previous frame ({self._last_t:.3f} s)")
            self._last_t = stamp
            while True:
                try:
                    self._queue.put_nowait((stamp, rgb, self._arrivals))
                    break
                except queue.Full:
                    try:
                        self._queue.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass
            self._arrivals += 1
            self.accepted += 1
            return True

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(queue.Full):  # when full, the consumer sees the closed flag once it drains
            self._queue.put_nowait(None)

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while True:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._closed:
                    break
                continue
            if item is None:
                break
            t, image, arrival = item
            yield Frame(index, t, image, arrival)
            index += 1
        self.end = SourceEnd("closed", "", self._arrivals, index)

    def __enter__(self) -> PushSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def aiter_frames(source: Iterable[Frame]) -> AsyncIterator[Frame]:
    """Iterate a blocking source on a worker thread, yielding frames on the event loop."""
    loop = asyncio.get_running_loop()
    frames: asyncio.Queue[Frame | BaseException | None] = asyncio.Queue(maxsize=8)
    stop = threading.Event()

    def produce() -> None:
        try:
            for frame in source:
                if stop.is_set():
                    break
                asyncio.run_coroutine_threadsafe(frames.put(frame), loop).result()
        except BaseException as exc:  # hand errors to the consumer
            asyncio.run_coroutine_threadsafe(frames.put(exc), loop).result()
            return
        asyncio.run_coroutine_threadsafe(frames.put(None), loop).result()

    worker = loop.run_in_executor(None, produce)
    try:
        while (item := await frames.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while not worker.done():
            try:
                frames.get_nowait()
            except asyncio.QueueEmpty:
                await asyncio.sleep(0.01)
        await worker


def open_source(spec: str, fps: float | None = None, pace: float | str = "max") -> FrameSource | PushSource:
    """``push`` -> PushSource; a URL -> StreamSource; anything else -> VideoFileSource."""
    if spec == "push":
        return PushSource()
    if spec.lower().startswith(STREAM_SCHEMES):
        return StreamSource(spec, fps=fps)
    return VideoFileSource(spec, fps=fps, pace=pace)
