"""The reaction jobs of one session: a priority queue (question > instruction > narration > probe > sync).

A user question interrupts a running proactive answer; a newer narration supersedes a queued or running one;
any queued or running job can be cancelled by its answer id.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from assistant.decision import InstructionMonitor
from assistant.errors import SessionClosedError

JobKind = Literal["question", "instruction", "narration", "probe", "sync"]
PRIORITY: dict[JobKind, int] = {"question": 0, "instruction": 1, "narration": 2, "probe": 3, "sync": 4}
"""Lower runs first; jobs of one priority run in the order they were queued."""
PROACTIVE: tuple[JobKind, ...] = ("narration", "instruction")
"""Answers the session gives on its own, which a user question does not wait for."""


@dataclass(order=True, slots=True)
class Job:
    """One thing for the reaction engine to do; ``done`` resolves with its result."""

    priority: int
    order: int
    kind: JobKind = field(compare=False)
    question: str = field(compare=False)
    t: float = field(compare=False)
    """Stream time the job is about (what the answer may see)."""
    answer_id: str = field(compare=False)
    done: asyncio.Future = field(compare=False)
    """Resolves with the AnswerFinished event (answers), P(yes) (probes) or tokens prefilled (sync)."""
    monitor: InstructionMonitor | None = field(compare=False, default=None)
    """The standing instruction a probe is for."""
    options: dict[str, Any] = field(compare=False, default_factory=dict)
    """Engine request options (max_new_tokens, min_new_tokens, temperature)."""
    text: str = field(compare=False, default="")
    """The answer so far (what a cancelled answer had said)."""
    generated: int = field(compare=False, default=0)
    """Tokens generated so far."""

    def fail(self, error: BaseException) -> None:
        """Resolve ``done`` with ``error``: raised to whoever asked a question, a cancellation for the session's
        own jobs (nobody awaits those; an exception there would only be logged as never retrieved)."""
        if self.done.done():
            return
        if self.kind == "question":
            self.done.set_exception(error)
        else:
            self.done.cancel()


class JobQueue:
    """Queued jobs by priority, and the one running job with its task."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.running: tuple[Job, asyncio.Task] | None = None
        self.closed = False
        self._heap: list[Job] = []
        self._ready = asyncio.Event()
        self._order = itertools.count()

    def __len__(self) -> int:
        """Jobs queued (not counting the running one)."""
        return len(self._heap)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing running."""
        return not self._heap and self.running is None

    def put(
        self,
        kind: JobKind,
        question: str,
        t: float,
        *,
        monitor: InstructionMonitor | None = None,
        supersede: bool = False,
        options: dict[str, Any] | None = None,
    ) -> Job:
        """Queue a job; ``supersede`` first drops queued jobs of its kind and cancels a running one."""
        if self.closed:
            raise SessionClosedError(f"session {self.session_id} is closed")
        if supersede:  # a newer proactive message replaces a stale one
            for stale in self._remove(lambda job: job.kind == kind):
                stale.done.cancel()
            self.interrupt(kind)
        loop = asyncio.get_running_loop()
        job = Job(
            PRIORITY[kind], next(self._order), kind, question, t, f"a{uuid.uuid4().hex[:12]}", loop.create_future()
        )
        job.monitor, job.options = monitor, options or {}
        heapq.heappush(self._heap, job)
        self._ready.set()
        return job

    def has(self, kind: JobKind, monitor: InstructionMonitor | None = None) -> bool:
        """Whether a job of ``kind`` (for ``monitor``, when given) is queued or running."""
        jobs = [*self._heap, *([self.running[0]] if self.running else [])]
        return any(j.kind == kind and (monitor is None or j.monitor is monitor) for j in jobs)

    def count(self, kind: JobKind) -> int:
        """Jobs of ``kind`` queued or running."""
        running = self.running is not None and self.running[0].kind == kind
        return sum(j.kind == kind for j in self._heap) + running

    def interrupt(self, *kinds: JobKind) -> None:
        """Cancel the running job if it is of one of ``kinds``."""
        if self.running is not None and self.running[0].kind in kinds:
            self.running[1].cancel()

    def cancel(self, answer_id: str) -> bool:
        """Cancel a queued or running job by answer id; True when something was cancelled."""
        removed = self._remove(lambda job: job.answer_id == answer_id)
        for job in removed:
            if not job.done.done():
                job.done.cancel()
        if removed:
            return True
        if self.running is not None and self.running[0].answer_id == answer_id:
            self.running[1].cancel()
            return True
        return False

    async def take(self) -> Job | None:
        """The next job by priority, waiting for one; None once the queue is closed.

        A probe about an earlier stream time runs first: later memory waits for it, so whatever comes after it
        would not see the newest frames.
        """
        while not self._heap:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        job = heapq.heappop(self._heap)
        earlier = [j for j in self._heap if j.kind == "probe" and j.t < job.t]
        if job.kind != "probe" and earlier:
            probe = min(earlier, key=lambda j: (j.t, j.order))
            self._heap.remove(probe)
            self._heap.append(job)
            heapq.heapify(self._heap)
            return probe
        return job

    def close(self, error: BaseException) -> None:
        """Refuse new jobs, cancel the running one, and fail the queued ones with ``error``."""
        self.closed = True
        self._ready.set()
        if self.running is not None:
            self.running[1].cancel()
        for job in self._heap:
            job.fail(error)
        self._heap.clear()

    def _remove(self, match: Callable[[Job], bool]) -> list[Job]:
        removed = [job for job in self._heap if match(job)]
        if removed:
            self._heap = [job for job in self._heap if not match(job)]
            heapq.heapify(self._heap)
        return removed
