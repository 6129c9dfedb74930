"""Fixtures of the app tests: the app served on loopback with the tiny model, and a y4m fake-camera clip."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest

from assistant.config import VigilConfig
from assistant.orchestrator import Orchestrator
from serving.engines.hf import HFEngine
from serving.service import VigilService

REPO = Path(__file__).resolve().parents[2]


# -- a fake camera clip from real videos ---------------------------------------------------------------------
def decode_rgb(path: Path, seconds: float, fps: float, size: tuple[int, int]) -> list[np.ndarray]:
    """RGB frames [H, W, 3] of the first ``seconds`` of a video, resampled to ``fps`` and resized to ``size``."""
    width, height = size
    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            t = float(frame.pts * frame.time_base) if frame.pts is not None else len(frames) / fps
            if t >= seconds:
                break
            while len(frames) / fps <= t and len(frames) < round(seconds * fps):
                frames.append(frame.to_ndarray(format="rgb24", width=width, height=height))
    return frames


def rgb_to_i420(rgb: np.ndarray) -> bytes:
    """One frame as planar YUV 4:2:0 (BT.601, limited range): the payload of a y4m C420 frame."""
    x = rgb.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    h, w = y.shape

    def half(c: np.ndarray) -> np.ndarray:
        return c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    return b"".join(np.clip(np.rint(p), 0, 255).astype(np.uint8).tobytes() for p in (y, half(u), half(v)))


def write_y4m(frames: list[np.ndarray], path: Path, fps: int) -> Path:
    """RGB frames (even width and height) as an uncompressed y4m file whose header says ``C420``."""
    height, width = frames[0].shape[:2]
    if width % 2 or height % 2:
        raise ValueError(f"y4m 4:2:0 needs an even frame size, got {width}x{height}")
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420\n".encode())
        for frame in frames:
            out.write(b"FRAME\n" + rgb_to_i420(frame))
    return path


@pytest.fixture(scope="session")
def y4m_writer() -> Callable[[list[np.ndarray], Path, int], Path]:
    return write_y4m


@pytest.fixture(scope="session")
def camera_frames(real_clips: dict[str, Path]) -> list[np.ndarray]:
    """4 s of a quiet scene (Big Buck Bunny's opening) cut hard to 3 s of traffic (bikes), 10 fps, 320x240."""
    size = (320, 240)
    return decode_rgb(real_clips["bigbuckbunny"], 4.0, 10, size) + decode_rgb(real_clips["bikes"], 3.0, 10, size)


@pytest.fixture(scope="session")
def camera_y4m(camera_frames: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake camera's clip (Chromium loops it: a hard cut every 7 s)."""
    return write_y4m(camera_frames, tmp_path_factory.mktemp("camera") / "camera.y4m", 10)


# -- the app on loopback ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_config(**engine: object) -> VigilConfig:
    return VigilConfig(
        perception={"fps": 2.0},
        memory={"budget_tokens": 2048},
        engine={"max_new_tokens": 48, **engine},
    )


@dataclass
class RunningApp:
    url: str
    demo: object
    service: VigilService

    @property
    def orchestrator(self) -> Orchestrator:
        return self.service.orchestrator

    @property
    def registry(self):
        from demos.gradio_app import sessions_of

        return sessions_of(self.demo)

    def run(self, coro: object, timeout: float = 30.0) -> object:
        """Run a coroutine on the app's event loop (where its sessions live)."""
        return asyncio.run_coroutine_threadsafe(coro, self.registry.loop).result(timeout)


def serve_app(adapter: object, config: VigilConfig, engine: object | None = None, **kwargs: object) -> RunningApp:
    """Build the app for a fresh service and orchestrator and launch it on a free loopback port (not blocking)."""
    from demos.gradio_app import build_app

    orchestrator = Orchestrator(engine or HFEngine(adapter, config.engine), adapter, config)
    service = VigilService(config, orchestrator)
    demo = build_app(service, config, **kwargs)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    return RunningApp(f"http://127.0.0.1:{port}/", demo, service)


def stop_app(app: RunningApp) -> None:
    """Close every session, the service and the engine on the app's loop, then the server."""
    if app.registry.loop is not None:

        async def shutdown() -> None:
            await app.registry.close_all()
            await app.service.stop()

        app.run(shutdown())
    app.demo.close()


@pytest.fixture(scope="module")
def app(tiny_adapter: object) -> Iterator[RunningApp]:
    """The app with the tiny model, served in this process."""
    running = serve_app(tiny_adapter, app_config())
    yield running
    stop_app(running)


def save_artifact(path: Path) -> Path:
    """Copy a test artifact to $VIGIL_ARTIFACTS (default: artifacts/ui in the checkout, ignored by git)."""
    target = Path(os.environ.get("VIGIL_ARTIFACTS") or REPO / "artifacts" / "ui")
    target.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(path, target / path.name))


@pytest.fixture(scope="session")
def artifact_saver() -> Callable[[Path], Path]:
    return save_artifact


@pytest.fixture(scope="session")
def app_server() -> Callable[..., RunningApp]:
    """``serve_app``: start another app (a custom engine or options); stop it with ``stop_app``."""
    return serve_app


@pytest.fixture(scope="session")
def app_stopper() -> Callable[[RunningApp], None]:
    return stop_app
