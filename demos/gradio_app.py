"""The live-video chat app: a webcam (or a video file / stream played as live) watched by a session, a chat that
answers at any time and speaks up by itself, settings per tab, and live figures of what the memory keeps.

``build_app`` builds the gr.Blocks over a ``serving.service.VigilService``: each browser tab's session is a
service session (in ``/v1/sessions``, the metrics and the limits), ended when the tab closes or goes quiet.
``mount`` puts it on the API server at /ui (the ``vigil.ui`` entry point, ``vigil serve --ui``); ``run_demo``
serves it standalone (``vigil demo``). Beside the page, plain endpoints (start_session, push_frame, ask, events,
stats, add_instruction, play, stop, end_session) let scripts and tests drive the same sessions with gradio_client.
"""

from __future__ import annotations

import contextlib
import ipaddress
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

import gradio as gr

from assistant.config import VigilConfig
from demos.context import STREAM_URL_SCHEMES, AppContext
from demos.endpoints import wire_endpoints
from demos.layout import build_page
from demos.login import KeyLogin
from demos.page import wire_page
from demos.registry import TabRegistry
from demos.views import model_banner
from serving.service import VigilService

TINY_MIN_NEW_TOKENS = 12
"""The random-weight test model often ends at once: ask it for a few tokens, so that answers visibly stream."""


def build_app(
    service: VigilService,
    config: VigilConfig,
    *,
    model_name: str | None = None,
    idle_timeout_s: float | None = None,
    allow_urls: Sequence[str] | None = None,
    answer_options: dict[str, Any] | None = None,
    login: KeyLogin | None = None,
    command: str = "vigil demo",
) -> gr.Blocks:
    """The live-video chat app over a running service; launches nothing.

    Handlers are coroutines, so sessions run on the loop of the server that serves the app. ``allow_urls`` are the
    stream URL prefixes a tab may ask the server to play (default: ``config.server.video_allow``); uploaded files
    can always be played. Sessions of tabs quiet for ``idle_timeout_s`` (default ``server.ui_idle_timeout_s``) are
    closed. ``answer_options`` go with every question to the engine (default: none, except at least a few tokens
    from the random-weight test model). With ``login`` (a server with API keys) a tab's sessions belong to the key
    its user logged in with; without, to the anonymous owner. ``command`` is how the app was started, for the
    page's hints (``vigil demo``, ``vigil serve --ui``).
    """
    adapter = service.orchestrator.adapter
    if model_name is None and adapter is not None:
        model_name = getattr(adapter, "name", None)
    if answer_options is None:
        tiny = bool(model_banner(model_name))
        answer_options = {"min_new_tokens": min(TINY_MIN_NEW_TOKENS, config.engine.max_new_tokens)} if tiny else {}
    timeout = config.server.ui_idle_timeout_s if idle_timeout_s is None else idle_timeout_s
    ctx = AppContext(
        service,
        config,
        TabRegistry(service, idle_timeout_s=timeout),
        login=login,
        answer_options=answer_options,
        url_prefixes=tuple(config.server.video_allow if allow_urls is None else allow_urls),
        model_name=model_name,
    )
    with gr.Blocks(title="Vigil — live video chat", analytics_enabled=False) as demo:
        page = build_page(config, ctx.defaults, model_name, command)
        wire_page(demo, ctx, page)
        wire_endpoints(ctx)
    demo.vigil_sessions = ctx.registry
    return demo


def sessions_of(demo: gr.Blocks) -> TabRegistry:
    """The session registry of an app built by ``build_app`` (to close its sessions on shutdown)."""
    return demo.vigil_sessions


def mount(app: Any, service: VigilService, config: VigilConfig, keys: Any) -> None:
    """Mount the app at ``/ui`` of the API server (the ``vigil.ui`` entry point); API keys are its passwords."""
    login = KeyLogin(keys) if keys.enabled else None
    demo = build_app(service, config, model_name=config.model.name, login=login, command="vigil serve --ui")
    gr.mount_gradio_app(app, demo, path="/ui", auth=login)
    served = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(server: Any) -> AsyncIterator[Any]:
        async with served(server) as state:
            try:
                yield state
            finally:  # the tabs' sessions and reaper end before the service stops
                await sessions_of(demo).close_all()

    app.router.lifespan_context = lifespan


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_demo(config: VigilConfig, host: str, port: int) -> int:
    """Load the model, start the engine and serve the app until interrupted (the ``vigil demo`` command)."""
    import uvicorn
    from fastapi import FastAPI

    from serving.runtime import Runtime

    runtime = Runtime.load(config)
    service = VigilService(config, runtime.orchestrator)
    # playing stream URLs makes the server fetch them: only for a local app, unless the config allows some
    allow = None if config.server.video_allow or not _is_loopback(host) else STREAM_URL_SCHEMES
    demo = build_app(service, config, model_name=runtime.adapter.name, allow_urls=allow)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            registry = sessions_of(demo)
            open_sessions = len(registry.sessions)
            await registry.close_all()
            await service.stop()  # closes what is left and the engine
            print(f"vigil: stopped ({open_sessions} open session(s) closed)", file=sys.stderr, flush=True)

    app = FastAPI(lifespan=lifespan)
    gr.mount_gradio_app(app, demo, path="", footer_links=["api"])
    mounted = app.routes[-1].app  # the gradio app: its stop event ends the tabs' heartbeat streams

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            stop = getattr(mounted, "stop_event", None)
            if stop is not None:
                stop.set()
            super().handle_exit(sig, frame)
            # a signal is how this command is meant to stop: exit normally once shut down, do not re-raise it
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured.clear()

    print(f"vigil: the live-video chat app is at http://{host}:{port}/", file=sys.stderr, flush=True)
    Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)).run()
    return 0
