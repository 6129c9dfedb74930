"""The orchestrator: many live sessions on one asyncio loop, sharing one reaction engine.

Per session, three things run concurrently and never wait on each other: frames arrive into a bounded queue
(oldest dropped under backpressure, counted), a perception task turns them into memory and decisions, and a
reaction task answers jobs from a priority queue (user question > standing instruction > narration).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assistant.config import SessionOptions, VigilConfig
from assistant.decision import (
    NARRATION_PROMPT,
    InstructionMonitor,
    SceneChangeDetector,
    Trigger,
)
from assistant.events import (
    AnswerDeltaEvent,
    AnswerFinished,
    AnswerStarted,
    ErrorEvent,
    FrameAccepted,
    FrameDropped,
    PerceptionStep,
    SessionClosed,
    SessionEvent,
    TriggerFired,
)
from assistant.models.base import VisionLanguageAdapter
from assistant.reaction import AnswerDelta, AnswerDone, ReactionEngine
from assistant.session import Session
from assistant.sources import (
    Frame,
    FrameSource,
    FrameTimeError,
    InvalidFrameError,
    aiter_frames,
    as_rgb,
    decode_image,
)

log = logging.getLogger(__name__)

PRIORITY = {"question": 0, "instruction": 1, "narration": 2, "probe": 3, "sync": 4}


class SessionClosedError(RuntimeError):
    """The session no longer accepts frames or questions."""


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


class EventLog:
    """Per-session events with gap-free sequence numbers; subscribers can resume after any kept seq."""

    def __init__(self, session_id: str, history: int) -> None:
        self.session_id = session_id
        self._events: deque[SessionEvent] = deque(maxlen=history)
        self._seq = itertools.count(1)
        self._wake = asyncio.Event()  # set and replaced on every change; followers wait on the one they saw
        self.closed = False

    def emit(self, cls: type[SessionEvent], t: float, **fields: Any) -> SessionEvent:
        event = cls(next(self._seq), self.session_id, t, **fields)
        self._events.append(event)
        self._signal()
        return event

    def close(self) -> None:
        """No more events: followers finish once they have read everything."""
        self.closed = True
        self._signal()

    def _signal(self) -> None:
        self._wake.set()
        self._wake = asyncio.Event()

    def since(self, seq: int) -> list[SessionEvent]:
        """Kept events after ``seq`` (oldest first); sequence numbers are contiguous, so this is a slice."""
        if not self._events:
            return []
        start = max(0, seq + 1 - self._events[0].seq)
        return list(itertools.islice(self._events, start, None))

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest event (0 before the first)."""
        return self._events[-1].seq if self._events else 0

    async def wait(self, after: int, timeout: float) -> list[SessionEvent]:
        """Kept events after ``after``, waiting up to ``timeout`` seconds for one (empty on timeout or close)."""
        wake = self._wake
        events = self.since(after)
        if events or self.closed:
            return events
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await wake.wait()
        return self.since(after)

    async def follow(self, after: int = 0) -> AsyncIterator[SessionEvent]:
        """Every event after ``after``, then live ones, until the session closes."""
        cursor = after
        while True:
            wake = self._wake
            for event in self.since(cursor):
                cursor = event.seq
                yield event
            if self.closed and not self.since(cursor):
                return
            if not self.since(cursor):
                await wake.wait()


@dataclass(order=True, slots=True)
class _Job:
    priority: int
    order: int
    kind: str = field(compare=False)
    question: str = field(compare=False)
    t: float = field(compare=False)
    answer_id: str = field(compare=False, default="")
    monitor: InstructionMonitor | None = field(compare=False, default=None)
    done: asyncio.Future | None = field(compare=False, default=None)
    options: dict[str, Any] = field(compare=False, default_factory=dict)


class LiveSession:
    """One live stream: frames in, events out, questions answered at any moment."""

    def __init__(self, session: Session, options: SessionOptions) -> None:
        self.session = session
        self.session_id = session.session_id
        self.options = options
        self.events = EventLog(self.session_id, session.config.session.event_history)
        self.scene = SceneChangeDetector()
        self.monitors = [InstructionMonitor(text) for text in options.instructions]
        self._frames: deque[tuple[Frame, float]] = deque()
        self._frame_ready = asyncio.Event()
        self._jobs: list[_Job] = []
        self._job_ready = asyncio.Event()
        self._order = itertools.count()
        self._running: tuple[_Job, asyncio.Task] | None = None
        self._closed = False
        self._busy = False
        self._frame_index = 0
        self._last_t: float | None = None
        self.frames_dropped = {"backpressure": 0, "invalid": 0, "failed": 0}
        self.stream_t = 0.0
        self.processed_frames = 0
        self._tasks: list[asyncio.Task] = []
        self._started = time.monotonic()

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.session.start()
        self._tasks = [
            asyncio.create_task(self._perceive(), name=f"perceive-{self.session_id}"),
            asyncio.create_task(self._react(), name=f"react-{self.session_id}"),
        ]

    async def close(self, reason: str = "closed") -> None:
        if self._closed:
            return
        self._closed = True
        self._frame_ready.set()
        self._job_ready.set()
        if self._running is not None:
            self._running[1].cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for job in self._jobs:
            if job.done is not None and not job.done.done():
                job.done.set_exception(SessionClosedError(f"session {self.session_id} closed"))
        with contextlib.suppress(Exception):
            await self.session.close()
        self.events.emit(SessionClosed, self.stream_t, reason=reason)
        self.events.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def idle(self) -> bool:
        """No frame waiting, no answer queued or running."""
        return not self._frames and not self._jobs and self._running is None and not self._busy

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until every pushed frame is processed and every queued answer is done."""
        async with asyncio.timeout(timeout):
            while not self.idle:
                await asyncio.sleep(0.01)

    # -- frames --------------------------------------------------------------------------------------------
    @property
    def queued_frames(self) -> int:
        """Frames waiting for perception."""
        return len(self._frames)

    @property
    def last_frame_t(self) -> float | None:
        """Stream time of the newest queued frame (None before the first)."""
        return self._last_t

    def push_frame(self, image: np.ndarray | bytes, t: float | None = None) -> bool:
        """Queue a frame (array or encoded bytes) at stream time ``t`` (default: after the previous one).

        Returns False when it was rejected; the reason is reported as a FrameDropped event and counted.
        """
        if self._closed:
            raise SessionClosedError(f"session {self.session_id} is closed")
        if t is not None:
            stamp = float(t)
        elif self._last_t is None:
            stamp = 0.0
        else:
            stamp = self._last_t + 1.0 / self.session.config.perception.fps
        try:
            # arrays are copied: a producer may reuse its buffer while the frame waits in the queue
            rgb = decode_image(image) if isinstance(image, bytes | bytearray) else as_rgb(image).copy()
            if self._last_t is not None and stamp < self._last_t:
                raise InvalidFrameError(f"frame time {stamp:.3f} s is before the previous one ({self._last_t:.3f} s)")
        except InvalidFrameError as exc:
            self.frames_dropped["invalid"] += 1
            self.events.emit(FrameDropped, stamp, reason="invalid", detail=str(exc))
            return False
        self._last_t = stamp
        if len(self._frames) >= self.session.config.session.frame_queue:
            old, _ = self._frames.popleft()
            self.frames_dropped["backpressure"] += 1
            self.events.emit(FrameDropped, old.t, reason="backpressure", detail=f"frame {old.index}")
        self._frames.append((Frame(self._frame_index, stamp, rgb, self._frame_index), time.monotonic()))
        self._frame_index += 1
        self._frame_ready.set()
        return True

    def clock(self) -> float:
        """Seconds since the session started: the stream time of a frame sent without one."""
        return time.monotonic() - self._started

    def push_frames(self, frames: Sequence[tuple[np.ndarray, float | None]]) -> FramesPushed:
        """Queue decoded frames [H, W, 3] uint8 with their stream times, all or none.

        A frame without a time gets the session clock (never before the previous frame + 1/fps). Raises
        FrameTimeError when a time is not finite, negative or before the previous frame, SessionClosedError when
        the session is closed.
        """
        if self._closed:
            raise SessionClosedError(f"session {self.session_id} is closed")
        fps = self.session.config.perception.fps
        last = self._last_t
        stamps = []
        for _, t in frames:
            if t is None:
                t = self.clock() if last is None else max(self.clock(), last + 1.0 / fps)
            elif not math.isfinite(t) or t < 0:
                raise FrameTimeError(f"frame time must be a finite number >= 0, got {t}")
            elif last is not None and t < last:
                raise FrameTimeError(f"frame time {t:.3f} s is before the previous frame ({last:.3f} s)")
            stamps.append(float(t))
            last = t
        before = self.frames_dropped["backpressure"]
        for (image, _), t in zip(frames, stamps, strict=True):
            self.push_frame(image, t)
        dropped = self.frames_dropped["backpressure"] - before
        return FramesPushed(len(frames), dropped, tuple(stamps), self.queued_frames)

    async def push_encoded(self, frames: Sequence[tuple[bytes, float | None]], max_pixels: int) -> FramesPushed:
        """Decode encoded images off the event loop, then ``push_frames`` them, all or none.

        Raises InvalidFrameError naming the first frame that cannot be decoded (``frame i: ...`` when several),
        FrameTimeError for an unusable time, SessionClosedError when the session is closed.
        """
        if self._closed:
            raise SessionClosedError(f"session {self.session_id} is closed")

        def decode_all() -> list[np.ndarray]:
            out = []
            for i, (data, _) in enumerate(frames):
                try:
                    out.append(decode_image(data, max_pixels))  # [H, W, 3] uint8
                except InvalidFrameError as exc:
                    where = f"frame {i}: " if len(frames) > 1 else ""
                    raise InvalidFrameError(f"{where}{exc}") from None
            return out

        images = await asyncio.to_thread(decode_all)
        return self.push_frames([(image, t) for image, (_, t) in zip(images, frames, strict=True)])

    async def play(self, source: FrameSource, offset: float = 0.0, *, lossless: bool = False) -> AsyncIterator[float]:
        """Push a source's frames at ``offset`` + their time as they arrive; yields each queued frame's stream time.

        ``lossless`` waits for room in the queue instead of dropping the oldest frame (a file played faster than
        real time). Closing the iterator closes the source.
        """
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
        while len(self._frames) >= self.session.config.session.frame_queue and not self._closed:
            await asyncio.sleep(0.005)

    async def _perceive(self) -> None:
        while not self._closed:
            if not self._frames:
                self._frame_ready.clear()
                await self._frame_ready.wait()
                continue
            frame, arrived = self._frames.popleft()
            self._busy = True
            try:
                update = await asyncio.to_thread(self.session.ingest, frame)
            except Exception as exc:  # a bad frame fails alone
                log.warning("perception failed on frame %d: %s", frame.index, exc)
                log.debug("perception failure", exc_info=True)
                self.events.emit(ErrorEvent, frame.t, code="perception_failed", message=str(exc))
                self.frames_dropped["failed"] += 1  # every frame is processed or counted as dropped
                self.events.emit(FrameDropped, frame.t, reason="failed", detail=f"frame {frame.index}")
                continue
            finally:
                self._busy = False
            self.processed_frames += 1
            self.stream_t = frame.t
            self.events.emit(FrameAccepted, frame.t, index=frame.index)
            if update is not None:
                lag = time.monotonic() - arrived
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
                self._decide(update)
                if not self._has_job("sync"):  # prefill new memory while idle: the next question pays only for itself
                    self._enqueue("sync", "", update.t_end)

    # -- decisions -----------------------------------------------------------------------------------------
    def _decide(self, update: Any) -> None:
        trigger = self.scene.step(update)
        if trigger is not None and self.options.proactive != "off":
            self._fire(trigger)
            if self.options.proactive == "narrate":
                self._enqueue("narration", NARRATION_PROMPT, update.t_end, supersede=True)
        for monitor in self.monitors:
            if monitor.due(update.t_end, trigger is not None) and not self._has_job("probe", monitor):
                self._enqueue("probe", monitor.question, update.t_end, monitor=monitor)

    def add_instruction(self, monitor: InstructionMonitor) -> None:
        """Start watching for a standing instruction from now on."""
        if self._closed:
            raise SessionClosedError(f"session {self.session_id} is closed")
        self.monitors.append(monitor)

    def _fire(self, trigger: Trigger) -> None:
        self.events.emit(
            TriggerFired, trigger.t, kind=trigger.kind, score=trigger.score, instruction=trigger.instruction
        )

    # -- reaction ------------------------------------------------------------------------------------------
    def ask(self, question: str, t: float | None = None, **options: Any) -> tuple[str, asyncio.Future]:
        """Queue a user question; returns its answer id and a future of the AnswerFinished event.

        ``options`` go to the engine request (max_new_tokens, min_new_tokens, temperature).
        """
        if self._closed:
            raise SessionClosedError(f"session {self.session_id} is closed")
        if not question.strip():
            raise ValueError("the question is empty")
        running = self._running
        if running is not None and running[0].kind in ("narration", "instruction"):
            running[1].cancel()  # a user question does not wait for a proactive message
        job = self._enqueue("question", question.strip(), self.stream_t if t is None else t, options=options)
        return job.answer_id, job.done

    def cancel(self, answer_id: str) -> bool:
        """Cancel a queued or running answer; True when something was cancelled."""
        for job in self._jobs:
            if job.answer_id == answer_id:
                self._jobs.remove(job)
                heapq.heapify(self._jobs)
                if job.done and not job.done.done():
                    job.done.cancel()
                return True
        if self._running is not None and self._running[0].answer_id == answer_id:
            self._running[1].cancel()
            return True
        return False

    def _has_job(self, kind: str, monitor: InstructionMonitor | None = None) -> bool:
        jobs = [*self._jobs, *([self._running[0]] if self._running else [])]
        return any(j.kind == kind and (monitor is None or j.monitor is monitor) for j in jobs)

    def _enqueue(
        self,
        kind: str,
        question: str,
        t: float,
        *,
        monitor: InstructionMonitor | None = None,
        supersede: bool = False,
        options: dict[str, Any] | None = None,
    ) -> _Job:
        if supersede:  # a newer proactive message replaces a stale one
            stale = [j for j in self._jobs if j.kind == kind]
            for j in stale:
                self._jobs.remove(j)
            heapq.heapify(self._jobs)
            if self._running is not None and self._running[0].kind == kind:
                self._running[1].cancel()
        job = _Job(
            PRIORITY[kind],
            next(self._order),
            kind,
            question,
            t,
            f"a{uuid.uuid4().hex[:12]}",
            monitor,
            asyncio.get_running_loop().create_future(),
            options or {},
        )
        heapq.heappush(self._jobs, job)
        self._job_ready.set()
        return job

    async def _react(self) -> None:
        while not self._closed:
            if not self._jobs:
                self._job_ready.clear()
                await self._job_ready.wait()
                continue
            job = heapq.heappop(self._jobs)
            task = asyncio.create_task(self._run_job(job))
            self._running = (job, task)
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if self._closed:
                    raise
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            finally:
                self._running = None

    async def _run_job(self, job: _Job) -> None:
        try:
            if job.kind == "sync":
                job.done.set_result(await self.session.engine.sync(self.session_id))
                return
            if job.kind == "probe":
                p = await self.session.engine.probe(self.session_id, job.question, job.t)
                trigger = job.monitor.observe(job.t, p)
                if trigger is not None:
                    self._fire(trigger)
                    if job.monitor.respond:
                        self._enqueue("instruction", job.monitor.prompt, job.t)
                job.done.set_result(p)
                return
            await self._answer(job)
        except asyncio.CancelledError:
            if job.kind not in ("sync", "probe"):
                self.events.emit(
                    AnswerFinished,
                    job.t,
                    answer_id=job.answer_id,
                    kind=job.kind,
                    question=job.question,
                    finish_reason="cancelled",
                )
            if not job.done.done():
                job.done.cancel()
            raise
        except Exception as exc:
            log.warning("answer %s failed: %s", job.answer_id, exc)
            log.debug("reaction failure", exc_info=True)
            self.events.emit(ErrorEvent, job.t, code="engine_error", message=str(exc), answer_id=job.answer_id)
            if not job.done.done():
                job.done.set_exception(exc)

    async def _answer(self, job: _Job) -> None:
        self.events.emit(AnswerStarted, job.t, answer_id=job.answer_id, kind=job.kind, question=job.question)
        options = {"remember": job.kind == "question", **job.options}
        stream = self.session.ask(job.question, job.t, kind=job.kind, **options)
        try:
            async for event in stream:
                if isinstance(event, AnswerDelta):
                    self.events.emit(AnswerDeltaEvent, job.t, answer_id=job.answer_id, text=event.text)
                elif isinstance(event, AnswerDone):
                    s = event.stats
                    done = self.events.emit(
                        AnswerFinished,
                        job.t,
                        answer_id=job.answer_id,
                        kind=job.kind,
                        question=job.question,
                        text=event.text,
                        finish_reason=s.finish_reason,
                        ttft_s=s.ttft_s,
                        total_s=s.total_s,
                        cached_tokens=s.cached_tokens,
                        prompt_tokens=s.prompt_tokens,
                        generated_tokens=s.generated_tokens,
                    )
                    job.done.set_result(done)
        finally:
            await stream.aclose()


class Orchestrator:
    """Creates, finds and closes live sessions that share one engine."""

    def __init__(self, engine: ReactionEngine, adapter: VisionLanguageAdapter | None, config: VigilConfig) -> None:
        self.engine = engine
        self.adapter = adapter
        self.config = config
        self.sessions: dict[str, LiveSession] = {}

    async def create_session(
        self, options: SessionOptions | None = None, config: VigilConfig | None = None, session_id: str | None = None
    ) -> LiveSession:
        """Start a session: ``options`` applied to ``config`` (default the orchestrator's); ValueError when invalid."""
        options = options or SessionOptions()
        session_config = options.apply(config or self.config)
        sid = session_id or f"s{uuid.uuid4().hex[:16]}"
        if sid in self.sessions:
            raise ValueError(f"session {sid!r} already exists")
        live = LiveSession(Session(sid, session_config, self.adapter, self.engine), options)
        await live.start()
        self.sessions[sid] = live
        return live

    def get(self, session_id: str) -> LiveSession:
        try:
            return self.sessions[session_id]
        except KeyError:
            raise KeyError(f"no session {session_id!r}") from None

    async def close_session(self, session_id: str, reason: str = "closed") -> None:
        live = self.sessions.pop(session_id, None)
        if live is None:
            raise KeyError(f"no session {session_id!r}")
        await live.close(reason)

    async def shutdown(self) -> None:
        for sid in list(self.sessions):
            await self.close_session(sid, "shutdown")
        await self.engine.shutdown()
