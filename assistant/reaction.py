"""The ReactionEngine protocol: what every engine (transformers, vLLM, remote) offers sessions.

A session tells its engine how its visual memory changed (``apply``: cheap, never blocks perception), and
asks questions (``answer``: streamed) or yes/no probes (``probe``). Engines bring pending memory changes into
their context lazily, so a question costs the prefill of the question plus what arrived since the last request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from assistant.config import EngineConfig
from memory.store import ContextBudget, Evict, MemoryEntry, Pool, Prune

AnswerKind = Literal["question", "instruction", "narration", "probe"]


@dataclass(frozen=True, slots=True)
class AddEntry:
    """A new memory entry to bring into the engine's context."""

    entry: MemoryEntry


MemoryChange = AddEntry | Evict | Prune | Pool
"""One change of a session's visual memory, in the order the memory made it."""


@dataclass(frozen=True, slots=True)
class AnswerRequest:
    """A question (or a proactive prompt) asked at stream time ``t``."""

    question: str
    t: float
    kind: AnswerKind = "question"
    max_new_tokens: int | None = None
    min_new_tokens: int = 0
    """Do not stop at an end-of-answer token before this many tokens (benchmarks of long answers)."""
    temperature: float | None = None
    seed: int | None = None
    """Sampling seed: the same seed, context and temperature give the same answer."""
    remember: bool = True
    """Keep the question and answer in the session's bounded text window."""
    recalled: tuple[MemoryEntry, ...] = ()
    """Archived entries brought back into the context for this answer only."""


@dataclass(frozen=True, slots=True)
class AnswerDelta:
    """A piece of a streamed answer."""

    text: str
    token_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class AnswerStats:
    """Cost of one answer."""

    synced_tokens: int = 0
    """Memory tokens prefilled for this request (what arrived since the last one)."""
    prompt_tokens: int = 0
    """Question tokens prefilled (including retrieved entries)."""
    cached_tokens: int = 0
    """Context tokens reused from the cache."""
    generated_tokens: int = 0
    retrieved_entries: int = 0
    ttft_s: float = 0.0
    total_s: float = 0.0
    finish_reason: Literal["stop", "length", "cancelled"] = "stop"


@dataclass(frozen=True, slots=True)
class AnswerDone:
    """The end of a streamed answer: the whole text and its cost."""

    text: str
    stats: AnswerStats = field(default_factory=AnswerStats)


AnswerEvent = AnswerDelta | AnswerDone


@dataclass(frozen=True, slots=True)
class EngineSessionStats:
    """What an engine holds for one session."""

    kv_tokens: int
    kv_bytes: int
    kv_cap: int
    segments: int
    pending_changes: int
    consolidations: int
    engine_evictions: int
    """Segments the engine evicted on its own: always 0 (the memory is the one record; engines mirror it)."""
    prefilled_tokens: int = 0
    """Tokens run through the model for this session so far (memory, questions, answers)."""


class EngineError(RuntimeError):
    """The engine failed to serve a request (the session stays usable)."""


class UnknownSessionError(KeyError):
    """No such session in the engine."""


QUESTION_RESERVE_TOKENS = 64
"""Context tokens kept free for a question beyond the answer's ``max_new_tokens`` (longer ones may not fit)."""


def memory_context_tokens(config: EngineConfig, header_tokens: int) -> int:
    """Context tokens a session's visual memory may fill: the KV cap less the header, the text window, a question
    and its answer. Raises EngineError when nothing is left."""
    reserved = header_tokens + config.text_window_tokens + config.max_new_tokens + QUESTION_RESERVE_TOKENS
    tokens = config.kv_cap_tokens - reserved
    if tokens < 1:
        raise EngineError(
            f"engine.kv_cap_tokens ({config.kv_cap_tokens}) leaves no room for the visual memory after the "
            f"system prompt ({header_tokens} tokens), the text window, a question and its answer ({reserved} in all)"
        )
    return tokens


@runtime_checkable
class ReactionEngine(Protocol):
    """Answers questions over a session's visual memory."""

    async def open_session(self, session_id: str) -> None:
        """Create the engine-side state of a session."""
        ...

    async def close_session(self, session_id: str) -> None:
        """Free everything the engine holds for a session."""
        ...

    def apply(self, session_id: str, changes: Sequence[MemoryChange]) -> None:
        """Queue memory changes (non-blocking); they reach the context before the next request."""
        ...

    async def sync(self, session_id: str) -> int:
        """Bring queued changes into the context now; returns tokens prefilled."""
        ...

    def answer(self, session_id: str, request: AnswerRequest) -> AsyncIterator[AnswerEvent]:
        """Stream an answer: AnswerDelta pieces, then one AnswerDone. Closing the iterator cancels it."""
        ...

    async def probe(self, session_id: str, question: str, t: float) -> float:
        """P(yes) for a yes/no question about the stream so far."""
        ...

    def context_budget(self) -> ContextBudget:
        """The bound a new session's memory must keep so that the engine's context fits its KV cap (one per
        session): the engine mirrors the memory and never evicts on its own."""
        ...

    def session_stats(self, session_id: str) -> EngineSessionStats: ...

    async def shutdown(self) -> None: ...


EngineFactory = Callable[[EngineConfig], ReactionEngine]
"""Builds an engine from its config (callers above ``assistant/`` decide which implementation)."""
