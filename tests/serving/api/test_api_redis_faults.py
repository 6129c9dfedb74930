"""Redis faults and worker faults on real processes: Redis restarted empty, refusing writes, paused; a worker
killed for good; a session reached with a bearer key through any worker."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.serving.api.faults import RedisProcess, WorkerProcess
from tests.support import wait_until

pytestmark = pytest.mark.slow
KEY = "key-fault-0001"


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(out, format="JPEG")
    return out.getvalue()


def _frames(client: httpx.Client, sid: str, start: int, n: int) -> httpx.Response:
    files = [("frame", (f"{i}.jpg", _jpeg(i), "image/jpeg")) for i in range(start, start + n)]
    data = {"t": [str(i * 0.5) for i in range(start, start + n)]}
    return client.post(f"/v1/sessions/{sid}/frames", files=files, data=data)


def _sse(response: httpx.Response) -> Iterator[dict[str, Any]]:
    message: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in message:
                message["data"] = json.loads(message["data"])
                yield message
            message = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            message[field] = value.lstrip(" ")


@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path).start()
    yield proc
    proc.resume() if proc.proc and proc.proc.poll() is None else None
    proc.kill()


@pytest.fixture
def two_workers(tiny_model_dir: Path, redis_proc: RedisProcess, tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    tag = uuid.uuid4().hex[:6]
    limits = {"max_sessions_per_key": 3}
    workers = [
        WorkerProcess(
            tiny_model_dir, redis_proc.url, f"{n}-{tag}", tmp_path / f"{n}.log", api_keys=[KEY], limits=limits
        )
        for n in ("a", "b")
    ]
    for w in workers:
        w.start()
    yield workers
    for w in workers:
        w.stop()


def _client(worker: WorkerProcess, **kwargs: Any) -> httpx.Client:
    return httpx.Client(base_url=worker.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60, **kwargs)


def test_redis_restarted_empty_gets_the_live_sessions_back(two_workers: Any, redis_proc: RedisProcess) -> None:
    a, b = two_workers
    with _client(a) as ca, _client(b) as cb:
        sids = [ca.post("/v1/sessions").json()["id"] for _ in range(3)]
        redis_proc.kill()
        redis_proc.start()  # same port, nothing in it
        assert not redis_proc.client().keys("vigil:session:*")

        def live() -> bool:
            r = cb.get("/v1/sessions")  # a call may meet a connection Redis dropped: 503, then it reconnects
            return r.status_code == 200 and sum(s["status"] == "live" for s in r.json()["data"]) == 3

        wait_until(live, 15, 0.2, "sessions re-asserted")
        for sid in sids:
            assert cb.get(f"/v1/sessions/{sid}/memory").status_code == 200  # through B, answered by A
        r = cb.post("/v1/sessions")  # the per-key limit counts them again
        assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_sessions"


def test_events_during_a_write_outage_are_mirrored_later_or_marked_lost(
    tiny_model_dir: Path, redis_proc: RedisProcess, tmp_path: Path
) -> None:
    worker = WorkerProcess(tiny_model_dir, redis_proc.url, "w-" + uuid.uuid4().hex[:6], tmp_path / "w.log")
    worker.config["session"] = {"event_history": 100, "frame_queue": 64}
    worker.start()
    try:
        r = redis_proc.client()
        with _client(worker) as c:
            sid = c.post("/v1/sessions", json={"fps": 2}).json()["id"]
            r.config_set("min-replicas-to-write", 1)  # Redis now refuses every write
            for start in (0, 50, 100):
                assert _frames(c, sid, start, 50).status_code == 200
                time.sleep(1.8)  # within the session's frame rate
            processed = lambda: c.get(f"/v1/sessions/{sid}/memory").json()["frames"]["processed"] == 150  # noqa: E731
            wait_until(processed, 60, 0.2, "frames perceived")
            assert r.xlen(f"vigil:events:{sid}") == 0
            r.config_set("min-replicas-to-write", 0)  # writes work again: the mirror catches up
            wait_until(lambda: r.xlen(f"vigil:events:{sid}") > 50, 15, 0.2, "events mirrored")
            entries = [json.loads(f["e"]) for _, f in r.xrange(f"vigil:events:{sid}")]
            first = entries[0]  # more than the 100 the log keeps happened: the rest is marked, not skipped
            assert first["type"] == "events_lost" and first["first_seq"] == 1
            seqs = [e["seq"] for e in entries[1:]]
            assert seqs == list(range(first["last_seq"] + 1, first["last_seq"] + 1 + len(seqs)))
        worker.kill()  # the worker dies: a resume from the mirror tells the whole story
        reader = WorkerProcess(tiny_model_dir, redis_proc.url, "r-" + uuid.uuid4().hex[:6], tmp_path / "r.log")
        reader.start()
        try:
            with _client(reader) as c, c.stream("GET", f"/v1/sessions/{sid}/events") as resp:
                assert resp.status_code == 200
                events = list(_sse(resp))
            assert events[0]["event"] == "events_lost"
            assert events[-1]["event"] == "session_closed" and events[-1]["data"]["reason"] == "worker_lost"
            ids = [int(e["id"]) for e in events]
            assert ids == list(range(ids[0], ids[0] + len(ids)))  # contiguous after the marker
        finally:
            reader.stop()
    finally:
        worker.stop()


def test_a_bearer_key_reaches_a_session_through_any_worker(two_workers: Any, real_clips: Any) -> None:
    import openai
    from websockets.sync.client import connect

    a, b = two_workers
    with _client(a) as ca, _client(b) as cb:
        sid = ca.post("/v1/sessions", json={"fps": 2}).json()["id"]
        assert _frames(cb, sid, 0, 4).json()["accepted"] == 4  # a multipart body through B
        memory = cb.get(f"/v1/sessions/{sid}/memory")
        assert memory.status_code == 200 and memory.json()["id"] == sid
        assert memory.headers["x-vigil-forwarded-by"] == b.worker_id
        with cb.stream("POST", f"/v1/sessions/{sid}/messages", json={"question": "What is shown?"}) as resp:
            kinds = [e["event"] for e in _sse(resp)]
        assert kinds[0] == "answer_start" and kinds[-1] == "answer_done"  # SSE streamed through B
        assert httpx.get(f"{b.url}/v1/sessions/{sid}").status_code == 401  # B does not vouch for anyone
        client = openai.OpenAI(base_url=f"{b.url}/v1", api_key=KEY)
        chat = client.chat.completions.create(
            model=f"vigil:{sid}", messages=[{"role": "user", "content": "Anything new?"}], max_tokens=4
        )
        assert chat.choices[0].message.content is not None
        ws_url = b.url.replace("http://", "ws://") + f"/v1/sessions/{sid}/stream?after=0"
        with connect(ws_url, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
            ws.send(json.dumps({"type": "ask", "question": "And now?"}))
            seen: list[dict[str, Any]] = []
            answer_id = None
            while not any(m.get("type") == "answer_done" and m.get("answer_id") == answer_id for m in seen):
                seen.append(json.loads(ws.recv(timeout=30)))
                if seen[-1].get("type") == "question_queued":
                    answer_id = seen[-1]["answer_id"]
            assert sum(m.get("type") == "frame_accepted" for m in seen) == 4  # the history, from after=0


def test_a_dead_worker_and_a_stalled_redis(two_workers: Any, redis_proc: RedisProcess) -> None:
    a, b = two_workers
    with _client(a) as ca, _client(b) as cb:
        sid = ca.post("/v1/sessions", json={"fps": 2}).json()["id"]
        assert _frames(ca, sid, 0, 4).status_code == 200
        wait_until(lambda: ca.get(f"/v1/sessions/{sid}/memory").json()["frames"]["processed"] == 4, 30)
        time.sleep(1.5)  # mirrored

        # a 4-s Redis stall (every call times out after 0.5 s): health answers at once, the session keeps working
        redis_proc.pause()
        try:
            started = time.monotonic()
            health = ca.get("/health")
            assert health.status_code == 200 and time.monotonic() - started < 2
            assert ca.get(f"/v1/sessions/{sid}/memory").status_code == 200  # hosted by A: no Redis needed
            r = cb.get(f"/v1/sessions/{sid}/memory")
            assert r.status_code == 503 and r.json()["error"]["code"] == "directory_unavailable"
            time.sleep(3)
            assert ca.get("/health").json()["directory_ok"] is False
        finally:
            redis_proc.resume()
        # right after the stall A's heartbeat may have expired: B still reaches the live session, never a 410
        assert cb.get(f"/v1/sessions/{sid}/memory").status_code == 200
        wait_until(lambda: ca.get("/health").json()["directory_ok"], 10, 0.2, "heartbeat back")

        a.kill()  # gone for good
        codes: list[int] = []  # 503 worker_unreachable while its heartbeat lasts (1.5 s), then 410
        wait_until(lambda: codes.append(cb.get(f"/v1/sessions/{sid}/memory").status_code) or codes[-1] == 410, 15)
        assert set(codes) <= {200, 503, 410}
        assert cb.get(f"/v1/sessions/{sid}").json()["status"] == "lost"
        with cb.stream("GET", f"/v1/sessions/{sid}/events") as resp:  # the events still replay
            assert resp.status_code == 200
            events = list(_sse(resp))
        assert sum(e["event"] == "frame_accepted" for e in events) == 4
        assert events[-1]["event"] == "session_closed" and events[-1]["data"]["reason"] == "worker_lost"
        statuses = [s["status"] for s in cb.get("/v1/sessions").json()["data"]]
        assert statuses == ["lost"]
        assert cb.post("/v1/sessions").status_code == 201  # a lost session no longer counts for the key
