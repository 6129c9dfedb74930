"""The in-process vLLM engine on CPU: equal answers to the transformers engine, prefix reuse, cancellation, probes,
compaction, and raw frames encoded by vLLM itself (tiny LLaVA)."""

from __future__ import annotations

import asyncio

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed here (the .ci/vllm environment has it)")

from assistant.config import VigilConfig
from assistant.reaction import AddEntry, AnswerDelta, AnswerDone, AnswerRequest, EngineError
from assistant.session import Session
from evaluation.bench_latency import LatencyBenchConfig, synthetic_updates
from memory.store import MemoryEntry
from serving.engines.hf import HFEngine
from tests.support import collect_answer

pytestmark = pytest.mark.vllm

_IDS = iter(range(10**6))


def _config(engine, budget: int = 4096) -> VigilConfig:
    return VigilConfig(
        memory={"budget_tokens": budget, "archive": "none"},
        engine=engine.config.model_copy(update={"kind": "hf" if isinstance(engine, HFEngine) else "vllm"}),
    )


def _updates(adapter, steps: int, keep: float, seed: int = 0):
    cfg = LatencyBenchConfig(grid=(6, 8), keep_ratio=keep, seed=seed)
    return list(synthetic_updates(cfg, adapter.hidden_size, steps, interval=4.0))


async def _ask(engine, sid: str, request: AnswerRequest) -> tuple[list[int], AnswerDone]:
    deltas, done = await collect_answer(engine.answer(sid, request))
    return [i for d in deltas for i in d.token_ids], done


async def _stream(engine, adapter, sid: str, keep: float, asks: tuple[int, ...], steps: int, budget: int = 4096):
    """Feed a synthetic stream through a Session; sync and ask at the given steps; then one probe."""
    session = Session(sid, _config(engine, budget), adapter, engine)
    await session.start()
    answers = []
    try:
        for i, update in enumerate(_updates(adapter, steps, keep)):
            session.remember(update)
            if i in asks:
                await engine.sync(sid)
                request = AnswerRequest(f"what happened before {update.t_end:.0f} s?", update.t_end)
                answers.append(await _ask(engine, sid, request))
        p = await engine.probe(sid, "is there a car?", steps * 4.0)
        stats = engine.session_stats(sid)
    finally:
        await session.close()
    return answers, p, stats


def test_answers_equal_the_transformers_engine_and_the_prefix_is_reused(tiny_adapter, vllm_qwen, loop_thread) -> None:
    """Whole chunks (nothing dropped): greedy answers over the same kept context equal, token for token."""
    asks = (9, 19, 29)
    hf = HFEngine(tiny_adapter, vllm_qwen.config)
    expected, p_hf, _ = asyncio.run(_stream(hf, tiny_adapter, "eq", 1.0, asks, 30))
    asyncio.run(hf.shutdown())
    got, p_vllm, stats = loop_thread.run(_stream(vllm_qwen, tiny_adapter, "eq", 1.0, asks, 30))
    decode = tiny_adapter.tokenizer.decode
    for (_, want), (ids, done) in zip(expected, got, strict=True):
        assert done.text == want.text and done.text
        assert decode(ids, skip_special_tokens=True) == want.text
        assert done.stats.generated_tokens == want.stats.generated_tokens
        assert done.stats.finish_reason == want.stats.finish_reason
    cached = [done.stats.cached_tokens for _, done in got]
    assert 0 < cached[0] < cached[1] < cached[2]  # each question reuses the KV of the whole earlier context
    assert all(done.stats.synced_tokens < done.stats.cached_tokens for _, done in got[1:])
    assert p_vllm == pytest.approx(p_hf, abs=5e-3)  # same logits up to the kernels' float32 rounding
    assert stats.segments == 1 + 30 + 3  # system, 30 entries, 3 dialogue turns


def test_dropped_tokens_keep_exact_positions_and_answers(tiny_adapter, vllm_qwen, loop_thread) -> None:
    """With token drop, items are whole grids (dropped tokens filled from the last kept value): answers stream."""
    got, p, stats = loop_thread.run(_stream(vllm_qwen, tiny_adapter, "drop", 0.25, (5, 11), 12))
    assert all(done.text for _, done in got) and 0.0 < p < 1.0
    assert got[1][1].stats.cached_tokens > got[0][1].stats.cached_tokens
    assert stats.kv_tokens > 12 * 48  # whole 6 x 8 grids per entry


def test_cancelled_answer_aborts_the_request(tiny_adapter, vllm_qwen, loop_thread) -> None:
    async def run() -> None:
        engine = vllm_qwen
        session = Session("cancel", _config(engine), tiny_adapter, engine)
        await session.start()
        for update in _updates(tiny_adapter, 6, 1.0):
            session.remember(update)
        stream = engine.answer("cancel", AnswerRequest("describe", 12.0, max_new_tokens=200, min_new_tokens=200))
        async for event in stream:
            assert isinstance(event, AnswerDelta)
            break
        await stream.aclose()
        for _ in range(50):
            if not engine.llm.output_processor.has_unfinished_requests():
                break
            await asyncio.sleep(0.05)
        assert not engine.llm.output_processor.has_unfinished_requests()
        _, done = await _ask(engine, "cancel", AnswerRequest("and now?", 12.0))
        assert done.stats.cached_tokens > 0 and done.stats.finish_reason in ("stop", "length")
        await session.close()

    loop_thread.run(run())


def test_evictions_are_batched_into_rare_compactions(tiny_adapter, vllm_qwen, loop_thread) -> None:
    async def run() -> None:
        engine = vllm_qwen
        session = Session("evict", _config(engine, budget=300), tiny_adapter, engine)
        await session.start()
        for i, update in enumerate(_updates(tiny_adapter, 40, 0.5)):
            session.remember(update)
            if i % 10 == 9:
                await engine.sync("evict")
        stats = engine.session_stats("evict")
        assert stats.consolidations >= 2  # evictions were applied in batches, not one by one
        state = engine.context.sessions["evict"]
        live = {s.sid for s in state.segments if s.kind == "visual" and not s.stale}
        assert live == {f"e{e.entry_id}" for e in session.memory.entries}
        assert state.stale_count < engine.config.vllm.compaction_every
        _, done = await _ask(engine, "evict", AnswerRequest("still there?", 80.0))
        assert done.text and done.stats.cached_tokens > 0
        await session.close()

    loop_thread.run(run())


def test_bad_inputs_give_clear_errors(tiny_adapter, vllm_qwen, loop_thread) -> None:
    async def run() -> None:
        engine = vllm_qwen
        with pytest.raises(KeyError, match="no session"):
            engine.apply("nope", [])
        await engine.open_session("bad")
        with pytest.raises(ValueError, match="already open"):
            await engine.open_session("bad")
        entry = MemoryEntry(next(_IDS), 0, 0.0, 2.0, torch.arange(4), torch.zeros(3, 4, dtype=torch.long))
        engine.apply("bad", [AddEntry(entry)])
        with pytest.raises(EngineError, match="needs visual embeddings"):
            await _ask(engine, "bad", AnswerRequest("hi", 1.0))
        await engine.close_session("bad")

    loop_thread.run(run())


def _frames_entries(count: int, seed: int = 0) -> list[MemoryEntry]:
    gen = torch.Generator().manual_seed(seed)
    entries = []
    for i in range(count):
        frames = torch.randint(0, 256, (1, 56, 56, 3), generator=gen, dtype=torch.uint8)
        entries.append(
            MemoryEntry(
                i + 1, i, 2.0 * i, 2.0 * i + 2, torch.arange(16), torch.zeros(3, 16, dtype=torch.long), frames=frames
            )
        )
    return entries


def _hf_llava_answer(adapter, prompt_ids: list[int], frames: list[torch.Tensor], max_new: int) -> list[int]:
    """Greedy ids of transformers' LLaVA on the same prompt, each image token expanded as vLLM does."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(adapter.name)
    image = adapter.model.config.image_token_index
    pixels = processor.image_processor([f[0].numpy() for f in frames], return_tensors="pt")["pixel_values"]
    per_image = (56 // 14) ** 2
    ids = []
    for t in prompt_ids:
        ids += [t] * per_image if t == image else [t]
    with torch.inference_mode():
        out = adapter.model.generate(
            input_ids=torch.tensor([ids]), pixel_values=pixels, max_new_tokens=max_new, do_sample=False
        )
    return out[0, len(ids) :].tolist()


def test_raw_frames_are_encoded_by_vllm(llava_adapter, vllm_llava, loop_thread) -> None:
    """Kept frames go to vLLM as images with stable uuids; answers equal transformers' LLaVA; the prefix is reused."""
    engine = vllm_llava
    entries = _frames_entries(24)

    async def run() -> list[tuple[list[int], AnswerDone]]:
        await engine.open_session("frames")
        answers = []
        for n in (8, 16, 24):  # vLLM caches whole 128-token blocks on CPU
            engine.apply("frames", [AddEntry(e) for e in entries[n - 8 : n]])
            await engine.sync("frames")
            answers.append(await _ask(engine, "frames", AnswerRequest("what is it?", 2.0 * n, remember=False)))
        return answers

    answers = loop_thread.run(run())
    cached = [done.stats.cached_tokens for _, done in answers]
    assert 0 < cached[0] < cached[1] < cached[2]
    assert engine.context.tokens_per_frame == (56 // 14) ** 2  # learned from vLLM's expanded prompt
    state = engine.context.sessions["frames"]
    question = engine.context.question_ids(AnswerRequest("what is it?", 48.0))
    prompt_ids, images = engine.context.token_prompt(state.segments, question)
    assert [i.uuid for i in images] == [f"vigil-frames-{state.nonce}-e{e.entry_id}-f0" for e in entries]
    ids, _done = answers[-1]
    want = _hf_llava_answer(llava_adapter, prompt_ids, [e.frames for e in entries], 12)
    stop = set(llava_adapter.model.generation_config.eos_token_id)
    want = want[: next((i for i, t in enumerate(want) if t in stop), len(want))]
    assert ids == want
    loop_thread.run(engine.close_session("frames"))


def test_a_live_session_feeds_its_kept_frames_to_vllm(vllm_llava, loop_thread, real_clips) -> None:
    """Perception keeps the resized frames of each stored step; vLLM encodes them; questions reuse the prefix."""
    from assistant.sources import VideoFileSource

    engine = vllm_llava
    config = VigilConfig(
        model={"max_pixels": 112 * 112},  # small frames: 16 tokens a step here
        perception={"fps": 6.0, "drop": {"mode": "pixel", "threshold": 0.0}},
        memory={"budget_tokens": 4096, "archive": "none"},
        engine=engine.config,
    )
    session = Session("live-frames", config, None, engine)  # pixel-mode drop: no vision encoder of ours
    assert session.perception.keep_frames and not session.perception.encodes

    async def run() -> list[AnswerDone]:
        await session.start()
        answers = []
        with VideoFileSource(real_clips["bigbuckbunny"], fps=6.0) as source:
            for i, frame in enumerate(source):
                session.ingest(frame)
                if i in (7, 23):
                    answers.append((await _ask(engine, session.session_id, AnswerRequest("what is it?", frame.t)))[1])
                if i == 23:
                    break
        await session.close()
        return answers

    answers = loop_thread.run(run())
    entries = session.memory.entries
    assert entries and all(e.frames is not None and e.frames.dtype == torch.uint8 for e in entries)
    assert all(done.stats.generated_tokens >= 1 for done in answers)
    assert len(answers) == 2 and len(entries) == 12  # 24 frames, 2 per step, every step stored
    # the steps before the first question came from vLLM's prefix cache (whole 128-token blocks on CPU)
    assert answers[1].stats.cached_tokens >= 128 > answers[0].stats.cached_tokens
