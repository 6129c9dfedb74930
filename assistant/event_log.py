"""The event log of one session: gap-free sequence numbers, a bounded history, resume after any kept seq."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from assistant.events import SessionEvent


class EventLog:
    """Per-session events with gap-free sequence numbers; subscribers can resume after any kept seq."""

    def __init__(self, session_id: str, history: int) -> None:
        self.session_id = session_id
        self._events: deque[SessionEvent] = deque(maxlen=history)
        self._seq = itertools.count(1)
        self._wake = asyncio.Event()  # set and replaced on every change; followers wait on the one they saw
        self.closed = False

    def emit(self, cls: type[SessionEvent], t: float, **fields: Any) -> SessionEvent:
        """Record an event of type ``cls`` at stream time ``t`` with the next sequence number."""
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
