"""A real uvicorn server on loopback serving the API with the tiny model, and helpers to talk to it."""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    app: Any
    thread: threading.Thread
    server: Any

    @property
    def service(self) -> Any:
        return self.app.state.service

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)

    def call(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the server's event loop (to inspect sessions from the test)."""
        return asyncio.run_coroutine_threadsafe(coro, self.server.loop).result(timeout)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


class _Uvicorn:
    """uvicorn.Server run on its own thread and loop."""

    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=3)
        )
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def should_exit(self) -> bool:
        return self.server.should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self.server.should_exit = value

    def run(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.server.serve())
        self.loop.close()


@pytest.fixture(scope="session")
def start_server(tiny_model_dir: Path, tiny_adapter: Any) -> Iterator[Callable[..., Server]]:
    """Start API servers (stopped at the end): ``start_server(server={...}, memory={...}, ...)`` -> Server."""
    from assistant.config import VigilConfig
    from assistant.orchestrator import Orchestrator
    from serving.api import create_app
    from serving.engines import build_engine

    servers: list[Server] = []

    def start(**sections: Any) -> Server:
        sections.setdefault("model", {"name": str(tiny_model_dir), "device": "cpu", "dtype": "float32"})
        sections.setdefault("memory", {"budget_tokens": 512})
        sections.setdefault("engine", {"max_new_tokens": 8, "kv_cap_tokens": 4096})
        config = VigilConfig(**sections)
        port = free_port()
        orchestrator = Orchestrator(build_engine(config.engine, tiny_adapter), tiny_adapter, config)
        app = create_app(config, orchestrator)
        runner = _Uvicorn(app, port)
        thread = threading.Thread(target=runner.run, daemon=True, name=f"uvicorn-{port}")
        thread.start()
        deadline = time.monotonic() + 30
        while not runner.server.started:
            assert thread.is_alive(), "the API server failed to start"
            assert time.monotonic() < deadline, "the API server did not start within 30 s"
            time.sleep(0.02)
        server = Server(f"http://127.0.0.1:{port}", app, thread, runner)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def api(start_server: Callable[..., Server]) -> Server:
    """One open server (no API keys) shared by the tests that need nothing special."""
    return start_server()


def jpeg(seed: int = 0, size: tuple[int, int] = (64, 48), fmt: str = "JPEG") -> bytes:
    """A random-noise image encoded as JPEG (or PNG)."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


def clip_frames(path: Path, count: int, size: tuple[int, int] = (96, 72)) -> list[bytes]:
    """The first ``count`` frames of a real clip, decoded by PyAV and re-encoded as JPEG."""
    import av

    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            img = frame.to_image().resize(size)
            out = io.BytesIO()
            img.save(out, format="JPEG", quality=85)
            frames.append(out.getvalue())
            if len(frames) == count:
                break
    return frames


def sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Parse a streamed SSE response into {"id", "event", "data"} dicts."""
    import json

    message: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in message:
                data = message["data"]
                message["data"] = data if data == "[DONE]" else json.loads(data)
                yield message
            message = {}
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            message[field] = message["data"] + "\n" + value if field == "data" and "data" in message else value


@pytest.fixture(scope="session")
def tools() -> Any:
    """The helpers above, for test modules (importlib mode does not import conftest by name)."""
    from types import SimpleNamespace

    return SimpleNamespace(jpeg=jpeg, clip_frames=clip_frames, sse_events=sse_events, free_port=free_port)
