"""A session: frames of a real clip -> perception -> the bounded memory -> the engine mirrors its operations."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from assistant.config import VigilConfig
from assistant.reaction import AnswerDelta, AnswerDone
from assistant.session import Session
from assistant.sources import Frame, VideoFileSource
from serving.engines.hf import HFEngine

STEP_TOKENS = 60
"""Tokens of one step of the bikes clip at the tiny model's pixel budget (a 5 x 12 grid)."""


def _config(budget: int = 2048) -> VigilConfig:
    return VigilConfig(
        perception={"fps": 2.0, "drop": {"mode": "pixel"}},
        memory={"budget_tokens": budget},
        engine={"max_new_tokens": 4},
    )


def _frames(real_clips: dict[str, Path], seconds: float) -> list[Frame]:
    return list(VideoFileSource(real_clips["bikes"], fps=2, end=seconds))


def _session(tiny_adapter, config: VigilConfig) -> tuple[Session, HFEngine]:
    engine = HFEngine(tiny_adapter, config.engine)
    session = Session("s1", config, tiny_adapter, engine)
    asyncio.run(session.start())
    return session, engine


def test_ingest_stores_each_step_and_queues_it_for_the_engine(tiny_adapter, real_clips) -> None:
    session, engine = _session(tiny_adapter, _config())
    frames = _frames(real_clips, 4.0)
    updates = [session.ingest(frame) for frame in frames]
    assert [u is not None for u in updates] == [False, True] * 4  # two frames a step
    steps = [u for u in updates if u is not None]
    assert [u.step for u in steps] == [0, 1, 2, 3] and all(u.num_tokens == STEP_TOKENS for u in steps)
    assert [u.t_start for u in steps] == [frames[i].t for i in (0, 2, 4, 6)]
    entries = session.memory.entries
    assert [e.t_start for e in entries] == [u.t_start for u in steps]
    assert session.memory.tokens_held == sum(u.num_kept for u in steps)
    assert engine.session_stats("s1").pending_changes == 4  # one AddEntry a step, nothing evicted
    stats = session.stats()
    assert (stats.frames, stats.steps, stats.tokens_seen) == (8, 4, 4 * STEP_TOKENS)
    assert stats.tokens_kept == stats.memory_tokens == session.memory.tokens_held
    assert stats.memory_entries == 4 and stats.memory_budget == 2048 and stats.archived_entries == 0
    asyncio.run(engine.shutdown())


def test_a_tight_budget_evicts_and_the_engine_mirrors_the_memory(tiny_adapter, real_clips) -> None:
    session, engine = _session(tiny_adapter, _config(budget=2 * STEP_TOKENS))
    for frame in _frames(real_clips, 6.0):
        session.ingest(frame)
        assert session.memory.tokens_held <= 2 * STEP_TOKENS
    assert session.stats().steps == 6 and len(session.memory.entries) <= 2
    assert engine.session_stats("s1").pending_changes > 6  # the AddEntry of each step and the evictions
    asyncio.run(engine.sync("s1"))
    held = engine.session_stats("s1")
    assert held.pending_changes == 0
    assert held.segments == 1 + len(session.memory.entries)  # the system prompt and one segment per entry
    asyncio.run(engine.shutdown())


def test_a_question_is_answered_on_the_memory_without_rereading_it(tiny_adapter, real_clips) -> None:
    session, engine = _session(tiny_adapter, _config())
    for frame in _frames(real_clips, 2.0):
        session.ingest(frame)
    synced = asyncio.run(engine.sync("s1"))
    cached = engine.session_stats("s1").kv_tokens
    assert synced > 0

    async def ask() -> list:
        return [event async for event in session.ask("what is moving?", 2.0)]

    events = asyncio.run(ask())
    assert all(isinstance(e, AnswerDelta) for e in events[:-1]) and isinstance(events[-1], AnswerDone)
    done = events[-1]
    assert done.text == "".join(e.text for e in events[:-1])
    assert done.stats.cached_tokens == cached and done.stats.synced_tokens == 0  # the memory was not re-read
    assert done.stats.generated_tokens == 4 and done.stats.finish_reason == "length"
    assert session.memory.round == 1  # a question starts a new dialogue round
    asyncio.run(engine.shutdown())


def test_flush_stores_a_partial_last_step(tiny_adapter, real_clips) -> None:
    session, engine = _session(tiny_adapter, _config())
    frames = _frames(real_clips, 1.5)
    assert len(frames) == 3
    for frame in frames:
        session.ingest(frame)
    last = session.flush()
    assert last is not None and last.frame_indices == (2,) and last.t_start == frames[2].t
    assert session.flush() is None
    assert len(session.memory.entries) == 2
    asyncio.run(engine.shutdown())


def test_a_step_larger_than_the_budget_is_refused(tiny_adapter, real_clips) -> None:
    session, engine = _session(tiny_adapter, _config(budget=STEP_TOKENS - 1))
    first, second = _frames(real_clips, 1.0)
    assert session.ingest(first) is None
    with pytest.raises(ValueError, match=f"kept tokens but the memory budget is {STEP_TOKENS - 1} tokens"):
        session.ingest(second)
    assert session.memory.tokens_held == 0 and engine.session_stats("s1").pending_changes == 0
    asyncio.run(engine.shutdown())
