"""What this worker holds for one hosted session: its live session, directory record, rate bucket, playback."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from assistant.config import VigilConfig
from assistant.orchestrator import LiveSession
from serving.directory import SessionRecord
from serving.limits import TokenBucket
from serving.mirror import EventMirror
from serving.schemas import SessionView, VideoView


@dataclass
class Playback:
    """A video played into a session as if it were live."""

    source: str
    task: asyncio.Task | None = None
    frames: int = 0
    duration_s: float | None = None
    end_reason: str | None = None
    error: str | None = None
    cleanup: str | None = None
    """Temporary upload to delete when playback ends."""

    @property
    def state(self) -> str:
        """``playing``, ``failed``, ``stopped`` or ``finished``."""
        if self.task is None or not self.task.done():
            return "playing"
        return "failed" if self.error else ("stopped" if self.task.cancelled() else "finished")

    def view(self) -> VideoView:
        """The playback as clients see it."""
        return VideoView(
            state=self.state,
            source=self.source,
            frames=self.frames,
            duration_s=self.duration_s,
            end_reason=self.end_reason,
            error=self.error,
        )


@dataclass
class Hosted:
    """A session that runs on this worker."""

    live: LiveSession
    record: SessionRecord
    config: VigilConfig
    bucket: TokenBucket
    idle_timeout_s: float
    """Closed after this long without activity (``math.inf``: its front end ends it)."""
    last_active: float = field(default_factory=time.monotonic)
    frames_in: int = 0
    subscribers: int = 0
    playback: Playback | None = None
    watcher: asyncio.Task | None = None
    mirror: EventMirror | None = None
    """Copies its events to a shared directory (None with the in-process one)."""

    @property
    def playing(self) -> bool:
        """A video plays into the session."""
        return self.playback is not None and self.playback.state == "playing"

    @property
    def busy(self) -> bool:
        """Something is going on: a video, a listener, frames or answers in flight."""
        return self.playing or self.subscribers > 0 or not self.live.idle

    def touch(self) -> None:
        """Note activity (the idle reaper spares the session)."""
        self.last_active = time.monotonic()

    def view(self) -> SessionView:
        """The session as clients see it."""
        return SessionView(
            id=self.record.id,
            status="live" if not self.live.closed else "closed",
            worker=self.record.worker,
            created=self.record.created,
            stream_t=self.live.last_frame_t,
            options=self.record.options,
            video=self.playback.view() if self.playback else None,
        )
