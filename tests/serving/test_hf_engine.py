"""The transformers engine: KV reuse is exact, rollback restores the cache, memory changes are mirrored."""

from __future__ import annotations

import asyncio
import copy

import pytest
import torch

from assistant.config import EngineConfig, VigilConfig
from assistant.models.prompt import ANSWER_OPEN, PromptLayout
from assistant.reaction import AddEntry, AnswerDelta, AnswerDone, AnswerRequest, EngineError, UnknownSessionError
from assistant.session import Session
from evaluation.bench_latency import LatencyBenchConfig, synthetic_updates
from memory.policies import SinkWindowPolicy
from memory.store import MemoryEntry, VisualMemory
from serving.engines.hf import HFEngine
from serving.engines.remote import RemoteEngine
from tests.support import collect_answer


def _config(budget: int = 4096, reuse: bool = True, **engine) -> VigilConfig:
    return VigilConfig(
        memory={"budget_tokens": budget, "archive": "memory"},
        engine={"max_new_tokens": 12, "kv_cap_tokens": budget * 2 + 2048, "reuse_kv": reuse, **engine},
    )


def _updates(adapter, steps: int, seed: int = 0, keep: float = 0.25):
    cfg = LatencyBenchConfig(grid=(6, 8), keep_ratio=keep, seed=seed)
    return list(synthetic_updates(cfg, adapter.hidden_size, steps, interval=4.0))


async def _started(adapter, config: VigilConfig) -> tuple[HFEngine, Session]:
    """An engine and a started session over it, both with ``config``."""
    engine = HFEngine(adapter, config.engine)
    session = Session("s", config, adapter, engine)
    await session.start()
    return engine, session


async def _answer(session: Session, question: str, t: float) -> tuple[str, AnswerDone]:
    deltas, done = await collect_answer(session.ask(question, t))
    return "".join(d.text for d in deltas), done


def _kv_snapshot(engine: HFEngine, sid: str) -> list[torch.Tensor]:
    layers = engine._sessions[sid].kv.cache.layers
    return [t.clone() for layer in layers for t in (layer.keys, layer.values)]


def test_kv_reuse_answers_equal_full_reprefill(tiny_adapter) -> None:
    """Several questions with new chunks in between: the KV path answers exactly as a full re-prefill does."""

    async def run(reuse: bool) -> list[str]:
        engine, session = await _started(tiny_adapter, _config(reuse=reuse))
        updates = _updates(tiny_adapter, 30)
        answers = []
        try:
            for i, update in enumerate(updates):
                session.remember(update)
                if i in (9, 19, 29):
                    _, done = await _answer(session, f"what happened before {update.t_end:.0f} s?", update.t_end)
                    answers.append(done.text)
                    if reuse:
                        assert done.stats.cached_tokens > done.stats.prompt_tokens
        finally:
            await engine.shutdown()
        return answers

    reused, reprefilled = asyncio.run(run(True)), asyncio.run(run(False))
    assert len(reused) == 3 and all(reused)
    assert reused == reprefilled


def test_question_rollback_leaves_cache_byte_identical(tiny_adapter) -> None:
    async def run() -> None:
        engine, session = await _started(tiny_adapter, _config(text_window_tokens=0))
        for update in _updates(tiny_adapter, 8):
            session.remember(update)
        await engine.sync("s")
        before = _kv_snapshot(engine, "s")
        segments = engine._sessions["s"].kv.segments
        await _answer(session, "what is there?", 16.0)
        p = await engine.probe("s", "is there a car?", 16.0)
        assert 0.0 < p < 1.0
        after = _kv_snapshot(engine, "s")
        assert engine._sessions["s"].kv.segments == segments
        assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
        await engine.shutdown()

    asyncio.run(run())


def test_recalled_archive_entries_join_the_answer_only(tiny_adapter) -> None:
    async def run() -> None:
        config = VigilConfig(
            memory={"budget_tokens": 120, "archive": "memory", "recall": 2},
            engine={"max_new_tokens": 4, "kv_cap_tokens": 2048},
        )
        engine, session = await _started(tiny_adapter, config)
        for update in _updates(tiny_adapter, 40):
            session.remember(update)
        await engine.sync("s")
        assert session.stats().archived_entries > 2
        length = engine._sessions["s"].kv.length
        done = None
        async for event in session.ask("what happened at the start?", 80.0, remember=False):
            done = event
        assert done.stats.retrieved_entries == 2 and done.stats.prompt_tokens > 20
        assert engine._sessions["s"].kv.length == length  # recalled entries were rolled back with the question
        await engine.shutdown()

    asyncio.run(run())


def test_min_new_tokens_forces_long_answers(tiny_adapter) -> None:
    async def run() -> None:
        engine, session = await _started(tiny_adapter, _config())
        for update in _updates(tiny_adapter, 4):
            session.remember(update)
        done, ids = None, []
        async for event in session.ask("go on", 8.0, max_new_tokens=40, min_new_tokens=40):
            done = event
            ids += getattr(event, "token_ids", ())
        assert isinstance(done, AnswerDone) and done.stats.generated_tokens == 40
        assert done.stats.finish_reason == "length"
        assert len(ids) == 40  # every generated id rides on a delta, also those that added no text
        await engine.shutdown()

    asyncio.run(run())


def test_text_window_keeps_dialogue_bounded(tiny_adapter) -> None:
    async def run() -> None:
        config = _config(text_window_tokens=64)
        engine, session = await _started(tiny_adapter, config)
        for update in _updates(tiny_adapter, 4):
            session.remember(update)
        for i in range(6):
            await _answer(session, f"question number {i} about the red car?", 8.0 + i)
            ctx = engine._sessions["s"]
            text = sum(ctx.records[s].num_tokens() for s in ctx.history)
            assert 0 < text <= 64
        await engine.shutdown()

    asyncio.run(run())


def test_cancelled_answer_frees_the_engine(tiny_adapter) -> None:
    async def run() -> None:
        config = _config()
        engine, session = await _started(tiny_adapter, config)
        for update in _updates(tiny_adapter, 6):
            session.remember(update)
        await engine.sync("s")
        length = engine._sessions["s"].kv.length
        stream = session.ask("describe everything", 12.0, max_new_tokens=50)
        async for event in stream:
            assert isinstance(event, AnswerDelta)
            break
        await stream.aclose()
        assert engine._sessions["s"].kv.length == length
        _, done = await _answer(session, "and now?", 12.0)
        assert done.stats.cached_tokens == length  # the cancelled answer left nothing behind
        assert done.stats.finish_reason in ("stop", "length")
        await engine.shutdown()

    asyncio.run(run())


def test_memory_evictions_are_mirrored_and_cap_holds(tiny_adapter) -> None:
    async def run() -> None:
        config = _config(budget=200)
        engine, session = await _started(tiny_adapter, config)
        for update in _updates(tiny_adapter, 120):
            session.remember(update)
            await engine.sync("s")
            ctx = engine._sessions["s"]
            visual = {s.segment_id for s in ctx.kv.segments if s.kind == "visual"}
            assert visual == {f"e{e.entry_id}" for e in session.memory.entries}
            assert ctx.kv.length <= ctx.kv.cap_tokens
            assert session.memory.tokens_held <= 200
        assert session.stats().archived_entries > 0
        await engine.shutdown()

    asyncio.run(run())


@pytest.mark.slow
def test_consolidation_renumbers_positions(tiny_adapter) -> None:
    async def run() -> None:
        config = _config(budget=300, position_limit=4096)
        engine, session = await _started(tiny_adapter, config)
        for update in _updates(tiny_adapter, 400):
            session.remember(update)
            await engine.sync("s")
            assert engine._sessions["s"].cursor < 4096
        stats = engine.session_stats("s")
        assert stats.consolidations >= 1
        _, done = await _answer(session, "still there?", 800.0)
        assert done.stats.cached_tokens == stats.kv_tokens
        await engine.shutdown()

    asyncio.run(run())


def test_bad_requests(tiny_adapter) -> None:
    async def run() -> None:
        engine = HFEngine(tiny_adapter, _config().engine)
        with pytest.raises(UnknownSessionError, match="no session"):
            engine.apply("nope", [])
        await engine.open_session("s")
        with pytest.raises(ValueError, match="already open"):
            await engine.open_session("s")
        entry = MemoryEntry(
            entry_id=1,
            chunk_index=0,
            t_start=0.0,
            t_end=2.0,
            token_indices=torch.arange(4),
            positions=torch.zeros(3, 4, dtype=torch.long),
        )
        engine.apply("s", [AddEntry(entry)])
        with pytest.raises(EngineError, match="needs visual embeddings"):
            async for _ in engine.answer("s", AnswerRequest("hi", 1.0)):
                pass
        await engine.shutdown()

    asyncio.run(run())


def _tight_config(budget: int = 512, window: int = 64) -> VigilConfig:
    """The smallest KV cap the config validator allows for the budget: no slack for per-entry prompt overhead."""
    return VigilConfig(
        memory={"budget_tokens": budget, "archive": "memory"},
        engine={"max_new_tokens": 12, "kv_cap_tokens": budget + window + 256, "text_window_tokens": window},
    )


def test_no_engine_eviction_with_many_small_entries(tiny_adapter) -> None:
    """One-token entries, each with a timestamp and vision start/end around it: their prompt overhead alone
    would overflow the KV cap long before the token budget is reached. The memory's context budget evicts (and
    archives); the engine mirrors it exactly and never evicts on its own."""

    async def run() -> None:
        config = _tight_config()
        engine, session = await _started(tiny_adapter, config)
        updates = _updates(tiny_adapter, 300, keep=1 / 48)
        most = 0
        for i, update in enumerate(updates):
            session.remember(update)
            await engine.sync("s")
            ctx, stats = engine._sessions["s"], engine.session_stats("s")
            visual = [s.segment_id for s in ctx.kv.segments if s.kind == "visual"]
            assert visual == [f"e{e.entry_id}" for e in session.memory.entries], i
            assert ctx.kv.length <= ctx.kv.cap_tokens and stats.engine_evictions == 0
            most = max(most, session.memory.tokens_held)
            if i % 100 == 99:
                held = ctx.kv.length
                _, done = await _answer(session, f"what is there at {update.t_end:.0f} s?", update.t_end)
                assert done.stats.cached_tokens == held and ctx.kv.length <= ctx.kv.cap_tokens
        assert session.memory.stats.entries_evicted > 0 and most < config.memory.budget_tokens // 2
        assert session.stats().archived_entries > 0  # what the context budget evicted went to the archive
        await engine.shutdown()

    asyncio.run(run())


def test_an_entry_that_does_not_fit_is_rejected_not_evicted_for(tiny_adapter) -> None:
    """A memory built without the engine's context budget overflows the cap: the engine rejects the entries
    that do not fit with a clear error and keeps every entry it already holds."""

    async def run() -> None:
        config = _tight_config()
        engine, session = await _started(tiny_adapter, config)
        session.memory = VisualMemory(config.memory.budget_tokens, SinkWindowPolicy())  # token budget only
        rejected = None
        for update in _updates(tiny_adapter, 200, keep=1 / 48):
            session.remember(update)
            held = [s.segment_id for s in engine._sessions["s"].kv.segments if s.kind == "visual"]
            try:
                await engine.sync("s")
            except EngineError as exc:
                rejected = exc
                break
            assert engine.session_stats("s").engine_evictions == 0
        assert rejected is not None and "do not fit the KV cap" in str(rejected)
        ctx = engine._sessions["s"]
        newest = f"e{session.memory.entries[-1].entry_id}"
        assert newest in str(rejected) and newest not in ctx.records
        assert [s.segment_id for s in ctx.kv.segments if s.kind == "visual"] == held  # nothing evicted for it
        assert ctx.kv.length <= ctx.kv.cap_tokens
        await engine.shutdown()

    asyncio.run(run())


class _StampAtLayout(PromptLayout):
    """A different layout: the engines must follow it, since they build their prompts from the adapter's."""

    @staticmethod
    def stamp_text(t: float) -> str:
        return f" at {t:.0f} s:"

    @staticmethod
    def question_text(t: float, question: str) -> str:
        return f"\nAt {t:.0f} s: {question}"


def test_the_prompt_layout_is_one_thing(tiny_adapter) -> None:
    """The hf engine, the prefix core and the remote body all take their texts and ids from the adapter's layout."""
    remote_config = EngineConfig(kind="remote", remote={"urls": ["http://127.0.0.1:9/v1"]})
    layout = tiny_adapter.layout
    hf, remote = HFEngine(tiny_adapter, _config().engine), RemoteEngine(tiny_adapter, remote_config)
    assert hf.layout is remote.layout is remote.context.layout is layout
    request = AnswerRequest("what is there?", 12.0)
    suffix = hf._suffix(request).ids.tolist()
    assert suffix == remote.context.question_ids(request) == layout.question_ids(12.0, "what is there?")
    # the ids are today's: the question suffix exactly as the engines wrote it before the layout existed
    literal = "\n[12.0s] what is there?<|im_end|>\n<|im_start|>assistant\n"
    assert suffix == tiny_adapter.tokenizer(literal, add_special_tokens=False).input_ids
    yes, no = hf._yes_no
    assert tuple(yes.tolist()) == layout.yes_ids and tuple(no.tolist()) == layout.no_ids

    other = copy.copy(tiny_adapter)
    other.layout = _StampAtLayout.build(other.tokenizer, other.family, other.token_ids, other.model.config)
    hf2, remote2 = HFEngine(other, _config().engine), RemoteEngine(other, remote_config)
    entry = _updates(tiny_adapter, 1)[0]
    record = hf2._visual_record(
        MemoryEntry(0, 0, 4.0, 8.0, entry.kept_indices, entry.positions, embeddings=entry.embeddings)
    )
    stamp = other.layout.ids(" at 4 s:")
    assert record.ids[: len(stamp)].tolist() == stamp
    assert hf2._suffix(request).ids.tolist() == other.layout.ids("\nAt 12 s: what is there?" + ANSWER_OPEN)

    async def body_texts() -> list[str]:
        await remote2.open_session("s")
        state = remote2.context.get("s")
        remote2.apply(
            "s", [AddEntry(MemoryEntry(0, 0, 4.0, 8.0, entry.kept_indices, entry.positions, entry.embeddings))]
        )
        remote2.context.absorb(state)
        body = remote2._body(remote2.context.request_segments(state, request), request, max_tokens=1, temperature=0)
        await remote2.shutdown()
        await remote.shutdown()
        return [p["text"] for p in body["messages"][1]["content"] if p["type"] == "text"]

    assert asyncio.run(body_texts()) == [" at 4 s:", "\nAt 12 s: what is there?"]
