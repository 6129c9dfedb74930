"""The perception loop of a live session: intake -> ``Session.ingest`` in a worker thread -> events -> decisions."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from assistant.event_log import EventLog
from assistant.events import ErrorEvent, FrameAccepted, PerceptionStep, PerceptionUpdate
from assistant.intake import FrameIntake
from assistant.perception import FrameSignal
from assistant.session import Session
from assistant.sources import Frame

log = logging.getLogger(__name__)


class PerceptionLoop:
    """Perceives one queued frame at a time; never waits for reaction (the model work runs in a thread)."""

    def __init__(
        self,
        session: Session,
        intake: FrameIntake,
        events: EventLog,
        on_step: Callable[[PerceptionUpdate], None],
        *,
        before_frame: Callable[[float], Awaitable[None]] | None = None,
        on_frame: Callable[[FrameSignal], None] | None = None,
    ) -> None:
        """``on_step`` gets every completed step, in order, on the event loop; ``before_frame`` is awaited with
        each frame's stream time before it is perceived, ``on_frame`` gets each perceived frame's signal."""
        self.session = session
        self.intake = intake
        self.events = events
        self.on_step = on_step
        self.before_frame = before_frame
        self.on_frame = on_frame
        self.processed_frames = 0
        self.stream_t = 0.0
        """Stream time of the newest processed frame."""
        self.busy = False
        """A frame is being perceived right now."""
        self._step: list[Frame] = []  # processed frames of the step not yet complete

    async def run(self) -> None:
        """Perceive frames until the intake closes."""
        while (queued := await self.intake.take()) is not None:
            # 1. decisions due before this frame (probes of earlier stream times)
            self.busy = True
            if self.before_frame is not None:
                await self.before_frame(queued.frame.t)
            # 2. perceive: sample, encode, drop, remember (blocking compute, off the event loop)
            try:
                update = await asyncio.to_thread(self.session.ingest, queued.frame)
            except Exception as exc:  # a bad frame fails alone (with the earlier frames of its step)
                for frame in self._step:  # counted as processed, but its step never reached the memory
                    self.processed_frames -= 1
                    self.intake.failed(frame)
                self._step.clear()
                self._failed(queued.frame, exc)
                continue
            finally:
                self.busy = False
            # 3. report the frame, decide on it, then on the step it completed
            self.processed_frames += 1
            self.stream_t = queued.frame.t
            self.events.emit(FrameAccepted, queued.frame.t, index=queued.frame.index)
            signal = self.session.perception.frame_signal
            if self.on_frame is not None and signal is not None:
                self.on_frame(signal)
            if update is None:
                self._step.append(queued.frame)
                continue
            self._step.clear()
            self._report(update, lag=time.monotonic() - queued.arrived)
            self.on_step(update)

    def _report(self, update: PerceptionUpdate, lag: float) -> None:
        self.events.emit(
            PerceptionStep,
            update.t_start,
            step=update.step,
            frames=len(update.frame_indices),
            tokens=update.num_tokens,
            kept=update.num_kept,
            drop_ratio=update.drop_ratio,
            memory_tokens=self.session.memory.tokens_held,
            lag_s=lag,
        )

    def _failed(self, frame: Frame, exc: Exception) -> None:
        log.warning("perception failed on frame %d: %s", frame.index, exc)
        log.debug("perception failure", exc_info=True)
        self.events.emit(ErrorEvent, frame.t, code="perception_failed", message=str(exc))
        self.intake.failed(frame)  # every frame is processed or counted as dropped
