"""Videos played into sessions as if they were live: a file, a stream or a temporary upload."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import TYPE_CHECKING

from assistant.events import ErrorEvent
from assistant.orchestrator import SessionClosedError
from assistant.sources import FrameSource, Pace, SourceError, open_source
from serving.errors import ServiceError
from serving.hosted import Hosted, Playback
from serving.metrics import Metrics
from serving.schemas import VideoView

if TYPE_CHECKING:
    from serving.registry import SessionRegistry


def _remove(path: str | None) -> None:
    if path:
        with contextlib.suppress(OSError):
            os.unlink(path)


class VideoPlayer:
    """Starts and stops the playback of a video into a session through ``LiveSession.play``."""

    def __init__(self, registry: SessionRegistry, metrics: Metrics) -> None:
        self.registry = registry
        self.metrics = metrics

    async def play(
        self,
        owner: str,
        session_id: str,
        source: str,
        *,
        speed: Pace = "realtime",
        cleanup: str | None = None,
        label: str | None = None,
    ) -> VideoView:
        """Play a video file or stream into the session as live; ``cleanup`` is deleted when it ends.

        ServiceError 409 while another video plays, 422 when the video cannot be opened.
        """
        previous = h = None
        try:
            h = await self.registry.get(owner, session_id)
            if h.playing:
                raise ServiceError(409, "video_playing", "a video is already playing; DELETE it first")
            # claimed before the source opens (a playback without a task reads as playing): a second request
            # meanwhile gets 409 instead of starting a video nothing could stop
            previous, h.playback = h.playback, Playback(label or source, cleanup=cleanup)
            try:
                frames = await asyncio.to_thread(open_source, source, h.config.perception.fps, speed)
            except (SourceError, ValueError) as exc:
                raise ServiceError(422, "unreadable_video", str(exc)) from None
        except BaseException:
            if h is not None and h.playback is not previous and h.playback.task is None:
                h.playback = previous  # the claim is released
            _remove(cleanup)
            raise
        playback = h.playback
        playback.duration_s = getattr(frames, "duration", None)
        playback.task = asyncio.create_task(self._run(h, playback, frames, speed), name=f"play-{session_id}")
        return playback.view()

    async def _run(self, h: Hosted, playback: Playback, frames: FrameSource, speed: Pace) -> None:
        live = h.live
        offset = 0.0 if live.last_frame_t is None else live.last_frame_t + 1.0 / h.config.perception.fps
        received = live.intake.received
        try:
            async with contextlib.aclosing(live.play(frames, offset, lossless=speed == "max")) as pushed:
                async for _ in pushed:
                    playback.frames += 1
                    h.frames_in += 1
                    h.touch()
                    self.metrics.frames_in.inc()
            end = getattr(frames, "end", None)
            playback.end_reason = end.reason if end is not None else "end"
            offered = live.intake.received - received
            if offered and not playback.frames:  # an end without one usable frame is a failure, not an eof
                raise SourceError(f"none of the video's {offered} frames could be used (see its frame_dropped events)")
        except (SourceError, SessionClosedError) as exc:
            playback.error = str(exc)
            if not live.closed:
                live.events.emit(ErrorEvent, live.stream_t, code="video_failed", message=str(exc))
        finally:
            _remove(playback.cleanup)

    async def stop(self, owner: str, session_id: str) -> VideoView:
        """Stop the session's video (what it sent stays in memory); 404 when none was played."""
        playback = (await self.registry.get(owner, session_id)).playback
        if playback is None:
            raise ServiceError(404, "no_video", "no video was played into this session")
        if playback.task is not None and not playback.task.done():
            playback.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await playback.task
        return playback.view()

    async def status(self, owner: str, session_id: str) -> VideoView:
        """The session's video; 404 when none was played."""
        playback = (await self.registry.get(owner, session_id)).playback
        if playback is None:
            raise ServiceError(404, "no_video", "no video was played into this session")
        return playback.view()
