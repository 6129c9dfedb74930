"""A hosted session's events mirrored to the shared directory, retried from the last confirmed sequence number.

While Redis refuses writes the cursor stays where the mirror last confirmed; once it answers again the missing
events are written from the session's own log. What the log no longer holds is marked in the mirror with one
``events_lost`` event (``first_seq`` .. ``last_seq``, under the seq of the last lost event), so a client that resumes
from the mirror is told about the gap instead of skipping it.
"""

from __future__ import annotations

import logging
from typing import Any

from assistant.event_log import EventLog
from serving.directory import DirectoryError, SessionDirectory

log = logging.getLogger(__name__)


def lost_marker(session_id: str, first_seq: int, last_seq: int, t: float) -> dict[str, Any]:
    """The event that stands for events ``first_seq`` .. ``last_seq`` no one can read any more."""
    return {
        "type": "events_lost",
        "seq": last_seq,
        "session_id": session_id,
        "t": t,
        "first_seq": first_seq,
        "last_seq": last_seq,
    }


class EventMirror:
    """Copies one session's events to the directory; ``confirmed`` is the last seq the directory holds."""

    def __init__(self, session_id: str, events: EventLog, directory: SessionDirectory) -> None:
        self.session_id = session_id
        self.events = events
        self.directory = directory
        self.confirmed = 0
        self._failing = False
        self.reset = False
        """Set when the directory lost this session (Redis restarted empty): mirror again what the log holds."""

    @property
    def behind(self) -> bool:
        """Events of the log the directory does not hold yet."""
        return self.confirmed < self.events.last_seq

    async def flush(self) -> bool:
        """Write every event after the confirmed one; False when the directory refused (retried next time)."""
        try:
            if self.reset:
                self.reset, self.confirmed = False, 0
            if self._failing:  # a failed write may have landed: start after what the mirror really holds
                last = await self.directory.last_event(self.session_id)
                self.confirmed = max(self.confirmed, last["seq"] if last else 0)
            pending = self.events.since(self.confirmed)
            if not pending:
                self._failing = False
                return True
            batch = [e.to_dict() for e in pending]
            if pending[0].seq > self.confirmed + 1:  # the log dropped what was never written
                batch.insert(0, lost_marker(self.session_id, self.confirmed + 1, pending[0].seq - 1, pending[0].t))
            await self.directory.append_events(self.session_id, batch)
        except DirectoryError as exc:
            if not self._failing:
                log.warning("events of %s not mirrored yet (retrying): %s", self.session_id, exc)
            self._failing = True
            return False
        self._failing = False
        self.confirmed = pending[-1].seq
        return True
