"""Qwen3-VL (dense and MoE) in vLLM with kept-token items (Vigil's plugin models, DeepStack rows): a real clip with
the drop on answers through the vLLM engine, and through ``vllm serve`` with the remote engine, exactly as through
the transformers engine."""

from __future__ import annotations

import asyncio
import functools

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here (the .ci/vllm environment has it)")

from assistant.config import EngineConfig, VigilConfig
from assistant.reaction import AnswerDelta, AnswerDone, AnswerRequest
from assistant.session import Session
from serving.engines.hf import HFEngine

pytestmark = pytest.mark.vllm

QUESTIONS = {5: "what is happening?", 11: "what changed?", 17: "is it moving?"}
"""Frame index (2 fps) -> the question asked after it."""


@functools.cache
def _adapter(family: str):
    from assistant.models import load_adapter

    return load_adapter(f"tiny-{family}", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def qwen3_adapter(vigil_home):
    return _adapter("qwen3-vl")


@pytest.fixture(scope="module", params=["qwen3-vl", "qwen3-vl-moe"])
def vllm_qwen3(request, vigil_home, loop_thread):
    """The in-process vLLM engine on the tiny Qwen3-VL (dense, then MoE) with kept-token items."""
    from serving.engines.vllm import VLLMEngine

    config = EngineConfig(
        kind="vllm",
        max_new_tokens=10,
        kv_cap_tokens=8192,
        vllm={"visual_input": "kept", "max_model_len": 12288, "compaction_every": 4},
    )
    engine = VLLMEngine(_adapter(request.param), config, enforce_eager=True)
    yield engine
    loop_thread.run(engine.shutdown())


async def _watch(engine, adapter, clip, sid: str, remember: bool = True) -> dict:
    """Play the clip through a session (drop on) and ask at the QUESTIONS frames; what each engine saw."""
    from assistant.sources import VideoFileSource

    kind = "hf" if isinstance(engine, HFEngine) else engine.config.kind
    config = VigilConfig(
        perception={"fps": 2.0, "drop": {"mode": "pixel", "threshold": 0.2}},
        memory={"budget_tokens": 4096, "archive": "none"},
        engine=engine.config.model_copy(update={"kind": kind}),
    )
    session = Session(sid, config, adapter, engine)
    await session.start()
    answers, contexts = [], []
    try:
        with VideoFileSource(clip, fps=2.0) as source:
            for i, frame in enumerate(source):
                session.ingest(frame)
                if i in QUESTIONS:
                    await engine.sync(sid)
                    contexts.append(engine.session_stats(sid).kv_tokens)
                    ids, done = [], None
                    async for event in engine.answer(sid, AnswerRequest(QUESTIONS[i], frame.t, remember=remember)):
                        if isinstance(event, AnswerDelta):
                            ids += event.token_ids
                        elif isinstance(event, AnswerDone):
                            done = event
                    answers.append((ids, done))
                if i == max(QUESTIONS):
                    break
        drop = session.perception.stats.weighted_drop_ratio
        held = [e.num_tokens for e in session.memory.entries]
    finally:
        await session.close()
    return {"answers": answers, "contexts": contexts, "drop": drop, "held": held}


def test_qwen3_kept_tokens_answer_as_the_transformers_engine(vllm_qwen3, loop_thread, real_clips):
    adapter = vllm_qwen3.adapter
    clip = real_clips["bikes"]
    hf = HFEngine(adapter, vllm_qwen3.config)
    want = asyncio.run(_watch(hf, adapter, clip, "q3"))
    asyncio.run(hf.shutdown())
    got = loop_thread.run(_watch(vllm_qwen3, adapter, clip, "q3"))

    assert len(got["answers"]) == len(QUESTIONS)
    assert got["held"] == want["held"]
    for k, ((want_ids, want_done), (ids, done)) in enumerate(zip(want["answers"], got["answers"], strict=True)):
        assert ids == want_ids and done.text == want_done.text, (k, got["contexts"], want["contexts"])
        assert done.stats.finish_reason == want_done.stats.finish_reason
    assert got["contexts"] == want["contexts"]
    lengths = [len(ids) for ids, _ in got["answers"]]
    print(f"{adapter.family} kept: drop {got['drop']:.2f}, contexts {got['contexts']}, answers {lengths}")
    assert got["drop"] > 0.1, got["drop"]  # the drop removed tokens: kept items are subsets of their grids


def test_the_remote_engine_sends_qwen3_kept_items_to_vllm_serve(
    qwen3_adapter, vllm_server_qwen3, loop_thread, real_clips
):
    """The same stream through ``vllm serve`` of Qwen3-VL with the plugin: DeepStack rows over HTTP answer as the
    transformers engine (questions not remembered: the server tokenizes rendered chat text whole)."""
    from serving.engines.remote import RemoteEngine

    config = EngineConfig(
        kind="remote",
        max_new_tokens=10,
        kv_cap_tokens=8192,
        vllm={"visual_input": "kept"},
        remote={"urls": [vllm_server_qwen3], "served_model": "tiny-served", "timeout_s": 120, "retries": 1},
    )
    clip = real_clips["bikes"]
    hf = HFEngine(qwen3_adapter, config)
    want = asyncio.run(_watch(hf, qwen3_adapter, clip, "q3-remote", remember=False))
    asyncio.run(hf.shutdown())
    remote = RemoteEngine(qwen3_adapter, config)
    got = loop_thread.run(_watch(remote, qwen3_adapter, clip, "q3-remote", remember=False))
    loop_thread.run(remote.shutdown())

    assert got["held"] == want["held"] and len(got["answers"]) == len(QUESTIONS)
    for (want_ids, want_done), (ids, done) in zip(want["answers"], got["answers"], strict=True):
        assert ids == want_ids and done.text == want_done.text
    assert got["contexts"] == want["contexts"]
