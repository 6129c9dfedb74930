"""A real Redis server for the archive tests: REDIS_URL when set, else a redis-server started on loopback."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _stop(pidfile: Path) -> None:
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text().strip())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a running Redis; the server started here is stopped by its pid at the end of the session."""
    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not installed and REDIS_URL is not set: install it "
            "(apt-get install -y redis-server) "
            "or point REDIS_URL at a running server",
            pytrace=False,
        )
    run_dir = tmp_path_factory.mktemp("redis")
    pidfile = run_dir / "redis.pid"
    port = _free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--daemonize", "yes", "--pidfile", str(pidfile), "--dir", str(run_dir)]
    args += ["--logfile", str(run_dir / "redis.log")]
    subprocess.run(args, check=True, timeout=30)
    try:
        deadline = time.monotonic() + 10
        while not _ping(port):
            if time.monotonic() > deadline:
                log = (run_dir / "redis.log").read_text() if (run_dir / "redis.log").exists() else ""
                pytest.fail(f"redis-server on port {port} did not answer PING within 10 s; log:\n{log}", pytrace=False)
            time.sleep(0.05)
        for _ in range(100):  # the pidfile is written just after the server starts listening
            if pidfile.exists():
                break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(pidfile)
