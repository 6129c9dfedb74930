"""The remote engine against a real ``vllm serve`` of the tiny Qwen2.5-VL on loopback."""

from __future__ import annotations

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here (the .ci/vllm environment has it)")

from assistant.config import EngineConfig, VigilConfig
from assistant.reaction import AnswerDone, AnswerRequest, EngineError
from assistant.session import Session
from evaluation.bench_latency import LatencyBenchConfig, synthetic_updates
from serving.engines.remote import RemoteEngine
from tests.support import collect_answer

pytestmark = pytest.mark.vllm

SERVED_NAME = "tiny-served"


def _engine_config(url: str) -> EngineConfig:
    return EngineConfig(
        kind="remote",
        max_new_tokens=12,
        kv_cap_tokens=10240,
        remote={"urls": [url], "served_model": SERVED_NAME, "timeout_s": 60, "retries": 1},
    )


async def _ask(engine, sid: str, request: AnswerRequest) -> tuple[str, AnswerDone]:
    deltas, done = await collect_answer(engine.answer(sid, request))
    return "".join(d.text for d in deltas), done


async def _session_run(engine, adapter, sid: str) -> tuple[list[AnswerDone], float]:
    config = VigilConfig(memory={"budget_tokens": 4096, "archive": "none"}, engine=engine.config)
    session = Session(sid, config, adapter, engine)
    await session.start()
    updates = synthetic_updates(LatencyBenchConfig(grid=(6, 8), keep_ratio=1.0, seed=0), adapter.hidden_size, 30, 4.0)
    answers = []
    for i, update in enumerate(updates):
        session.remember(update)
        if i in (9, 19, 29):
            await engine.sync(sid)
            text, done = await _ask(engine, sid, AnswerRequest(f"what happened before {update.t_end:.0f} s?", i))
            assert text == done.text
            answers.append(done)
    p = await engine.probe(sid, "is there a car?", 120.0)
    await session.close()
    return answers, p


def test_remote_engine_reuses_the_replica_prefix_cache(tiny_adapter, vllm_server, vllm_qwen, loop_thread) -> None:
    """Image-embedding parts with uuids over HTTP: cached tokens grow across questions; answers match in-process."""
    remote = RemoteEngine(tiny_adapter, _engine_config(vllm_server))
    answers, p = loop_thread.run(_session_run(remote, tiny_adapter, "remote"))
    loop_thread.run(remote.shutdown())
    cached = [done.stats.cached_tokens for done in answers]
    assert 0 < cached[0] < cached[1] < cached[2]
    assert all(done.text and done.stats.generated_tokens > 0 for done in answers)
    assert 0.0 < p < 1.0
    local, p_local = loop_thread.run(_session_run(vllm_qwen, tiny_adapter, "local"))
    # the chat template renders the same text; the server tokenizes it whole, so compare the first answer,
    # whose context has no dialogue turn yet
    assert answers[0].text == local[0].text
    assert p == pytest.approx(p_local, abs=5e-3)


def test_remote_engine_reports_server_errors(tiny_adapter, vllm_server, loop_thread) -> None:
    config = _engine_config(vllm_server).model_copy(
        update={"remote": _engine_config(vllm_server).remote.model_copy(update={"served_model": "missing-model"})}
    )
    engine = RemoteEngine(tiny_adapter, config)

    async def run() -> None:
        await engine.open_session("s")
        with pytest.raises(EngineError, match=r"rejected the request: HTTP 404.*missing-model"):
            await _ask(engine, "s", AnswerRequest("hi?", 1.0))
        await engine.shutdown()

    loop_thread.run(run())
