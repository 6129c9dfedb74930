"""The remote engine over OpenAI-compatible replicas on loopback: pinning, prefix reuse, retries, failures.

vLLM is not installed in the main environment, so the replicas here are a small fake chat server that speaks
real HTTP (streamed server-sent events), keeps a prefix cache keyed like vLLM's (text and image uuids, in
blocks) and can be told to fail; tests/serving/vllm runs the same engine against a real ``vllm serve``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tests.support import collect_answer

BLOCK = 16


def _units(body: dict[str, Any]) -> list[str]:
    """The prompt as cacheable units: one per text character, eight per image (its uuid)."""
    units: list[str] = []
    for message in body["messages"]:
        content = message["content"]
        if isinstance(content, str):
            units += list(content)
            continue
        for part in content:
            if part["type"] == "text":
                units += list(part["text"])
            else:
                units += [f"<{part['uuid']}>"] * 8
    return units


@dataclass
class FakeReplica:
    """One fake replica: its requests, its cache and the failures it is told to produce."""

    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_next: int = 0
    cut_after_chunks: int | None = None
    stall_s: float = 0.0
    answer_words: int = 5
    _cache: set[tuple[str, ...]] = field(default_factory=set)
    _server: Any = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def cached_prefix(self, units: list[str]) -> int:
        n = 0
        while n + BLOCK <= len(units) and tuple(units[: n + BLOCK]) in self._cache:
            n += BLOCK
        return n

    def remember(self, units: list[str]) -> None:
        for end in range(BLOCK, len(units) + 1, BLOCK):
            self._cache.add(tuple(units[:end]))

    def app(self) -> Any:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            body = await request.json()
            self.requests.append(body)
            if self.fail_next:
                self.fail_next -= 1
                return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
            if body.get("model") != "tiny-served":
                return JSONResponse({"error": {"message": f"model {body.get('model')!r} not found"}}, status_code=404)
            if self.stall_s:
                await asyncio.sleep(self.stall_s)
            units = _units(body)
            cached = self.cached_prefix(units)
            self.remember(units)
            seed = hashlib.sha256("".join(units).encode()).hexdigest()
            n = min(int(body.get("max_tokens") or 16), self.answer_words)
            words = [f" w{seed[i * 2 : i * 2 + 2]}" for i in range(n)]
            usage = {
                "prompt_tokens": len(units),
                "completion_tokens": n,
                "prompt_tokens_details": {"cached_tokens": cached},
            }
            finish = "length" if n == body.get("max_tokens") else "stop"
            if not body.get("stream"):
                choice: dict[str, Any] = {"message": {"role": "assistant", "content": "".join(words)}}
                if body.get("logprobs"):
                    ids = body.get("logprob_token_ids") or []
                    top = [{"token": f"token_id:{t}", "logprob": -1.0 - 0.5 * i} for i, t in enumerate(ids)]
                    choice["logprobs"] = {"content": [{"token": top[0]["token"], "top_logprobs": top}]}
                choice["finish_reason"] = finish
                return JSONResponse({"choices": [choice], "usage": usage})

            async def events() -> Any:
                yield f"data: {json.dumps({'choices': [{'delta': {'role': 'assistant'}}]})}\n\n"
                for i, word in enumerate(words):
                    if self.cut_after_chunks is not None and i >= self.cut_after_chunks:
                        raise ConnectionResetError("replica died mid-stream")
                    last = i == len(words) - 1
                    choice = {"delta": {"content": word}, "finish_reason": finish if last else None}
                    yield f"data: {json.dumps({'choices': [choice]})}\n\n"
                yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        return app

    def start(self) -> FakeReplica:
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="critical", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake replica did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None


def closed_port_url() -> str:
    """A loopback URL where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


# -- tests -------------------------------------------------------------------------------------------------
import pytest  # noqa: E402
import torch  # noqa: E402

from assistant.config import EngineConfig, VigilConfig  # noqa: E402
from assistant.reaction import AnswerDone, AnswerRequest, EngineError  # noqa: E402
from assistant.session import Session  # noqa: E402
from evaluation.bench_latency import LatencyBenchConfig, synthetic_updates  # noqa: E402
from memory.policies import SinkWindowPolicy  # noqa: E402
from memory.store import Prune, VisualMemory  # noqa: E402
from serving.engines import build_engine  # noqa: E402
from serving.engines.remote import RemoteEngine, ReplicaUnavailableError  # noqa: E402


@pytest.fixture
def replicas():
    started = [FakeReplica().start(), FakeReplica().start()]
    yield started
    for replica in started:
        replica.stop()


def _config(urls: list[str], visual_input: str = "kept", **remote: Any) -> VigilConfig:
    return VigilConfig(
        memory={"budget_tokens": 4096, "archive": "none"},
        engine={
            "kind": "remote",
            "max_new_tokens": 8,
            "kv_cap_tokens": 10240,
            "vllm": {"visual_input": visual_input},
            "remote": {"urls": urls, "served_model": "tiny-served", "timeout_s": 5, "retries": 2, **remote},
        },
    )


def _updates(adapter, steps: int, keep: float = 0.5):
    cfg = LatencyBenchConfig(grid=(4, 6), keep_ratio=keep, seed=0)
    return list(synthetic_updates(cfg, adapter.hidden_size, steps, interval=4.0))


async def _ask(engine, sid: str, question: str, t: float) -> tuple[list[str], AnswerDone]:
    deltas, done = await collect_answer(engine.answer(sid, AnswerRequest(question, t)))
    return [d.text for d in deltas], done


def test_sessions_pinned_prefix_reused_and_items_carry_stable_uuids(tiny_adapter, replicas) -> None:
    config = _config([r.url for r in replicas], visual_input="embeds")

    async def run() -> None:
        engine = build_engine(config.engine, tiny_adapter)
        assert isinstance(engine, RemoteEngine)
        a, b = Session("a", config, tiny_adapter, engine), Session("b", config, tiny_adapter, engine)
        await a.start()
        await b.start()
        assert {engine.replica_of("a"), engine.replica_of("b")} == {r.url for r in replicas}
        updates = _updates(tiny_adapter, 12)
        cached = []
        for i, update in enumerate(updates):
            a.remember(update)
            b.remember(update)
            if i % 4 == 3:
                pieces, done = await _ask(engine, "a", f"what is there at {update.t_end:.0f} s?", update.t_end)
                assert "".join(pieces) == done.text and done.text
                assert done.stats.generated_tokens == len(pieces)
                cached.append(done.stats.cached_tokens)
                await _ask(engine, "b", "and here?", update.t_end)
        assert cached[0] == 0 and cached[0] < cached[1] < cached[2]
        home = next(r for r in replicas if r.url == engine.replica_of("a"))
        mine = [body for body in home.requests if body["messages"][1]["content"][-1]["text"].endswith("s?")]
        assert len(mine) == 3  # every question of session a went to its own replica
        uuids = [[p["uuid"] for p in body["messages"][1]["content"] if p["type"] != "text"] for body in mine]
        assert len(uuids[0]) == 4 and uuids[1][:4] == uuids[0] and uuids[2][:8] == uuids[1]
        assert all(u.startswith("vigil-a-") for u in uuids[2])
        part = next(p for p in mine[0]["messages"][1]["content"] if p["type"] == "image_embeds")
        assert part["image_embeds"]["image_grid_thw"] == [1, 8, 12]  # whole 4 x 6 token grid, in patches
        stats = engine.session_stats("a")
        assert stats.segments == 1 + 12 + 3 and stats.kv_tokens > 12 * 24
        assert len(engine._parts) == 2 * 12  # each live item encoded once, reused by every request
        await b.close()
        assert len(engine._parts) == 12  # a closed session's encodings are freed
        await engine.shutdown()

    asyncio.run(run())


def _decode_tensor(text: str) -> torch.Tensor:
    return torch.load(io.BytesIO(base64.b64decode(text)), weights_only=True)


def test_kept_items_carry_only_the_kept_tokens_and_their_offsets(tiny_adapter, replicas) -> None:
    """``kept``: each part holds the entry's kept embeddings with image_num_tokens and image_positions (the
    transformers engine's offsets); the context counts kept tokens only; a Prune reaches the item at the next
    compaction (a new uuid), not before."""
    config = _config([replicas[0].url])

    async def run() -> None:
        engine = RemoteEngine(tiny_adapter, config.engine)
        session = Session("k", config, tiny_adapter, engine)
        await session.start()
        for update in _updates(tiny_adapter, 6):
            session.remember(update)
        _, done = await _ask(engine, "k", "what now?", 24.0)
        assert done.text
        parts = [p for p in replicas[0].requests[-1]["messages"][1]["content"] if p["type"] == "image_embeds"]
        entries = session.memory.entries
        assert len(parts) == len(entries) == 6
        for part, entry in zip(parts, entries, strict=True):
            payload = part["image_embeds"]
            assert payload["image_num_tokens"] == [entry.num_tokens] and payload["image_grid_thw"] == [1, 8, 12]
            assert torch.equal(_decode_tensor(payload["image_embeds"]), entry.embeddings.float())
            offsets = _decode_tensor(payload["image_positions"])  # [K, 3]
            assert offsets.tolist() == [[0, int(h), int(w)] for h, w in entry.positions[1:].T.tolist()]
        assert sum(e.num_tokens for e in entries) < 6 * 24  # the drop removed tokens; nothing fills them in
        state = engine.context.get("k")
        framing = engine.layout.image_framing
        visual = [s for s in state.segments if s.kind == "visual"]
        assert [s.num_tokens - len(s.ids) - framing for s in visual] == [e.num_tokens for e in entries]

        target = entries[1]
        keep = torch.arange(0, target.num_tokens, 2)
        engine.apply("k", [Prune(target.entry_id, keep)])
        engine.context.absorb(state)
        seg = next(s for s in state.segments if s.sid == f"e{target.entry_id}")
        assert seg.item.embeds.shape[0] == target.num_tokens and seg.pruned is not None  # held until compaction
        engine.context.compact(state)
        assert seg.item.embeds.shape[0] == keep.numel() and seg.item.uuid.endswith("-v1")
        assert torch.equal(seg.item.offsets[:, 2], target.positions[2][keep])
        await engine.shutdown()

    asyncio.run(run())


def test_sync_prefills_the_context_once(tiny_adapter, replicas) -> None:
    config = _config([replicas[0].url])

    async def run() -> None:
        engine = RemoteEngine(tiny_adapter, config.engine)
        session = Session("s", config, tiny_adapter, engine)
        await session.start()
        for update in _updates(tiny_adapter, 6):
            session.remember(update)
        first = await engine.sync("s")
        assert first > 6 * 8 and await engine.sync("s") == 0  # nothing new: no request
        assert len(replicas[0].requests) == 1 and replicas[0].requests[0]["max_tokens"] == 1
        _, done = await _ask(engine, "s", "what now?", 12.0)
        assert done.stats.cached_tokens >= first - 16 - 20  # the whole context but its last partial block
        await engine.shutdown()

    asyncio.run(run())


def test_retry_before_output_never_duplicates(tiny_adapter, replicas) -> None:
    replica = replicas[0]
    replica.fail_next = 2
    config = _config([replica.url], retries=2)

    async def run() -> None:
        engine = RemoteEngine(tiny_adapter, config.engine)
        await engine.open_session("s")
        pieces, done = await _ask(engine, "s", "hello?", 1.0)
        assert len(replica.requests) == 3 and len(pieces) == replica.answer_words
        assert "".join(pieces) == done.text
        await engine.shutdown()

    asyncio.run(run())


def test_failure_mid_answer_is_not_retried(tiny_adapter, replicas) -> None:
    replica = replicas[0]
    replica.cut_after_chunks = 2
    config = _config([replica.url], retries=3)

    async def run() -> None:
        engine = RemoteEngine(tiny_adapter, config.engine)
        await engine.open_session("s")
        pieces = []
        with pytest.raises(EngineError, match="failed mid-answer"):
            async for event in engine.answer("s", AnswerRequest("hello?", 1.0)):
                pieces.append(event.text)
        assert len(pieces) == 2 and len(replica.requests) == 1  # the two deltas came once; no resend
        replica.cut_after_chunks = None
        _, done = await _ask(engine, "s", "again?", 2.0)  # the session stays usable
        assert done.stats.generated_tokens == replica.answer_words
        await engine.shutdown()

    asyncio.run(run())


def test_down_replica_moves_the_session_and_all_down_is_a_clear_error(tiny_adapter, replicas) -> None:
    dead = closed_port_url()
    config = _config([dead, replicas[0].url], retries=1, connect_timeout_s=1)

    async def run() -> None:
        engine = RemoteEngine(tiny_adapter, config.engine)
        await engine.open_session("s")
        assert engine.replica_of("s") == dead
        _, done = await _ask(engine, "s", "anyone?", 1.0)
        assert done.text and engine.replica_of("s") == replicas[0].url
        await engine.shutdown()

        lonely = RemoteEngine(tiny_adapter, _config([dead], retries=1, connect_timeout_s=1).engine)
        await lonely.open_session("s")
        with pytest.raises(ReplicaUnavailableError, match=r"after 2 attempt\(s\).*cannot connect") as err:
            await _ask(lonely, "s", "anyone?", 1.0)
        assert dead in str(err.value)
        await lonely.shutdown()

    asyncio.run(run())


def test_timeouts_and_rejections(tiny_adapter, replicas) -> None:
    replica = replicas[0]

    async def run() -> None:
        replica.stall_s = 2.0
        slow = RemoteEngine(tiny_adapter, _config([replica.url], timeout_s=0.3, retries=1).engine)
        await slow.open_session("s")
        with pytest.raises(ReplicaUnavailableError, match=r"timed out after 0\.3 s"):
            await _ask(slow, "s", "quick?", 1.0)
        assert len(replica.requests) == 2
        await slow.shutdown()
        replica.stall_s = 0.0

        wrong = _config([replica.url]).engine.model_copy(
            update={"remote": _config([replica.url]).engine.remote.model_copy(update={"served_model": "nope"})}
        )
        rejected = RemoteEngine(tiny_adapter, wrong)
        await rejected.open_session("s")
        before = len(replica.requests)
        with pytest.raises(EngineError, match=r"rejected the request: HTTP 404.*not found"):
            await _ask(rejected, "s", "hi?", 1.0)
        assert len(replica.requests) == before + 1  # a client error is not retried
        await rejected.shutdown()

    asyncio.run(run())


def test_probe_reads_label_logprobs(tiny_adapter, replicas) -> None:
    config = _config([replicas[0].url])

    async def run() -> None:
        engine = RemoteEngine(tiny_adapter, config.engine)
        await engine.open_session("s")
        p = await engine.probe("s", "is there a car?", 3.0)
        body = replicas[0].requests[-1]
        labels = body["logprob_token_ids"]
        yes = [t for t in labels if t in engine.layout.yes_ids]
        lp = {t: -1.0 - 0.5 * i for i, t in enumerate(labels)}
        expect = torch.softmax(
            torch.tensor(
                [
                    torch.logsumexp(torch.tensor([lp[t] for t in yes]), 0),
                    torch.logsumexp(torch.tensor([lp[t] for t in labels if t not in yes]), 0),
                ]
            ),
            0,
        )[0]
        assert p == pytest.approx(float(expect), abs=1e-6)
        assert body["messages"][1]["content"][-1]["text"].endswith("Answer yes or no.")
        await engine.shutdown()

    asyncio.run(run())


def test_bad_configuration_and_sessions(tiny_adapter) -> None:
    with pytest.raises(ValueError, match="needs at least one URL"):
        EngineConfig(kind="remote")
    with pytest.raises(ValueError, match="must start with http"):
        EngineConfig(kind="remote", remote={"urls": ["gpu1:8000"]})
    engine = RemoteEngine(tiny_adapter, _config([closed_port_url()]).engine)

    async def run() -> None:
        with pytest.raises(KeyError, match="no session"):
            await engine.sync("nope")
        await engine.open_session("s")
        with pytest.raises(ValueError, match="already open"):
            await engine.open_session("s")
        await engine.shutdown()

    asyncio.run(run())


def _tight_config(url: str, budget: int = 512, window: int = 64) -> VigilConfig:
    """The smallest KV cap the config validator allows for the budget (no slack for per-entry prompt overhead)."""
    return VigilConfig(
        memory={"budget_tokens": budget, "archive": "memory"},
        engine={
            "kind": "remote",
            "max_new_tokens": 8,
            "kv_cap_tokens": budget + window + 256,
            "text_window_tokens": window,
            "vllm": {"compaction_every": 8, "visual_input": "embeds"},
            "remote": {"urls": [url], "served_model": "tiny-served", "timeout_s": 5},
        },
    )


@pytest.mark.parametrize("sync_every", [1, 5])
def test_the_prefix_core_never_evicts_on_its_own(tiny_adapter, replicas, sync_every: int) -> None:
    """One-token entries sent as whole 4 x 6 grids with a timestamp: their cost in the context would overflow the
    cap long before the token budget is reached. The memory's context budget evicts; the shared core mirrors it
    (batched compactions) and never evicts nor refuses on its own, synced after every step (as a live session
    does) or in batches."""
    config = _tight_config(replicas[0].url)

    async def run() -> None:
        engine = RemoteEngine(tiny_adapter, config.engine)
        session = Session("s", config, tiny_adapter, engine)
        await session.start()
        state = engine.context.get("s")
        for i, update in enumerate(_updates(tiny_adapter, 150, keep=1 / 24)):
            session.remember(update)
            if i % sync_every == sync_every - 1:
                await engine.sync("s")
                live = [s.sid for s in state.segments if s.kind == "visual" and not s.stale]
                assert live == [f"e{e.entry_id}" for e in session.memory.entries], i
                stats = engine.session_stats("s")
                assert stats.kv_tokens <= config.engine.kv_cap_tokens and stats.engine_evictions == 0
            if i % 50 == 49:
                _, done = await _ask(engine, "s", "what now?", update.t_end)
                assert done.text
        assert session.memory.stats.entries_evicted > 0 and engine.session_stats("s").consolidations > 0
        assert session.memory.tokens_held < config.memory.budget_tokens // 4  # the context budget evicted
        await engine.shutdown()

    asyncio.run(run())


def test_the_prefix_core_rejects_what_does_not_fit(tiny_adapter, replicas) -> None:
    """A memory without the engine's context budget overflows the cap: the newest entries are rejected with a
    clear error and nothing already in the context is evicted for them."""
    config = _tight_config(replicas[0].url)

    async def run() -> None:
        engine = RemoteEngine(tiny_adapter, config.engine)
        session = Session("s", config, tiny_adapter, engine)
        session.memory = VisualMemory(config.memory.budget_tokens, SinkWindowPolicy())  # token budget only
        await session.start()
        state = engine.context.get("s")
        rejected = None
        for update in _updates(tiny_adapter, 100, keep=1 / 24):
            session.remember(update)
            held = [s.sid for s in state.segments if s.kind == "visual"]
            try:
                await engine.sync("s")
            except EngineError as exc:
                rejected = exc
                break
        assert rejected is not None and "do not fit the KV cap" in str(rejected)
        assert f"e{session.memory.entries[-1].entry_id}" in str(rejected)
        assert [s.sid for s in state.segments if s.kind == "visual"] == held
        assert state.context_tokens <= config.engine.kv_cap_tokens
        assert engine.session_stats("s").engine_evictions == 0
        await engine.shutdown()

    asyncio.run(run())
