"""Processes the fault tests start and stop by pid: a redis-server (killed, restarted empty, paused, made to refuse
writes) and API workers (`serving.runtime.serve` in their own process, killed like a crash)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisProcess:
    """A redis-server of our own on a fixed port, without persistence (a restart comes back empty)."""

    def __init__(self, run_dir: Path) -> None:
        self.port = free_port()
        self.run_dir = run_dir
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        log = (self.run_dir / "redis.log").open("ab")
        self.proc = subprocess.Popen([*args, "--dir", str(self.run_dir)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not self.client().ping_ok():
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        return self

    def client(self) -> Any:
        import redis

        class Client(redis.Redis):
            def ping_ok(self) -> bool:
                try:
                    return bool(self.ping())
                except redis.RedisError:
                    return False

        return Client(port=self.port, decode_responses=True, socket_timeout=5)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)


def start_worker(args: list[str], url: str, log: Path) -> subprocess.Popen:
    """Start a worker process logging to ``log`` and wait (at most 90 s) until its /health answers 200."""
    proc = subprocess.Popen(args, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=os.environ.copy())
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, f"worker exited: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"worker did not start: {log.read_text()[-3000:]}"
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)


WORKER = """
import json, sys
from assistant.config import VigilConfig
from serving.runtime import serve
sys.exit(serve(VigilConfig(**json.loads(sys.argv[1]))))
"""


class Worker:
    """A worker process started with ``args`` (set by subclasses) and stopped or killed by pid."""

    url: str
    log: Path
    args: list[str]
    proc: subprocess.Popen | None = None

    def start(self) -> Worker:
        self.proc = start_worker(self.args, self.url, self.log)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


class WorkerProcess(Worker):
    """One API worker process with the tiny model, a config of our choosing, and the directory in Redis."""

    def __init__(self, model: Path, redis_url: str, worker_id: str, log: Path, **server: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.worker_id = worker_id
        self.config = {
            "model": {"name": str(model), "device": "cpu", "dtype": "float32"},
            "memory": {"budget_tokens": 512},
            "engine": {"max_new_tokens": 4, "kv_cap_tokens": 4096},
            "server": {
                "port": self.port,
                "redis_url": redis_url,
                "worker_id": worker_id,
                "heartbeat_s": 0.5,
                "redis_timeout_s": 0.5,
                **server,
            },
        }
        self.log = log
        self.proc: subprocess.Popen | None = None

    @property
    def args(self) -> list[str]:  # type: ignore[override]
        """The command line, with the config as it is when the worker starts (tests may change it before)."""
        return [sys.executable, "-c", WORKER, json.dumps(self.config)]
