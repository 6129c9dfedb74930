"""What the HTTP API does, without HTTP: one facade over the pieces of a worker.

- ``SessionRegistry`` (``serving.registry``): the sessions this worker hosts, the directory, heartbeat, idle reaper;
- ``FrameGate`` (``serving.frame_gate``): request limits and the frame rate, then ``LiveSession.push_encoded``;
- ``VideoPlayer`` (``serving.playback``): videos played into sessions through ``LiveSession.play``;
- ``EventStreams`` (``serving.streams``): an answer's events, and every event resumable by sequence number;
- questions (``serving.questions``) and memory statistics (``serving.stats``).

Every front end (the API, the browser app) goes through this facade, so their sessions share one directory,
one set of limits and one set of metrics.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np

from assistant.config import VigilConfig
from assistant.events import AnswerFinished, SessionEvent
from assistant.orchestrator import Orchestrator
from assistant.sources import Pace
from serving import questions
from serving.directory import LocalDirectory, SessionDirectory
from serving.errors import ServiceError
from serving.frame_gate import FrameGate
from serving.hosted import Hosted, Playback
from serving.metrics import Metrics
from serving.playback import VideoPlayer
from serving.questions import QueuedAnswer
from serving.registry import SessionRegistry
from serving.schemas import FramesResult, MemoryView, SessionCreate, SessionView, VideoView
from serving.stats import memory_view
from serving.streams import EventStreams

__all__ = ["Hosted", "Playback", "QueuedAnswer", "ServiceError", "VigilService"]


class VigilService:
    """Sessions of one worker, shared state through a directory, limits from ``config.server.limits``."""

    def __init__(
        self,
        config: VigilConfig,
        orchestrator: Orchestrator,
        directory: SessionDirectory | None = None,
        *,
        worker_id: str | None = None,
    ) -> None:
        self.config = config
        self.limits = config.server.limits
        self.orchestrator = orchestrator
        self.directory = directory or LocalDirectory()
        self.worker_id = worker_id or config.server.worker_id or f"w{uuid.uuid4().hex[:8]}"
        self.metrics = Metrics(
            sessions=lambda: len(self.hosted),
            memory_tokens=lambda: sum(h.live.session.memory.tokens_held for h in self.hosted.values()),
        )
        self.registry = SessionRegistry(config, orchestrator, self.directory, self.metrics, self.worker_id)
        self.frames = FrameGate(self.limits, self.metrics)
        self.player = VideoPlayer(self.registry, self.metrics)
        self.streams = EventStreams(self.registry, self.directory)

    @property
    def hosted(self) -> dict[str, Hosted]:
        """The sessions that run on this worker, by id."""
        return self.registry.hosted

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Take over from a previous run of this worker and start the heartbeat and the idle reaper."""
        await self.registry.start()

    async def stop(self) -> None:
        """Close every session, the orchestrator and the directory."""
        await self.registry.stop()
        await self.orchestrator.shutdown()
        await self.directory.close()

    # -- sessions ------------------------------------------------------------------------------------------
    async def create(self, owner: str, spec: SessionCreate, *, idle_timeout_s: float | None = None) -> SessionView:
        """Start a session for ``owner`` with its options over the server's config (422, 429, 503 when refused).

        The service closes it after ``idle_timeout_s`` without activity (default ``server.idle_timeout_s``); a front
        end that ends its sessions itself (the browser app, when a tab goes) may pass ``math.inf``.
        """
        return (await self.registry.create(owner, spec, idle_timeout_s=idle_timeout_s)).view()

    async def get(self, owner: str, session_id: str) -> Hosted:
        """The session running here, or ServiceError: 404 unknown/not yours, 307 elsewhere, 410 ended."""
        return await self.registry.get(owner, session_id)

    async def describe(self, owner: str, session_id: str) -> SessionView:
        """A session of ``owner``, on this worker or known from the directory."""
        return await self.registry.describe(owner, session_id)

    async def list(self, owner: str) -> list[SessionView]:
        """Sessions of ``owner`` on every worker."""
        return await self.registry.list(owner)

    async def delete(self, owner: str, session_id: str) -> None:
        """End a session and forget it."""
        await self.registry.delete(owner, session_id)

    # -- frames and video ----------------------------------------------------------------------------------
    async def push_frames(
        self, owner: str, session_id: str, frames: Sequence[tuple[bytes | np.ndarray, float | None]]
    ) -> FramesResult:
        """Queue encoded images or decoded arrays (all or none); 413/422/429 with the reason when refused."""
        return await self.frames.push(await self.get(owner, session_id), frames)

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
        """Play a video file or stream into the session as live; ``cleanup`` is deleted when it ends."""
        return await self.player.play(owner, session_id, source, speed=speed, cleanup=cleanup, label=label)

    async def video(self, owner: str, session_id: str) -> VideoView:
        """The video played into the session (404 when none)."""
        return await self.player.status(owner, session_id)

    async def stop_video(self, owner: str, session_id: str) -> VideoView:
        """Stop the video that plays into the session."""
        return await self.player.stop(owner, session_id)

    # -- questions -----------------------------------------------------------------------------------------
    async def ask(
        self, owner: str, session_id: str, question: str, t: float | None = None, **options: Any
    ) -> QueuedAnswer:
        """Queue a question; the session, the answer id, its future and the event seq to follow from."""
        h = await self.get(owner, session_id)
        return questions.ask(h, question, t, self.limits, **options)

    @staticmethod
    async def wait_answer(future: asyncio.Future, hosted: Hosted | None = None) -> AnswerFinished:
        """The finished answer of ``ask``, or ServiceError: 409 cancelled, 410 session closed (``hosted`` tells a
        cancel from a close), 502 engine failed."""
        return await questions.wait_answer(future, hosted)

    def answer_events(self, h: Hosted, answer_id: str, after: int) -> AsyncIterator[SessionEvent | None]:
        """The answer's events as they happen; None now and then as a keepalive."""
        return self.streams.answer_events(h, answer_id, after)

    async def cancel(self, owner: str, session_id: str, answer_id: str) -> bool:
        """Cancel a queued or running answer; False when there is none by that id."""
        return (await self.get(owner, session_id)).live.cancel(answer_id)

    async def add_instruction(self, owner: str, session_id: str, instruction: str) -> str:
        """Add a standing instruction ("tell me when ..."); returns it as it is checked."""
        return questions.add_instruction(await self.get(owner, session_id), instruction)

    # -- events and memory ---------------------------------------------------------------------------------
    def events(self, owner: str, session_id: str, after: int) -> AsyncIterator[dict[str, Any] | None]:
        """Every event after ``after`` (None as a keepalive), resumable by seq, from here or the directory."""
        return self.streams.events(owner, session_id, after)

    async def memory(self, owner: str, session_id: str) -> MemoryView:
        """Memory, drop and engine statistics of a session."""
        return memory_view(await self.get(owner, session_id), self.orchestrator.engine)
