"""Questions and standing instructions for a hosted session, with the errors clients get for them."""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple

from assistant.config import MAX_INSTRUCTIONS
from assistant.decision import InstructionMonitor
from assistant.events import AnswerFinished
from assistant.orchestrator import SessionClosedError
from serving.errors import ServiceError, closed
from serving.hosted import Hosted


class QueuedAnswer(NamedTuple):
    """A question in a session's queue: where to follow its answer."""

    hosted: Hosted
    answer_id: str
    future: asyncio.Future
    """Resolves to the AnswerFinished (or fails: cancelled, session closed, engine error)."""
    after: int
    """The session's last event seq when the question was queued: its events come after it."""


def ask(h: Hosted, question: str, t: float | None, max_chars: int, **options: Any) -> QueuedAnswer:
    """Queue a question (options left None take the session's defaults); 413 too long, 410 closed, 422 invalid."""
    if len(question) > max_chars:
        raise ServiceError(413, "question_too_long", f"questions are limited to {max_chars}")
    options = {k: v for k, v in options.items() if v is not None}
    after = h.live.events.last_seq
    try:
        answer_id, future = h.live.ask(question, t, **options)
    except SessionClosedError as exc:
        raise closed(str(exc)) from None
    except ValueError as exc:
        raise ServiceError(422, "invalid_question", str(exc)) from None
    return QueuedAnswer(h, answer_id, future, after)


async def wait_answer(future: asyncio.Future) -> AnswerFinished:
    """The finished answer, or ServiceError: 409 cancelled, 410 session closed, 502 engine failed."""
    try:
        return await future
    except asyncio.CancelledError:
        raise ServiceError(409, "answer_cancelled", "the answer was cancelled") from None
    except SessionClosedError as exc:
        raise closed(str(exc)) from None
    except Exception as exc:
        raise ServiceError(502, "engine_error", f"the engine failed: {exc}") from None


def add_instruction(h: Hosted, instruction: str) -> str:
    """Add a standing instruction, checked from now on; returns it stripped.

    422 when it is empty or the session holds ``MAX_INSTRUCTIONS`` already (each one costs probes), 410 when the
    session has closed.
    """
    text = instruction.strip()
    if not text:
        raise ServiceError(422, "invalid_instruction", "the instruction is empty")
    if len(h.live.monitors) >= MAX_INSTRUCTIONS:
        raise ServiceError(
            422, "too_many_instructions", f"at most {MAX_INSTRUCTIONS} standing instructions per session"
        )
    try:
        h.live.add_instruction(InstructionMonitor(text))
    except SessionClosedError as exc:
        raise closed(str(exc)) from None
    return text
