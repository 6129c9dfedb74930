"""Scheduled questions and their answers, as ``vigil watch`` and the benchmarks ask and report them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from assistant.reaction import AnswerDelta, AnswerDone
from assistant.session import Session


@dataclass(frozen=True, slots=True)
class ScheduledQuestion:
    """A question to ask when the stream reaches ``t`` seconds."""

    t: float
    question: str

    @classmethod
    def parse(cls, spec: str) -> ScheduledQuestion:
        """Parse ``SECONDS:question``."""
        head, sep, question = spec.partition(":")
        try:
            t = float(head)
        except ValueError:
            t = -1.0
        if not sep or t < 0 or not question.strip():
            raise ValueError(f"expected SECONDS:question with SECONDS >= 0, got {spec!r}")
        return cls(t, question.strip())


@dataclass(frozen=True, slots=True)
class AnswerRecord:
    """A finished answer with its timing, as reported by ``vigil watch``."""

    t: float
    question: str
    answer: str
    ttft_s: float
    total_s: float
    synced_tokens: int
    prompt_tokens: int
    cached_tokens: int
    generated_tokens: int
    memory_tokens: int
    stream_t_at_done: float

    def as_event(self) -> dict[str, object]:
        """JSON-ready event (floats rounded)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"type": "answer", **{k: round(v, 4) if isinstance(v, float) else v for k, v in fields.items()}}


OnDelta = Callable[[ScheduledQuestion, str], None]


async def answer_one(
    session: Session, q: ScheduledQuestion, now: Callable[[], float], on_delta: OnDelta | None = None
) -> AnswerRecord:
    """Ask one question and collect its streamed answer."""
    memory_tokens = session.memory.tokens_held
    async for event in session.ask(q.question, q.t):
        if isinstance(event, AnswerDelta) and on_delta is not None:
            on_delta(q, event.text)
        elif isinstance(event, AnswerDone):
            s = event.stats
            return AnswerRecord(
                q.t,
                q.question,
                event.text,
                s.ttft_s,
                s.total_s,
                s.synced_tokens,
                s.prompt_tokens,
                s.cached_tokens,
                s.generated_tokens,
                memory_tokens,
                now(),
            )
    raise RuntimeError("the engine ended an answer without AnswerDone")
