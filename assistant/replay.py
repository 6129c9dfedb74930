"""Play a frame source through a session as a live stream, asking scheduled questions at their stream times."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from assistant.reaction import AnswerDelta, AnswerDone
from assistant.session import Session
from assistant.sources import FrameSource, aiter_frames


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


async def play(
    session: Session,
    source: FrameSource,
    questions: Sequence[ScheduledQuestion],
    on_answer: Callable[[AnswerRecord], Awaitable[None] | None] | None = None,
    on_delta: OnDelta | None = None,
) -> list[AnswerRecord]:
    """Feed every frame to the session; ask each question once the stream reaches its time.

    Perception keeps running while answers generate; questions past the end are asked when the stream ends.
    """
    pending = sorted(questions, key=lambda q: q.t)
    stream_t = 0.0
    tasks: list[asyncio.Task[AnswerRecord]] = []

    async def run(q: ScheduledQuestion) -> AnswerRecord:
        record = await answer_one(session, q, lambda: stream_t, on_delta)
        if on_answer is not None:
            result = on_answer(record)
            if asyncio.iscoroutine(result):
                await result
        return record

    async for frame in aiter_frames(source):
        while pending and frame.t >= pending[0].t:
            tasks.append(asyncio.create_task(run(pending.pop(0))))
            await asyncio.sleep(0)
        await asyncio.to_thread(session.ingest, frame)
        stream_t = frame.t
    await asyncio.to_thread(session.flush)
    for q in pending:
        tasks.append(asyncio.create_task(run(q)))
    return list(await asyncio.gather(*tasks))
