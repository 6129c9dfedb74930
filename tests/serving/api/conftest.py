"""A real uvicorn server on loopback serving the API with the tiny model, and helpers to talk to it."""

from __future__ import annotations

import io
import socket
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
    background: Any

    @property
    def service(self) -> Any:
        return self.app.state.service

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)

    def call(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the server's event loop (to inspect sessions from the test)."""
        return self.background.call(coro, timeout)


@pytest.fixture(scope="session")
def start_server(tiny_model_dir: Path, tiny_adapter: Any) -> Iterator[Callable[..., Server]]:
    """Start API servers (stopped at the end): ``start_server(server={...}, memory={...}, ...)`` -> Server."""
    from assistant.config import VigilConfig
    from assistant.orchestrator import Orchestrator
    from serving.api import BackgroundServer
    from serving.engines import build_engine
    from serving.runtime import Runtime

    servers: list[Server] = []

    def start(**sections: Any) -> Server:
        sections.setdefault("model", {"name": str(tiny_model_dir), "device": "cpu", "dtype": "float32"})
        sections.setdefault("memory", {"budget_tokens": 512})
        sections.setdefault("engine", {"max_new_tokens": 8, "kv_cap_tokens": 4096})
        config = VigilConfig(**sections)
        orchestrator = Orchestrator(build_engine(config.engine, tiny_adapter), tiny_adapter, config)
        app = Runtime(config, tiny_adapter, orchestrator).api_app()
        background = BackgroundServer(app).start()
        server = Server(background.url, app, background)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.background.stop()


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


def post_frame(
    client: httpx.Client, session_id: str, data: bytes, t: float | None = None, **kwargs: Any
) -> httpx.Response:
    """POST one JPEG frame (at stream time ``t`` when given) to a session."""
    params = {"t": t} if t is not None else {}
    headers = {"Content-Type": "image/jpeg"}
    return client.post(f"/v1/sessions/{session_id}/frames", params=params, content=data, headers=headers, **kwargs)


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

    return SimpleNamespace(
        jpeg=jpeg, post_frame=post_frame, clip_frames=clip_frames, sse_events=sse_events, free_port=free_port
    )
