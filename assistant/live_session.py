"""A live session: one stream's frame intake, perception loop, job queue and reaction loop, with one event log.

Frames arrive into a bounded queue (oldest dropped under backpressure, counted), the perception loop turns them
into memory, events and decisions, and the reaction loop answers jobs from a priority queue (user question >
standing instruction > narration). The two loops run concurrently and never wait on each other.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from functools import partial
from typing import Any

import numpy as np

from assistant.causal import CausalOutbox
from assistant.config import SessionOptions
from assistant.decision import InstructionMonitor, SceneChangeDetector
from assistant.errors import SessionClosedError
from assistant.event_log import EventLog
from assistant.events import PerceptionUpdate, SessionClosed
from assistant.intake import DropReason, FrameIntake, FramesPushed
from assistant.jobs import PROACTIVE, JobQueue
from assistant.perception_loop import PerceptionLoop
from assistant.proactive import ProactivePolicy
from assistant.reaction_loop import ReactionLoop
from assistant.session import Session
from assistant.sources import FrameSource, aiter_frames


class LiveSession:
    """One live stream: frames in, events out, questions answered at any moment."""

    def __init__(self, session: Session, options: SessionOptions) -> None:
        self.session = session
        self.session_id = session.session_id
        self.options = options
        config = session.config
        self.events = EventLog(self.session_id, config.session.event_history)
        self.intake = FrameIntake(
            self.session_id,
            self.events,
            fps=config.perception.fps,
            capacity=config.session.frame_queue,
            decode_pixels=session.perception.geometry.max_pixels,  # frames are kept at the size perception uses
        )
        self.jobs = JobQueue(self.session_id)
        session.outbox = CausalOutbox(partial(session.engine.apply, self.session_id))
        family = session.adapter.family if session.adapter is not None else None
        self.proactive = ProactivePolicy(
            options.proactive,
            options.instructions,
            self.events,
            self.jobs,
            config=config.proactive,
            prompts=config.prompts.resolve(family),
            outbox=session.outbox,
        )
        self.perception_loop = PerceptionLoop(
            session,
            self.intake,
            self.events,
            self._on_step,
            before_frame=self.proactive.before_frame,
            on_frame=self.proactive.on_frame,
        )
        self.reaction_loop = ReactionLoop(session, self.jobs, self.events, self.proactive.on_probe)
        self._tasks: list[asyncio.Task] = []
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the engine side of the session and start its two loops."""
        await self.session.start()
        self._tasks = [
            asyncio.create_task(self.perception_loop.run(), name=f"perceive-{self.session_id}"),
            asyncio.create_task(self.reaction_loop.run(), name=f"react-{self.session_id}"),
        ]

    async def close(self, reason: str = "closed") -> None:
        """Stop both loops, cancel the running answer, fail queued ones, free the engine side; idempotent."""
        if self._closed:
            return
        self._closed = True
        self.intake.close()
        self.jobs.close(SessionClosedError(f"session {self.session_id} closed"))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self.session.close()
        self.events.emit(SessionClosed, self.stream_t, reason=reason)
        self.events.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def idle(self) -> bool:
        """No frame waiting or being perceived, no answer queued or running."""
        return not len(self.intake) and self.jobs.idle and not self.perception_loop.busy

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until every pushed frame is processed and every queued answer is done."""
        async with asyncio.timeout(timeout):
            while not self.idle:
                await asyncio.sleep(0.01)

    # -- frames --------------------------------------------------------------------------------------------
    def clock(self) -> float:
        """Seconds since the session started: the stream time of a frame sent without one."""
        return self.intake.clock()

    def push_frame(self, image: np.ndarray | bytes, t: float | None = None) -> bool:
        """Queue one frame of a stream (array or encoded bytes) at stream time ``t`` (default: the session clock).

        Returns False when it was unusable; the reason is reported as a FrameDropped event and counted.
        Raises SessionClosedError when the session is closed.
        """
        return self.intake.offer(image, t)

    def push_frames(self, frames: Sequence[tuple[np.ndarray, float | None]]) -> FramesPushed:
        """Queue decoded frames [H, W, 3] uint8 with their stream times, all or none.

        A frame without a time gets the session clock (never before the previous frame + 1/fps). Raises
        InvalidFrameError naming an unusable image, FrameTimeError when a time is not finite, negative or before
        the previous frame, SessionClosedError when the session is closed.
        """
        return self.intake.put(frames)

    async def push_encoded(self, frames: Sequence[tuple[bytes, float | None]], max_pixels: int) -> FramesPushed:
        """Decode encoded images off the event loop, then queue them as ``push_frames`` does, all or none.

        Raises InvalidFrameError naming the first frame that cannot be decoded (``frame i: ...`` when several),
        FrameTimeError for an unusable time, SessionClosedError when the session is closed.
        """
        return await self.intake.put_encoded(frames, max_pixels)

    async def play(self, source: FrameSource, offset: float = 0.0, *, lossless: bool = False) -> AsyncIterator[float]:
        """Push a source's frames at ``offset`` + their time as they arrive; yields each queued frame's stream time.

        ``lossless`` waits for room in the queue instead of dropping the oldest frame (a file played faster than
        real time), and for a full backlog of probes instead of skipping probe times. Closing the iterator closes
        the source.
        """
        self.proactive.lossless = lossless
        with source:
            async with contextlib.aclosing(aiter_frames(source)) as frames:
                async for frame in frames:
                    if self._closed:
                        return
                    if lossless:
                        await self.wait_for_room()
                    stamp = offset + frame.t
                    if self.push_frame(frame.image, stamp):
                        yield stamp

    async def wait_for_room(self) -> None:
        """Wait until the frame queue has room (lossless playback of a file, instead of dropping)."""
        await self.intake.wait_for_room()

    @property
    def queued_frames(self) -> int:
        """Frames waiting for perception."""
        return len(self.intake)

    @property
    def last_frame_t(self) -> float | None:
        """Stream time of the newest queued frame (None before the first)."""
        return self.intake.last_t

    @property
    def frames_dropped(self) -> dict[DropReason, int]:
        """Frames not perceived, by reason: backpressure, invalid, failed."""
        return self.intake.dropped

    @property
    def processed_frames(self) -> int:
        """Frames perception has processed."""
        return self.perception_loop.processed_frames

    @property
    def stream_t(self) -> float:
        """Stream time of the newest processed frame."""
        return self.perception_loop.stream_t

    # -- decisions -----------------------------------------------------------------------------------------
    def _on_step(self, update: PerceptionUpdate) -> None:
        self.proactive.on_step(update)
        if not self.jobs.has("sync"):  # prefill new memory while idle: the next question pays only for itself
            self.jobs.put("sync", "", update.t_end)

    @property
    def monitors(self) -> list[InstructionMonitor]:
        """The standing instructions being watched for."""
        return self.proactive.monitors

    @monitors.setter
    def monitors(self, monitors: list[InstructionMonitor]) -> None:
        self.proactive.monitors = monitors

    @property
    def scene(self) -> SceneChangeDetector:
        """The scene-change detector of the stream."""
        return self.proactive.scene

    def add_instruction(self, monitor: InstructionMonitor) -> None:
        """Start watching for a standing instruction from now on."""
        if self._closed:
            raise SessionClosedError(f"session {self.session_id} is closed")
        self.monitors.append(monitor)

    # -- reaction ------------------------------------------------------------------------------------------
    def ask(self, question: str, t: float | None = None, **options: Any) -> tuple[str, asyncio.Future]:
        """Queue a user question; returns its answer id and a future of the AnswerFinished event.

        ``options`` go to the engine request (max_new_tokens, min_new_tokens, temperature). A running
        proactive answer is cancelled: a user question does not wait for it.
        """
        if self._closed:
            raise SessionClosedError(f"session {self.session_id} is closed")
        if not question.strip():
            raise ValueError("the question is empty")
        self.jobs.interrupt(*PROACTIVE)
        job = self.jobs.put("question", question.strip(), self.stream_t if t is None else t, options=options)
        return job.answer_id, job.done

    def cancel(self, answer_id: str) -> bool:
        """Cancel a queued or running answer; True when something was cancelled."""
        return self.jobs.cancel(answer_id)
