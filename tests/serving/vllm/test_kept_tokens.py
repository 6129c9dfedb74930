"""Kept-token items in vLLM (``visual_input='kept'``, Vigil's plugin models): with the differential drop on, vLLM
holds the kept tokens only, at the transformers engine's positions, and answers as it does, token for token."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here (the .ci/vllm environment has it)")

from assistant.config import EngineConfig, VigilConfig
from assistant.reaction import AnswerDelta, AnswerDone, AnswerRequest
from assistant.session import Session
from serving.engines.hf import HFEngine

pytestmark = pytest.mark.vllm

SERVED_NAME = "tiny-served"

QUESTIONS = {11: "what is happening?", 23: "what changed?", 35: "what do you see now?", 44: "is it moving?"}
"""Frame index (2 fps) -> the question asked after it."""


@pytest.fixture(scope="module")
def spliced_clip(real_clips, tmp_path_factory: pytest.TempPathFactory):
    """The real clips one after another (23 s, hard cuts at the junctions)."""
    from evaluation.bench_scene import splice_clips

    path = tmp_path_factory.mktemp("kept") / "spliced.mp4"
    names = ("bigbuckbunny", "bikes", "carphone_pristine", "carphone_distorted")
    splice_clips([real_clips[n] for n in names], path, size=(240, 160), fps=4)
    return path


def _config(engine) -> VigilConfig:
    kind = "hf" if isinstance(engine, HFEngine) else engine.config.kind
    return VigilConfig(
        model={"max_pixels": 112 * 168},
        perception={"fps": 2.0, "drop": {"mode": "pixel", "threshold": 0.1}},
        memory={"budget_tokens": 4096, "archive": "none"},
        engine=engine.config.model_copy(update={"kind": kind}),
    )


async def _ask(engine, sid: str, request: AnswerRequest) -> tuple[list[int], AnswerDone]:
    ids, done = [], None
    async for event in engine.answer(sid, request):
        if isinstance(event, AnswerDelta):
            ids += event.token_ids
        else:
            done = event
    assert done is not None
    return ids, done


async def _watch(engine, adapter, clip, sid: str, remember: bool = True) -> dict:
    """Play the clip through a live session (drop on), ask at the QUESTIONS frames; what each engine saw."""
    from assistant.sources import VideoFileSource

    session = Session(sid, _config(engine), adapter, engine)
    await session.start()
    answers, contexts = [], []
    try:
        with VideoFileSource(clip, fps=2.0) as source:
            for i, frame in enumerate(source):
                session.ingest(frame)
                if i in QUESTIONS:
                    await engine.sync(sid)
                    contexts.append(engine.session_stats(sid).kv_tokens)
                    answers.append(await _ask(engine, sid, AnswerRequest(QUESTIONS[i], frame.t, remember=remember)))
                if i == max(QUESTIONS):
                    break
        drop = session.perception.stats.weighted_drop_ratio
        held = [e.num_tokens for e in session.memory.entries]
    finally:
        await session.close()
    return {"answers": answers, "contexts": contexts, "drop": drop, "held": held}


def test_kept_tokens_answer_as_the_transformers_engine(tiny_adapter, vllm_kept, loop_thread, spliced_clip) -> None:
    """A real clip with the drop on, four questions: equal greedy ids, equal context sizes, the prefix reused."""
    clip = spliced_clip
    hf = HFEngine(tiny_adapter, vllm_kept.config)
    want = asyncio.run(_watch(hf, tiny_adapter, clip, "kept"))
    asyncio.run(hf.shutdown())
    got = loop_thread.run(_watch(vllm_kept, tiny_adapter, clip, "kept"))

    assert len(got["answers"]) == len(QUESTIONS)
    assert got["held"] == want["held"]  # both sessions kept the same tokens
    for (want_ids, want_done), (ids, done) in zip(want["answers"], got["answers"], strict=True):
        assert ids == want_ids and done.text == want_done.text
        assert done.stats.finish_reason == want_done.stats.finish_reason
    assert got["contexts"] == want["contexts"]  # vLLM holds what the transformers engine holds
    assert got["drop"] > 0.3, got["drop"]  # the drop removed a real share of the tokens
    cached = [done.stats.cached_tokens for _, done in got["answers"]]
    print(f"kept: drop {got['drop']:.2f}, contexts {got['contexts']}, cached {cached}")
    # each question reuses the synced context (vLLM caches whole 128-token blocks on CPU: less than one short)
    for context, hit in zip(got["contexts"], cached, strict=True):
        assert context - 128 < hit <= context, (got["contexts"], cached)


def test_the_remote_engine_sends_kept_items_to_vllm_serve(tiny_adapter, vllm_server, loop_thread, spliced_clip) -> None:
    """The same stream through ``vllm serve`` with the plugin: kept-token parts over HTTP answer as transformers.

    The questions are not remembered: the server tokenizes the rendered chat text whole, which can join the
    tokens of a dialogue turn differently at segment borders; timestamps and questions border special tokens."""
    from serving.engines.remote import RemoteEngine

    config = EngineConfig(
        kind="remote",
        max_new_tokens=12,
        kv_cap_tokens=10240,
        vllm={"visual_input": "kept"},
        remote={"urls": [vllm_server], "served_model": SERVED_NAME, "timeout_s": 120, "retries": 1},
    )
    hf = HFEngine(tiny_adapter, config)
    want = asyncio.run(_watch(hf, tiny_adapter, spliced_clip, "remote-kept", remember=False))
    asyncio.run(hf.shutdown())
    remote = RemoteEngine(tiny_adapter, config)
    got = loop_thread.run(_watch(remote, tiny_adapter, spliced_clip, "remote-kept", remember=False))
    loop_thread.run(remote.shutdown())

    assert got["held"] == want["held"] and len(got["answers"]) == len(QUESTIONS)
    for (want_ids, want_done), (ids, done) in zip(want["answers"], got["answers"], strict=True):
        assert ids == want_ids and done.text == want_done.text
    assert got["contexts"] == want["contexts"]
    prompts = [done.stats.cached_tokens for _, done in got["answers"]]
    for context, hit in zip(got["contexts"], prompts, strict=True):
        assert context - 128 < hit <= context, (got["contexts"], prompts)
