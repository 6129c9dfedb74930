"""Questions and standing instructions for a hosted session, with the errors clients get for them."""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple

from assistant.config import MAX_INSTRUCTIONS, LimitsConfig, VigilConfig
from assistant.decision import InstructionMonitor
from assistant.events import AnswerFinished
from assistant.orchestrator import SessionClosedError
from assistant.reaction import QUESTION_RESERVE_TOKENS
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


def prompt_room(config: VigilConfig, max_new_tokens: int | None = None) -> int:
    """Tokens a question (with its time stamp and chat framing) may take: the engine's question allowance plus
    what a shorter answer than the configured one leaves free."""
    spare = config.engine.max_new_tokens - max_new_tokens if max_new_tokens is not None else 0
    return QUESTION_RESERVE_TOKENS + max(0, spare)


def check_prompt(layout: Any, text: str, room: int, what: str) -> None:
    """413 ``{what}_too_long`` when ``text`` asked as a question would not fit the engine's question allowance."""
    if layout is None:
        return
    n = len(layout.question_ids(0.0, text))
    if n > room:
        raise ServiceError(
            413,
            f"{what}_too_long",
            f"the {what} takes {n} tokens with its framing; at most {room} fit the engine's question allowance",
        )


def ask(h: Hosted, question: str, t: float | None, limits: LimitsConfig, **options: Any) -> QueuedAnswer:
    """Queue a question (options left None take the session's defaults).

    413 too long (characters, or tokens the engine cannot take), 429 too many queued, 410 closed, 422 invalid.
    """
    if len(question) > limits.max_question_chars:
        raise ServiceError(413, "question_too_long", f"questions are limited to {limits.max_question_chars} characters")
    options = {k: v for k, v in options.items() if v is not None}
    check_prompt(_layout(h), question, prompt_room(h.config, options.get("max_new_tokens")), "question")
    if h.live.jobs.count("question") >= limits.max_queued_questions:
        raise ServiceError(
            429,
            "too_many_questions",
            f"this session has {limits.max_queued_questions} questions queued or running; wait for an answer",
            headers={"Retry-After": "1"},
        )
    after = h.live.events.last_seq
    try:
        answer_id, future = h.live.ask(question, t, **options)
    except SessionClosedError as exc:
        raise closed(str(exc)) from None
    except ValueError as exc:
        raise ServiceError(422, "invalid_question", str(exc)) from None
    return QueuedAnswer(h, answer_id, future, after)


def _layout(h: Hosted) -> Any:
    return getattr(h.live.session.adapter, "layout", None)


async def wait_answer(future: asyncio.Future, hosted: Hosted | None = None) -> AnswerFinished:
    """The finished answer, or ServiceError: 409 cancelled, 410 session closed (or deleted meanwhile), 502 engine
    failed."""
    try:
        return await future
    except asyncio.CancelledError:
        if hosted is not None and hosted.live.closed:
            raise closed("the session ended before the answer") from None
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
    check_instruction(_layout(h), h.config, text)
    if len(h.live.monitors) >= MAX_INSTRUCTIONS:
        raise ServiceError(
            422, "too_many_instructions", f"at most {MAX_INSTRUCTIONS} standing instructions per session"
        )
    try:
        h.live.add_instruction(InstructionMonitor(text))
    except SessionClosedError as exc:
        raise closed(str(exc)) from None
    return text


def check_instruction(layout: Any, config: VigilConfig, instruction: str) -> None:
    """413 when a standing instruction, asked as its yes/no probe, would not fit the engine's allowance."""
    if layout is not None:
        probe = layout.probe_question(instruction)
        check_prompt(layout, probe, QUESTION_RESERVE_TOKENS + config.engine.max_new_tokens, "instruction")
