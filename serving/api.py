"""The HTTP API: the app assembled from the routers in ``serving.routes`` over :class:`serving.service.VigilService`,
and ``vigil serve``."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI

from assistant.config import LimitsConfig, VigilConfig
from assistant.orchestrator import Orchestrator
from serving import swagger
from serving.auth import KeyRing
from serving.directory import SessionDirectory, make_directory
from serving.forward import ForwardMiddleware
from serving.limits import BodyLimitMiddleware
from serving.routes import events, frames, health, openai, questions, sessions, stream, video
from serving.routes.errors import add_error_handlers
from serving.schemas import ErrorResponse
from serving.service import VigilService

SESSION_PATH = r"/v1/sessions/[^/]+"
ROUTERS = (health, sessions, frames, stream, video, questions, events, openai)
"""The route modules, in the order their operations appear in the OpenAPI schema."""

Mount = Callable[[FastAPI, VigilService, VigilConfig, KeyRing], None]
"""A front end's hook: ``mount(app, service, config, keys)`` adds its routes to the API app."""


def create_app(
    config: VigilConfig,
    orchestrator: Orchestrator,
    *,
    directory: SessionDirectory | None = None,
    model_name: str | None = None,
    mount: Mount | None = None,
) -> FastAPI:
    """The API app for ``orchestrator`` (its engine and model are shared by every session).

    ``mount`` adds a front end (the browser app, wired by ``serving.runtime``) to the app.
    """
    directory = directory or make_directory(config.server.redis_url, config.server.redis_timeout_s)
    service = VigilService(config, orchestrator, directory, worker_id=config.server.worker_id)
    keys = KeyRing(config.server.api_keys)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await forwarder.close()
            await service.stop()

    app = FastAPI(
        title="Vigil",
        version="0.1.0",
        description="A video-LLM that watches live video, keeps a bounded memory and answers at any moment.",
        lifespan=lifespan,
        docs_url=None,  # serving.swagger serves Swagger UI from a package, not a CDN
        redoc_url=None,
        responses={401: {"model": ErrorResponse}},
    )
    app.state.service = service
    app.state.keys = keys
    app.state.model_name = model_name or config.model.name
    limits = config.server.limits
    app.add_middleware(
        BodyLimitMiddleware,
        default=limits.max_body_bytes,
        routes=[(SESSION_PATH + "/video", limits.max_upload_bytes)],
    )
    app.add_middleware(ForwardMiddleware, service=service)  # outermost: the owner worker applies its own limits
    forwarder = _Forwarder(app)
    add_error_handlers(app)
    for module in ROUTERS:
        app.include_router(module.router)
    app.include_router(swagger.router)
    if mount is not None:
        mount(app, service, config, keys)
    return app


class _Forwarder:
    """The app's ForwardMiddleware once Starlette has built its middleware stack (to close its client)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def close(self) -> None:
        layer = self.app.middleware_stack
        while layer is not None:
            if isinstance(layer, ForwardMiddleware):
                await layer.close()
                return
            layer = getattr(layer, "app", None)


KEEP_ALIVE_S = 5.0
"""Idle time after which a kept-alive connection is closed."""


def uvicorn_config(app: FastAPI, limits: LimitsConfig, **kwargs: Any) -> Any:
    """uvicorn's settings for the API: h11 with a bounded request head, a connection limit (503 beyond), idle
    connections closed, and requests whose head does not arrive within ``limits.header_timeout_s`` dropped."""
    import uvicorn

    from serving.slow_requests import guarded_h11

    return uvicorn.Config(
        app,
        http=guarded_h11(limits.header_timeout_s),
        h11_max_incomplete_event_size=limits.max_header_bytes,
        limit_concurrency=limits.max_connections,
        timeout_keep_alive=KEEP_ALIVE_S,
        ws_max_size=limits.max_frame_bytes,
        **{"log_level": "warning", "timeout_graceful_shutdown": 3, **kwargs},
    )


class BackgroundServer:
    """A uvicorn server for ``app`` on its own thread and event loop (benchmarks, tests, notebooks)."""

    def __init__(
        self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, limits: LimitsConfig | None = None
    ) -> None:
        import threading

        import uvicorn

        self.app = app
        self._sock = socket.socket()
        self._sock.bind((host, port))
        self.url = f"http://{host}:{self._sock.getsockname()[1]}"
        service = getattr(app.state, "service", None)
        limits = limits or (service.limits if service is not None else LimitsConfig())
        self.server = uvicorn.Server(uvicorn_config(app, limits))
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"uvicorn-{self.url}")

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.server.serve(sockets=[self._sock]))
        self.loop.close()

    def start(self, timeout: float = 60.0) -> BackgroundServer:
        """Start serving and wait until the server accepts connections."""
        import time

        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the API server failed to start")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the API server did not start within {timeout} s")
            time.sleep(0.02)
        return self

    def call(self, coro: Any, timeout: float = 60.0) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        """Shut the server down (running requests get a few seconds) and wait for its thread."""
        self.server.should_exit = True
        self.thread.join(30)
