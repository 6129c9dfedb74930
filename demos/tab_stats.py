"""The figures of a tab's session, as one typed value (the stats endpoint returns it as JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from demos.settings import SessionSettings


@dataclass(frozen=True, slots=True)
class LiveFigures:
    """What the running session has done: frames, steps, tokens kept and dropped, memory, answer latency."""

    stream_t: float
    processed_frames: int
    frames_dropped: dict[str, int]
    """Frames not perceived, by reason (backpressure, invalid, failed)."""
    frame_drop_share: float
    steps: int
    tokens_seen: int
    tokens_kept: int
    drop_ratio: float
    """Share of visual tokens dropped, weighted by tokens."""
    memory_tokens: int
    memory_budget: int
    archived_entries: int
    answers: int
    last_ttft_s: float | None
    last_total_s: float | None
    last_seq: int
    """The last event applied to the tab's transcript."""


@dataclass(frozen=True, slots=True)
class TabStats:
    """A tab's session: its ids, settings and state, and the live figures once it has a session."""

    session_id: str
    """The tab's id (the plain endpoints take it)."""
    live_session_id: str | None
    """The service session's id (what ``/v1/sessions`` lists)."""
    settings: SessionSettings | None
    ended: str | None
    error: str | None
    playing: str | None
    live: LiveFigures | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, flat: the live figures beside the ids (none before the session started)."""
        out: dict[str, Any] = {
            "session_id": self.session_id,
            "live_session_id": self.live_session_id,
            "settings": self.settings.view() if self.settings is not None else None,
            "ended": self.ended,
            "error": self.error,
            "playing": self.playing,
        }
        if self.live is not None:
            out.update(asdict(self.live))
        return out
