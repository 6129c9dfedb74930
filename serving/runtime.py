"""The composition root: config → model → engine → orchestrator → service → served, for the CLI, the API and the app.

Nothing here parses arguments or handles a request; the edges (``serving.cli``, ``serving.api``, the browser app) take
what this builds. Optional front ends plug in through entry points, so ``serving`` never imports them:

- ``vigil.ui``: a function ``mount(app, service, config, keys)`` that mounts a browser app on the API server;
- ``vigil.commands``: a function ``register(commands)`` that adds ``vigil`` subcommands (see ``serving.cli``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from assistant.config import EngineConfig, VigilConfig
    from assistant.models.base import VisionLanguageAdapter
    from assistant.orchestrator import Orchestrator
    from assistant.reaction import EngineFactory, ReactionEngine

log = logging.getLogger(__name__)

UI_ENTRY_POINTS = "vigil.ui"
COMMAND_ENTRY_POINTS = "vigil.commands"


class SetupError(Exception):
    """A user-facing problem with the configuration, the model or the engine: one line for people, no traceback."""


def validated_config(**sections: Any) -> VigilConfig:
    """A VigilConfig from config sections, with every problem in one SetupError."""
    from pydantic import ValidationError

    from assistant.config import VigilConfig, format_validation_error

    try:
        return VigilConfig(**sections)
    except ValidationError as exc:
        raise SetupError(f"invalid options: {format_validation_error(exc)}") from None


def load_model(config: VigilConfig) -> VisionLanguageAdapter:
    """Load the configured adapter (a Hugging Face id, a local path or ``tiny``); SetupError when it cannot."""
    from assistant.models import ModelLoadError, load_adapter
    from assistant.models.tiny import is_tiny_model

    try:
        adapter = load_adapter(config.model.name, device=config.model.device, dtype=config.model.dtype)
    except (ModelLoadError, ValueError) as exc:
        raise SetupError(str(exc)) from None
    if is_tiny_model(adapter.name):
        print("vigil: note: the tiny test model has random weights; its answers are random words", file=sys.stderr)
    return adapter


def bench_model(model: str, *, arch: str | None = None, device: str = "auto", dtype: str = "auto") -> Any:
    """The model a benchmark runs: a checkpoint, or a real-size random-weight architecture (``arch``)."""
    from assistant.models import ModelLoadError, load_adapter
    from assistant.models.presets import build_random_adapter

    try:
        if arch:
            return build_random_adapter(arch, device=device, dtype=dtype)
        return load_adapter(model, device=device, dtype=dtype)
    except (ModelLoadError, ValueError) as exc:
        raise SetupError(str(exc)) from None


def make_engine(engine_config: EngineConfig, adapter: VisionLanguageAdapter) -> ReactionEngine:
    """The reaction engine an engine config names (SetupError when it cannot be built here)."""
    from serving.engines import EngineUnavailableError, build_engine

    try:
        return build_engine(engine_config, adapter)
    except EngineUnavailableError as exc:
        raise SetupError(str(exc)) from None


def engine_factory(adapter: VisionLanguageAdapter) -> EngineFactory:
    """``make_engine`` bound to a loaded model (what sessions and benchmarks are given)."""
    return lambda engine_config: make_engine(engine_config, adapter)


def ui_mount() -> Callable[..., None]:
    """The browser app's ``mount(app, service, config, keys)`` hook, from the ``vigil.ui`` entry point."""
    found = sorted(entry_points(group=UI_ENTRY_POINTS), key=lambda ep: ep.name)
    if not found:
        raise SetupError("no browser app is installed; install the demo extra: pip install 'vigil[demo]'") from None
    try:
        return found[0].load()
    except ImportError as exc:
        raise SetupError(
            f"the browser app cannot load ({exc}); install the demo extra: pip install 'vigil[demo]'"
        ) from None


@dataclass
class Runtime:
    """A loaded model, its engine and the orchestrator that runs sessions on them."""

    config: VigilConfig
    adapter: VisionLanguageAdapter
    orchestrator: Orchestrator

    @classmethod
    def load(cls, config: VigilConfig) -> Runtime:
        """Load the model and build the engine and the orchestrator (SetupError when one cannot be had)."""
        from assistant.orchestrator import Orchestrator

        adapter = load_model(config)
        return cls(config, adapter, Orchestrator(make_engine(config.engine, adapter), adapter, config))

    def api_app(self, **kwargs: Any) -> Any:
        """The HTTP API over this runtime, with the browser app mounted at ``/ui`` when ``server.ui`` is set."""
        from serving.api import create_app

        mount = ui_mount() if self.config.server.ui else None
        return create_app(self.config, self.orchestrator, model_name=self.config.model.name, mount=mount, **kwargs)


def serve(config: VigilConfig) -> int:
    """Load the model and engine, then serve the API (and the app with ``server.ui``) until interrupted."""
    import socket

    import uvicorn

    from serving.api import uvicorn_config

    server_config = config.server
    sock = socket.socket(socket.AF_INET6 if ":" in server_config.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((server_config.host, server_config.port))
    url = f"http://{server_config.host}:{sock.getsockname()[1]}"
    if server_config.public_url is None:
        config = config.model_copy(update={"server": server_config.model_copy(update={"public_url": url})})
    if config.server.ui:
        ui_mount()  # a missing browser app is reported before the model loads
    app = Runtime.load(config).api_app()
    print(f"vigil: serving {config.model.name} on {url}" + (f" (app at {url}/ui)" if config.server.ui else ""))
    print(f"vigil: API docs at {url}/docs", flush=True)
    server = uvicorn.Server(uvicorn_config(app, config.server.limits, timeout_graceful_shutdown=5))
    server.run(sockets=[sock])
    return 0
