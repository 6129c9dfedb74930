"""One worker thread for an engine's model work, taking work by priority across every session.

A FIFO thread makes a question wait behind every other session's memory syncs. Here each piece of work carries
its job's priority (``assistant.jobs.PRIORITY``: question 0 < instruction 1 < narration 2 < probe 3 < sync 4; work
of the same priority runs in the order it came), and the thread always runs the most urgent piece next. An
answer is many pieces (prefill, then one per token); between two of its tokens the event loop samples, so after
each piece the thread waits ``linger_s`` for more work at least as urgent before it starts anything less urgent.
Sessions' answers therefore interleave token by token, and a sync or probe only runs when no answer is waiting.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any


@dataclass(order=True, slots=True)
class _Work:
    priority: int
    order: int
    fn: Callable[..., Any] = field(compare=False)
    args: tuple[Any, ...] = field(compare=False)
    future: Future = field(compare=False)
    queued: float = field(compare=False)


@dataclass(slots=True)
class SchedulerStats:
    """What the scheduler ran, by priority: pieces of work and their longest wait in the queue."""

    runs: dict[int, int] = field(default_factory=dict)
    max_wait_s: dict[int, float] = field(default_factory=dict)


class PriorityExecutor:
    """A single worker thread that runs submitted callables most urgent first (lower priority value first)."""

    def __init__(self, name: str = "vigil-engine", linger_s: float = 0.004) -> None:
        self.linger_s = linger_s
        self.stats = SchedulerStats()
        self.trace: list[int] | None = None
        """When a list, the priority of every piece of work is appended as it starts (tests, diagnostics)."""
        self._heap: list[_Work] = []
        self._order = itertools.count()
        self._cv = threading.Condition()
        self._closed = False
        self._last_priority: int | None = None
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, priority: int, fn: Callable[..., Any], *args: Any) -> Future:
        """Queue ``fn(*args)`` at ``priority``; its future resolves with the result (or the exception)."""
        future: Future = Future()
        with self._cv:
            if self._closed:
                raise RuntimeError("the engine's scheduler is shut down")
            heapq.heappush(self._heap, _Work(priority, next(self._order), fn, args, future, time.monotonic()))
            self._cv.notify()
        return future

    async def run(self, priority: int, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the worker thread at ``priority``; cancelling the caller skips work not yet started."""
        return await asyncio.wrap_future(self.submit(priority, fn, *args))

    def pending(self) -> int:
        """Pieces of work waiting."""
        with self._cv:
            return len(self._heap)

    def shutdown(self, wait: bool = True) -> None:
        """Run what is queued, then stop the thread."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        if wait:
            self._thread.join()

    def _next(self) -> _Work | None:
        with self._cv:
            lingered = False
            while True:
                if not self._heap:
                    if self._closed:
                        return None
                    self._cv.wait()
                    continue
                head = self._heap[0]
                last = self._last_priority
                if not lingered and last is not None and head.priority > last and not self._closed:
                    lingered = True  # the answer that just ran may want its next token: give it the chance
                    self._cv.wait(self.linger_s)
                    continue
                return heapq.heappop(self._heap)

    def _work(self) -> None:
        while (work := self._next()) is not None:
            self._last_priority = work.priority
            if not work.future.set_running_or_notify_cancel():
                continue
            waited = time.monotonic() - work.queued
            if self.trace is not None:
                self.trace.append(work.priority)
            stats = self.stats
            stats.runs[work.priority] = stats.runs.get(work.priority, 0) + 1
            stats.max_wait_s[work.priority] = max(stats.max_wait_s.get(work.priority, 0.0), waited)
            try:
                result = work.fn(*work.args)
            except BaseException as exc:  # handed to whoever awaits the future
                work.future.set_exception(exc)
            else:
                work.future.set_result(result)
