"""The reaction-engine protocol and its types: what every engine offers sessions, and the request defaults."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import torch

from assistant.reaction import (
    AddEntry,
    AnswerDone,
    AnswerRequest,
    AnswerStats,
    EngineError,
    ReactionEngine,
    UnknownSessionError,
)
from memory.store import MemoryEntry
from serving.engines.hf import HFEngine


class _HalfEngine:
    """Answers, but cannot probe, sync or report: not a ReactionEngine."""

    async def open_session(self, session_id: str) -> None: ...

    async def close_session(self, session_id: str) -> None: ...

    def answer(self, session_id: str, request: AnswerRequest) -> None: ...


def test_the_transformers_engine_satisfies_the_protocol(tiny_adapter) -> None:
    engine = HFEngine(tiny_adapter)
    assert isinstance(engine, ReactionEngine)
    assert not isinstance(_HalfEngine(), ReactionEngine)
    with pytest.raises(UnknownSessionError, match="no session 'missing' in the engine"):
        engine.session_stats("missing")
    assert issubclass(UnknownSessionError, KeyError) and issubclass(EngineError, RuntimeError)
    asyncio.run(engine.shutdown())


def test_answer_request_defaults() -> None:
    request = AnswerRequest("what is there?", 2.5)
    assert (request.question, request.t, request.kind) == ("what is there?", 2.5, "question")
    assert (request.max_new_tokens, request.min_new_tokens, request.temperature) == (None, 0, None)
    assert request.remember is True and request.recalled == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.t = 3.0  # type: ignore[misc]


def test_answer_done_carries_zero_cost_by_default() -> None:
    done = AnswerDone("a red car")
    assert done.stats == AnswerStats() and done.stats.finish_reason == "stop"
    assert (done.stats.prompt_tokens, done.stats.cached_tokens, done.stats.generated_tokens) == (0, 0, 0)
    assert AnswerDone("x").stats is not done.stats  # each answer its own stats


def test_add_entry_wraps_a_memory_entry() -> None:
    entry = MemoryEntry(
        entry_id=3,
        chunk_index=1,
        t_start=1.0,
        t_end=2.0,
        token_indices=torch.tensor([0, 5]),
        positions=torch.zeros(3, 2, dtype=torch.long),
    )
    change = AddEntry(entry)
    assert change.entry is entry and change == AddEntry(entry)
