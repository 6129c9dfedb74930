"""Frames into a hosted session: request limits and the per-session rate, then the session's own frame intake.

Encoded images (API requests) go to ``LiveSession.push_encoded``, decoded arrays (a webcam in the browser app)
to ``LiveSession.push_frames``; both are counted in the metrics and under the same rate limit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from assistant.config import LimitsConfig
from assistant.intake import QueueFullError
from assistant.orchestrator import SessionClosedError
from assistant.sources import FrameTimeError, InvalidFrameError
from serving.errors import ServiceError, closed
from serving.hosted import Hosted
from serving.metrics import Metrics
from serving.schemas import FramesResult


class FrameGate:
    """Checks a request's frames against the limits and hands them to the session, which decodes and stamps them."""

    def __init__(self, limits: LimitsConfig, metrics: Metrics) -> None:
        self.limits = limits
        self.metrics = metrics

    async def push(self, h: Hosted, frames: Sequence[tuple[bytes | np.ndarray, float | None]]) -> FramesResult:
        """Queue encoded images or decoded [H, W, 3] arrays (all or none); ServiceError 413/422/429 when refused."""
        if not frames:
            raise ServiceError(422, "no_frames", "the request carries no image")
        if len(frames) > self.limits.max_frames_per_request:
            raise ServiceError(
                413, "too_many_frames", f"at most {self.limits.max_frames_per_request} frames per request"
            )
        if len(frames) > h.bucket.burst:  # never allowed at this rate, however long the client waits
            raise ServiceError(
                413,
                "too_many_frames",
                f"at most {h.bucket.burst:.0f} frames per request at this session's rate of {self.limits.max_fps:g} "
                "frames per second",
            )
        encoded = all(isinstance(data, bytes | bytearray) for data, _ in frames)
        for data, _ in frames:
            if encoded and len(data) > self.limits.max_frame_bytes:
                raise ServiceError(413, "frame_too_large", f"a frame exceeds {self.limits.max_frame_bytes} bytes")
        self._rate(h, len(frames))
        try:
            if encoded:
                pushed = await h.live.push_encoded(frames, self.limits.max_frame_pixels)
            else:
                pushed = h.live.push_frames(frames)
        except FrameTimeError as exc:
            raise ServiceError(422, "invalid_time", str(exc)) from None
        except InvalidFrameError as exc:
            raise ServiceError(422, "invalid_frame", str(exc)) from None
        except SessionClosedError as exc:
            raise closed(str(exc)) from None
        except QueueFullError as exc:
            self.metrics.rejected.labels("frame_queue_full").inc()
            if exc.scope == "session":
                raise ServiceError(429, "frame_queue_full", str(exc), headers={"Retry-After": "1"}) from None
            raise ServiceError(503, "worker_busy", str(exc), headers={"Retry-After": "2"}) from None
        h.frames_in += pushed.accepted
        self.metrics.frames_in.inc(pushed.accepted)
        h.touch()
        return FramesResult(
            accepted=pushed.accepted, dropped=pushed.dropped, t=[round(t, 4) for t in pushed.t], queued=pushed.queued
        )

    def _rate(self, h: Hosted, n: int) -> None:
        wait = h.bucket.take(n)
        if wait == 0.0:
            return
        self.metrics.rejected.labels("rate_limited").inc()
        raise ServiceError(
            429,
            "rate_limited",
            f"more than {self.limits.max_fps:g} frames per second for this session",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
