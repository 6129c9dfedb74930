"""The one frame intake of a live session: decode, validate, stamp with the session clock, queue (bounded).

Every frame a session gets passes here, whatever sent it (an API request, the browser app, a file played
into the session): images become [H, W, 3] uint8 RGB within a pixel limit, times are finite, non-negative and
in order, and the queue holds at most ``capacity`` frames, dropping the oldest (counted, with a FrameDropped
event). A frame is either queued or counted as dropped with a reason; nothing is lost silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import math
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from assistant.errors import SessionClosedError
from assistant.event_log import EventLog
from assistant.events import FrameDropped
from assistant.sources import (
    DEFAULT_MAX_PIXELS,
    IMAGE_FORMATS,
    Frame,
    FrameTimeError,
    InvalidFrameError,
    as_rgb,
    decode_image,
)

DropReason = Literal["backpressure", "invalid", "failed"]
MAX_STREAM_T = 1e7
"""Latest stream time a frame or question may carry, in seconds (about 115 days)."""


@dataclass(frozen=True, slots=True)
class FramesPushed:
    """What became of the frames of one ``push_frames`` call."""

    accepted: int
    dropped: int
    """Older queued frames dropped to make room (backpressure)."""
    t: tuple[float, ...]
    """Stream time given to each accepted frame."""
    queued: int
    """Frames waiting for perception afterwards."""


@dataclass(frozen=True, slots=True)
class QueuedFrame:
    """A frame waiting for perception, with the monotonic time it arrived (for the perception lag)."""

    frame: Frame
    arrived: float


class QueueFullError(RuntimeError):
    """Queued frames would exceed their byte bound: the session's (``scope`` session) or the worker's (worker)."""

    def __init__(self, scope: Literal["session", "worker"], message: str) -> None:
        super().__init__(message)
        self.scope = scope


class FrameBytes:
    """Decoded bytes of the frames queued by every session of a worker, under one limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.peak = 0
        """The most bytes held at once."""

    def fits(self, more: int) -> bool:
        """Whether ``more`` bytes would still be within the limit."""
        return self.held + more <= self.limit


class FrameIntake:
    """Decodes, validates, stamps and queues one session's frames; counts every frame it drops."""

    def __init__(
        self,
        session_id: str,
        events: EventLog,
        *,
        fps: float,
        capacity: int,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        decode_pixels: int | None = None,
    ) -> None:
        """``decode_pixels``: the area perception resizes frames to at most; larger images are decoded (JPEG: in
        the DCT domain) and kept at about that area, never at their full size."""
        self.session_id = session_id
        self.events = events
        self.fps = fps
        self.capacity = capacity
        self.max_pixels = max_pixels
        self.decode_pixels = decode_pixels
        self.max_bytes: int | None = None
        """Bound of this session's queued frame bytes (None: only the frame count bounds the queue)."""
        self.worker_bytes: FrameBytes | None = None
        """The worker-wide bound the session's queued frames share with other sessions."""
        self.queued_bytes = 0
        self.received = 0
        """Frames offered to the intake, whatever became of them."""
        self.dropped: dict[DropReason, int] = {"backpressure": 0, "invalid": 0, "failed": 0}
        self.last_t: float | None = None
        """Stream time of the newest queued frame (None before the first)."""
        self.closed = False
        self._queue: deque[QueuedFrame] = deque()
        self._ready = asyncio.Event()  # a frame was queued (or the intake closed)
        self._room = asyncio.Event()  # a frame was taken (or the intake closed)
        self._index = 0
        self._started = time.monotonic()

    def clock(self) -> float:
        """Seconds since the session started: the stream time of a frame sent without one."""
        return time.monotonic() - self._started

    def __len__(self) -> int:
        return len(self._queue)

    # -- in ------------------------------------------------------------------------------------------------
    def offer(self, image: np.ndarray | bytes, t: float | None = None) -> bool:
        """Queue one frame of a stream (array or encoded bytes); False when it was unusable.

        An unusable frame (unreadable image, bad time) is counted as dropped with reason ``invalid`` and
        reported as a FrameDropped event saying why; the next frame is judged on its own.
        """
        self._check_open()
        self.received += 1
        try:  # a decoded frame of a stream is already in memory: it is reduced, whatever its size
            rgb = self._decode(image, self.max_pixels if isinstance(image, bytes | bytearray) else None)
            (stamp,) = self._stamps([t])
            self._admit([rgb])
        except InvalidFrameError as exc:
            self._drop("invalid", self._event_time(t), str(exc))
            return False
        except QueueFullError as exc:
            self._drop("backpressure", stamp, str(exc))
            return False
        self._enqueue([rgb], [stamp])
        return True

    def put(self, frames: Sequence[tuple[np.ndarray, float | None]]) -> FramesPushed:
        """Queue decoded frames [H, W, 3] with their stream times, all or none (a refused batch is counted as
        dropped, reason ``invalid``).

        Raises InvalidFrameError naming the first unusable image, FrameTimeError for an unusable time,
        SessionClosedError when the session is closed.
        """
        self._check_open()
        self.received += len(frames)
        with self._refusing(frames):
            images = self._decode_all([image for image, _ in frames], self.max_pixels)
            stamps = self._stamps([t for _, t in frames])
            self._admit(images)
        return self._enqueue(images, stamps)

    async def put_encoded(self, frames: Sequence[tuple[bytes, float | None]], max_pixels: int) -> FramesPushed:
        """Decode encoded images off the event loop (at most ``max_pixels`` each), then queue them, all or none.

        Raises as ``put`` does; decoding errors name the frame (``frame i: ...``) when there are several.
        """
        self._check_open()
        self.received += len(frames)
        with self._refusing(frames):
            images = await asyncio.to_thread(self._decode_all, [data for data, _ in frames], max_pixels)
            self._check_open()
            stamps = self._stamps([t for _, t in frames])
            self._admit(images)
        return self._enqueue(images, stamps)

    # -- out -----------------------------------------------------------------------------------------------
    async def take(self) -> QueuedFrame | None:
        """The oldest queued frame, waiting for one; None once the intake is closed."""
        while not self._queue:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        queued = self._queue.popleft()
        self._release(queued.frame.image.nbytes)
        self._room.set()
        return queued

    async def wait_for_room(self) -> None:
        """Wait until the queue has room (lossless playback of a file, instead of dropping)."""
        while len(self._queue) >= self.capacity and not self.closed:
            self._room.clear()
            await self._room.wait()

    def failed(self, frame: Frame) -> None:
        """Count a frame perception raised on as dropped (reason ``failed``)."""
        self._drop("failed", frame.t, f"frame {frame.index}")

    def close(self) -> None:
        """Refuse further frames; wake whoever waits for a frame or for room."""
        self.closed = True
        self._release(self.queued_bytes)  # what is still queued is never perceived: its bytes go back
        self._ready.set()
        self._room.set()

    # -- steps ---------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _refusing(self, frames: Sequence[tuple[object, float | None]]) -> Iterator[None]:
        """Count every frame of a refused batch as dropped (``invalid``, or ``backpressure`` when the queue's
        bytes are full, with the reason), then re-raise."""
        try:
            yield
        except (InvalidFrameError, QueueFullError) as exc:
            reason: DropReason = "invalid" if isinstance(exc, InvalidFrameError) else "backpressure"
            for _, t in frames:
                self._drop(reason, self._event_time(t), str(exc))
            raise

    def _admit(self, images: Sequence[np.ndarray]) -> None:
        """QueueFullError when queueing ``images`` (after the oldest frames the count bound drops) would exceed
        the session's or the worker's byte bound."""
        new = sum(a.nbytes for a in images)
        drop = min(len(self._queue), max(0, len(self._queue) + len(images) - self.capacity))
        delta = new - sum(q.frame.image.nbytes for q in itertools.islice(self._queue, drop))
        if self.max_bytes is not None and self.queued_bytes + delta > self.max_bytes:
            raise QueueFullError(
                "session",
                f"the session's queued frames would exceed {self.max_bytes} bytes; send fewer or smaller frames",
            )
        if self.worker_bytes is not None and delta > 0 and not self.worker_bytes.fits(delta):
            raise QueueFullError("worker", "this worker holds its maximum of queued frame bytes; retry shortly")

    def _hold(self, n: int) -> None:
        self.queued_bytes += n
        if self.worker_bytes is not None:
            self.worker_bytes.held += n
            self.worker_bytes.peak = max(self.worker_bytes.peak, self.worker_bytes.held)

    def _release(self, n: int) -> None:
        self._hold(-n)

    def _check_open(self) -> None:
        if self.closed:
            raise SessionClosedError(f"session {self.session_id} is closed")

    def _decode(self, image: np.ndarray | bytes, max_pixels: int | None) -> np.ndarray:
        """Encoded bytes or an array -> [H, W, 3] uint8 RGB (at most about ``decode_pixels``) that no producer can
        change underneath us; ``max_pixels`` bounds the declared size (None: any size)."""
        if isinstance(image, bytes | bytearray | memoryview):
            return decode_reduced(bytes(image), max_pixels or 2**62, self.decode_pixels)
        rgb = as_rgb(image, max_pixels or 2**62)
        if self.decode_pixels is not None and rgb.shape[0] * rgb.shape[1] > self.decode_pixels:
            return _reduce(Image.fromarray(rgb), self.decode_pixels)
        return rgb.copy() if np.may_share_memory(rgb, image) else rgb  # a producer may reuse its buffer

    def _decode_all(self, images: Sequence[np.ndarray | bytes], max_pixels: int) -> list[np.ndarray]:
        out = []
        for i, image in enumerate(images):
            try:
                out.append(self._decode(image, max_pixels))
            except InvalidFrameError as exc:
                where = f"frame {i}: " if len(images) > 1 else ""
                raise InvalidFrameError(f"{where}{exc}") from None
        return out

    def _stamps(self, times: Iterable[float | None]) -> list[float]:
        """Stream times for frames after the newest queued one; a missing time gets max(clock, previous + 1/fps)."""
        last, stamps = self.last_t, []
        for t in times:
            if t is None:
                stamp = self.clock() if last is None else max(self.clock(), last + 1.0 / self.fps)
            else:
                stamp = _finite_time(t)
                if last is not None and stamp < last:
                    raise FrameTimeError(f"frame time {stamp:.3f} s is before the previous one ({last:.3f} s)")
            stamps.append(stamp)
            last = stamp
        return stamps

    def _enqueue(self, images: Sequence[np.ndarray], stamps: Sequence[float]) -> FramesPushed:
        dropped = 0
        for rgb, t in zip(images, stamps, strict=True):
            if len(self._queue) >= self.capacity:
                old = self._queue.popleft().frame
                self._drop("backpressure", old.t, f"frame {old.index}")
                dropped += 1
                self._release(old.image.nbytes)
            self._queue.append(QueuedFrame(Frame(self._index, t, rgb, self._index), time.monotonic()))
            self._hold(rgb.nbytes)
            self._index += 1
            self.last_t = t
        self._ready.set()
        return FramesPushed(len(stamps), dropped, tuple(stamps), len(self._queue))

    def _drop(self, reason: DropReason, t: float, detail: str) -> None:
        self.dropped[reason] += 1
        self.events.emit(FrameDropped, t, reason=reason, detail=detail)

    def _event_time(self, t: object) -> float:
        """The stream time to report a refused frame at: its own when usable, else the newest frame's."""
        try:
            return _finite_time(t)  # type: ignore[arg-type]
        except FrameTimeError:
            return self.last_t if self.last_t is not None else 0.0


def _finite_time(t: float) -> float:
    """``t`` as seconds, or FrameTimeError when it is not a finite number >= 0."""
    if isinstance(t, bool) or not isinstance(t, int | float | np.integer | np.floating):
        raise FrameTimeError(f"frame time must be a finite number in [0, {MAX_STREAM_T:g}] seconds, got {t!r}")
    stamp = float(t)
    if not math.isfinite(stamp) or not 0 <= stamp <= MAX_STREAM_T:
        raise FrameTimeError(f"frame time must be a finite number in [0, {MAX_STREAM_T:g}] seconds, got {t}")
    return stamp


def decode_reduced(data: bytes, max_pixels: int, target_pixels: int | None) -> np.ndarray:
    """Decode JPEG/PNG/WebP bytes to [H, W, 3] uint8 RGB of at most about ``target_pixels``.

    The size the header declares is checked against ``max_pixels`` before any pixel is decoded (a decompression
    bomb is refused unread). A JPEG larger than the target is decoded in the DCT domain at 1/2, 1/4 or 1/8 scale
    (Pillow's ``draft``), so its full-size bitmap never exists; then every image is reduced to the target.
    """
    if target_pixels is None:
        return decode_image(data, max_pixels)
    if not data:
        raise InvalidFrameError("empty image data; send JPEG, PNG or WebP bytes")
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
            if img.width * img.height > max_pixels:
                raise InvalidFrameError(
                    f"image of {img.width}x{img.height} exceeds the limit of {max_pixels} pixels; send a smaller "
                    "image or raise max_pixels"
                )
            if img.width * img.height > target_pixels:
                img.draft("RGB", _target_size(img.width, img.height, target_pixels))  # JPEG only; no-op otherwise
            return _reduce(img, target_pixels)
    except InvalidFrameError:
        raise
    except Exception as exc:  # Pillow raises many types for malformed data
        raise InvalidFrameError(
            f"not a decodable {'/'.join(IMAGE_FORMATS)} image ({type(exc).__name__}: {exc})"
        ) from None


def _target_size(width: int, height: int, target_pixels: int) -> tuple[int, int]:
    scale = math.sqrt(target_pixels / (width * height))
    return max(1, int(width * scale)), max(1, int(height * scale))


def _reduce(img: Image.Image, target_pixels: int) -> np.ndarray:
    """``img`` as [H, W, 3] uint8 RGB, reduced (box, then bilinear) to at most ``target_pixels`` when larger."""
    rgb = img.convert("RGB")
    if rgb.width * rgb.height > target_pixels:
        rgb = rgb.resize(_target_size(rgb.width, rgb.height, target_pixels), Image.Resampling.BILINEAR, reducing_gap=2)
    return np.array(rgb)  # [H, W, 3], writable
