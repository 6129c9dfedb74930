"""Event streams of sessions: one answer's events, and every event resumable by sequence number.

Live events come from the session's own log; what the log no longer holds, or a session that ended or ran on a
worker that restarted, is read from the directory's mirror.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from assistant.events import SessionEvent
from serving.directory import DirectoryError, SessionDirectory, SessionRecord
from serving.errors import closed, directory_call
from serving.hosted import Hosted
from serving.mirror import lost_marker
from serving.registry import SessionRegistry

KEEPALIVE_S = 15.0


class EventStreams:
    """Follows the events of hosted sessions and replays those of ended ones from the directory."""

    def __init__(self, registry: SessionRegistry, directory: SessionDirectory) -> None:
        self.registry = registry
        self.directory = directory

    async def answer_events(self, h: Hosted, answer_id: str, after: int) -> AsyncIterator[SessionEvent | None]:
        """The answer's events (start, deltas, done or error) as they happen; None now and then as a keepalive.

        ServiceError 410 when the session ends before the answer does.
        """
        cursor = after
        h.subscribers += 1
        try:
            while True:
                batch = await h.live.events.wait(cursor, KEEPALIVE_S)
                if not batch:
                    if h.live.events.closed:
                        raise closed("the session ended before the answer")
                    yield None
                    continue
                cursor = batch[-1].seq
                for event in batch:
                    if getattr(event, "answer_id", None) != answer_id:
                        continue
                    yield event
                    if event.type in ("answer_done", "error"):
                        return
        finally:
            h.subscribers -= 1

    async def events(self, owner: str, session_id: str, after: int) -> AsyncIterator[dict[str, Any] | None]:
        """Every event after ``after`` (live ones as they happen; None as a keepalive), resumable by seq."""
        h = self.registry.mine(owner, session_id)
        if h is None:
            record = await self.registry.elsewhere(owner, session_id)
            async for event in self._replay(record, after):  # ended, or its worker is gone
                yield event
            return
        h.subscribers += 1
        cursor = after
        try:
            yield None  # the response starts at once, before the first event
            while True:
                batch = await h.live.events.wait(cursor, KEEPALIVE_S)
                if not batch:
                    if h.live.events.closed:
                        return
                    yield None
                    continue
                if batch[0].seq > cursor + 1:  # older than the kept history
                    async for event in self._fill(session_id, cursor, batch[0].seq):
                        yield event
                for event in batch:
                    yield event.to_dict()
                cursor = batch[-1].seq
        finally:
            h.subscribers -= 1

    async def _fill(self, session_id: str, after: int, before: int) -> AsyncIterator[dict[str, Any]]:
        """Events in (after, before) from the mirror, or one ``events_lost`` record for what is gone."""
        found: list[dict[str, Any]] = []
        if self.directory.shared:
            with contextlib.suppress(DirectoryError):
                found = await self.directory.events(session_id, after, limit=before - after - 1)
        found = [e for e in found if e["seq"] < before]
        for event in found:
            yield event
        first_missing = found[-1]["seq"] + 1 if found else after + 1
        if first_missing < before:
            yield {"type": "events_lost", "first_seq": first_missing, "last_seq": before - 1}

    async def _replay(self, record: SessionRecord, after: int) -> AsyncIterator[dict[str, Any]]:
        """The mirrored events after ``after`` to the end of the mirror, ``events_lost`` for a gap in it, and the
        ``session_closed`` of a session that ended with its worker."""
        cursor, last = after, None
        while True:
            batch = await directory_call(self.directory.events(record.id, cursor))
            if not batch:
                break
            for event in batch:
                if event["seq"] > cursor + 1 and event.get("type") != "events_lost":  # never mirrored
                    yield lost_marker(record.id, cursor + 1, event["seq"] - 1, event.get("t", 0.0))
                yield event
                cursor, last = event["seq"], event
            if len(batch) < 1000:
                break
        if record.status == "lost" and (last is None or last.get("type") != "session_closed"):
            seq, t = (last["seq"] + 1, last.get("t", 0.0)) if last else (after + 1, 0.0)
            yield {
                "type": "session_closed",
                "seq": max(seq, after + 1),
                "session_id": record.id,
                "t": t,
                "reason": record.end_reason or "worker_lost",
            }
