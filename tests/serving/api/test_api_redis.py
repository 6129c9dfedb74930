"""Two `vigil serve` workers on one real Redis: a shared session directory, redirects, events that survive a restart."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serving.api.faults import Worker as BaseWorker
from tests.support import wait_until

pytestmark = pytest.mark.slow


class Worker(BaseWorker):
    """A worker started through `vigil serve`, as an operator starts one."""

    def __init__(self, model: Path, redis_url: str, worker_id: str, port: int, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.worker_id = worker_id
        self.args = [
            sys.executable,
            "-m",
            "serving.cli",
            "serve",
            "--model",
            str(model),
            "--device",
            "cpu",
            "--dtype",
            "float32",
            "--port",
            str(port),
            "--redis-url",
            redis_url,
            "--worker-id",
            worker_id,
            "--budget",
            "512",
            "--max-new-tokens",
            "4",
        ]
        self.log = log
        self.proc: subprocess.Popen | None = None


@pytest.fixture
def workers(tiny_model_dir: Path, redis_url: str, tmp_path: Path, tools: Any) -> Iterator[tuple[Worker, Worker]]:
    tag = uuid.uuid4().hex[:6]
    a = Worker(tiny_model_dir, redis_url, f"a-{tag}", tools.free_port(), tmp_path / "a.log")
    b = Worker(tiny_model_dir, redis_url, f"b-{tag}", tools.free_port(), tmp_path / "b.log")
    a.start(), b.start()
    yield a, b
    a.stop(), b.stop()


def test_two_workers_share_the_directory_and_events_survive_a_restart(workers: Any, tools: Any) -> None:
    a, b = workers
    with httpx.Client(base_url=a.url, timeout=60) as ca, httpx.Client(base_url=b.url, timeout=60) as cb:
        assert cb.get("/health").json()["directory"] == "redis"
        sid = ca.post("/v1/sessions", json={"fps": 2}).json()["id"]
        assert sid in [s["id"] for s in cb.get("/v1/sessions").json()["data"]]  # B sees A's session

        r = cb.get(f"/v1/sessions/{sid}/memory")  # owned by A: B forwards the request there
        assert r.status_code == 200 and r.json()["id"] == sid and r.headers["x-vigil-forwarded-by"] == b.worker_id
        forwarded = tools.post_frame(cb, sid, tools.jpeg(0), 0)
        assert forwarded.status_code == 200 and forwarded.json()["accepted"] == 1

        for i in range(1, 6):
            tools.post_frame(ca, sid, tools.jpeg(i), i * 0.5)
        seen: list[dict[str, Any]] = []
        with ca.stream("GET", f"/v1/sessions/{sid}/events") as r:  # read some events, then the connection drops
            for event in tools.sse_events(r):
                seen.append(event)
                if len(seen) == 4:
                    break
        _wait_for_frames(ca, sid, 6)
        time.sleep(1.5)  # events are mirrored to Redis about once a second

    a.kill()  # the worker dies with the session; its events are in Redis
    a.start()  # restarted with the same worker id
    with httpx.Client(base_url=b.url, timeout=60) as cb:
        # resume from B with the last id seen: everything after it, once, then the session's end
        with cb.stream("GET", f"/v1/sessions/{sid}/events", headers={"Last-Event-ID": seen[-1]["id"]}) as r:
            assert r.status_code == 200
            rest = list(tools.sse_events(r))
        ids = [int(e["id"]) for e in seen + rest]
        assert ids == list(range(1, ids[-1] + 1))
        assert rest[-1]["event"] == "session_closed" and rest[-1]["data"]["reason"] == "worker_restarted"
        assert sum(e["event"] == "frame_accepted" for e in seen + rest) == 6
        r = cb.get(f"/v1/sessions/{sid}/memory")
        assert r.status_code == 410 and r.json()["error"]["code"] == "session_closed"
        assert cb.get(f"/v1/sessions/{sid}").json()["status"] == "lost"
        assert cb.delete(f"/v1/sessions/{sid}").status_code == 204
        assert cb.get(f"/v1/sessions/{sid}").status_code == 404


def _wait_for_frames(client: httpx.Client, sid: str, count: int) -> None:
    processed = lambda: client.get(f"/v1/sessions/{sid}/memory").json()["frames"]["processed"] >= count  # noqa: E731
    wait_until(processed, 60, 0.1, "frames processed")
