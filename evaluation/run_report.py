"""What a benchmark run did and what it cost, and the progress it reports (no model or engine imported)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class RunReport:
    """What a run did and what it cost."""

    mode: str
    queries: int = 0
    answered: int = 0
    skipped_done: int = 0
    missing_videos: list[str] = field(default_factory=list)
    failed_videos: list[str] = field(default_factory=list)
    prefill_tokens: int = 0
    stream_seconds: float = 0.0
    """Stream time played (replay plays each video once per question)."""
    video_seconds: float = 0.0
    """Distinct video time the questions answered now needed (each source video up to its last question)."""
    seconds: float = 0.0
    concurrency: int = 1

    @property
    def seconds_per_video_minute(self) -> float:
        """Wall seconds per minute of benchmark video."""
        return self.seconds / (self.video_seconds / 60) if self.video_seconds else 0.0

    @property
    def seconds_per_query(self) -> float:
        """Wall seconds per query answered now."""
        return self.seconds / self.answered if self.answered else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The report with its derived rates."""
        from dataclasses import asdict

        return {
            **asdict(self),
            "seconds_per_video_minute": self.seconds_per_video_minute,
            "seconds_per_query": self.seconds_per_query,
        }


class Progress:
    """Counts of the work done now: ``start`` adds what a part of the run has to do, ``advance`` counts answers,
    ``discount`` what a failure leaves undone.

    The base class counts; front ends subclass it to draw a bar.
    """

    def __init__(self) -> None:
        self.total = 0
        self.done = 0

    def start(self, total: int) -> None:
        """A part of the run has ``total`` more queries to answer."""
        self.total += total

    def advance(self, n: int = 1) -> None:
        self.done += n

    def discount(self, n: int) -> None:
        """``n`` queries will not be answered in this run (their video failed)."""
        self.total -= n
