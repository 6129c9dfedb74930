"""The HTTP API: FastAPI routes over :class:`serving.service.VigilService`, and ``vigil serve``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from assistant.config import VigilConfig
from assistant.orchestrator import Orchestrator
from serving.auth import KeyRing, Unauthorized
from serving.deps import Owner
from serving.directory import SessionDirectory, make_directory
from serving.limits import BodyLimitMiddleware
from serving.schemas import (
    AnswerView,
    ErrorResponse,
    FramesResult,
    Question,
    SessionCreate,
    SessionList,
    SessionView,
    VideoRequest,
    VideoView,
)
from serving.service import ServiceError, VigilService
from serving.sse import KEEPALIVE, sse, sse_response
from serving.uploads import UploadError, allowed_source, check_video_head

log = logging.getLogger(__name__)

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp")
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (401, 404, 410, 413, 415, 422, 429)
}
SESSION_PATH = r"/v1/sessions/[^/]+"


class Instruction(BaseModel):
    instruction: str = Field(min_length=1, max_length=2000)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media",
    422: "invalid_request",
    429: "rate_limited",
}


def create_app(
    config: VigilConfig,
    orchestrator: Orchestrator,
    *,
    directory: SessionDirectory | None = None,
    model_name: str | None = None,
    mount: Callable[[FastAPI, VigilService, VigilConfig, KeyRing], None] | None = None,
) -> FastAPI:
    """The API app for ``orchestrator`` (its engine and model are shared by every session).

    ``mount`` adds a front end (the browser app, wired by ``serving.runtime``) to the app.
    """
    service = VigilService(
        config, orchestrator, directory or make_directory(config.server.redis_url), worker_id=config.server.worker_id
    )
    keys = KeyRing(config.server.api_keys)
    limits = config.server.limits
    model_name = model_name or config.model.name

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="Vigil",
        version="0.1.0",
        description="A video-LLM that watches live video, keeps a bounded memory and answers at any moment.",
        lifespan=lifespan,
        responses={401: {"model": ErrorResponse}},
    )
    app.state.service = service
    app.state.keys = keys
    app.add_middleware(
        BodyLimitMiddleware,
        default=limits.max_body_bytes,
        routes=[(SESSION_PATH + "/video", limits.max_upload_bytes)],
    )

    # -- errors --------------------------------------------------------------------------------------------
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        headers = dict(exc.headers)
        if exc.redirect:
            query = f"?{request.url.query}" if request.url.query else ""
            headers["Location"] = exc.redirect.rstrip("/") + request.url.path + query
        if exc.status in (413, 415, 422, 429):
            service.metrics.rejected.labels(exc.code).inc()
        return error_response(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors()[:10]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {err.get('msg')}")
        return error_response(422, "invalid_request", "; ".join(problems))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal", "internal error; the server log has details")

    # -- service -------------------------------------------------------------------------------------------
    @app.get("/health", tags=["service"])
    async def health() -> dict[str, Any]:
        """Liveness and what this worker runs (no key needed)."""
        redis_ok = await service.directory.ping()
        return {
            "status": "ok" if redis_ok else "degraded",
            "worker": service.worker_id,
            "model": model_name,
            "engine": config.engine.kind,
            "sessions": len(service.hosted),
            "directory": "redis" if service.directory.shared else "local",
            "directory_ok": redis_ok,
        }

    @app.get("/metrics", tags=["service"], response_class=Response)
    async def metrics(_: Owner) -> Response:
        """Prometheus metrics of this worker."""
        body, content_type = service.metrics.render()
        return Response(body, media_type=content_type)

    # -- sessions ------------------------------------------------------------------------------------------
    @app.post("/v1/sessions", status_code=201, response_model=SessionView, tags=["sessions"], responses=ERRORS)
    async def create_session(who: Owner, spec: SessionCreate | None = None) -> SessionView:
        """Start a live session; per-session options override the server's defaults."""
        return await service.create(who, spec or SessionCreate())

    @app.get("/v1/sessions", response_model=SessionList, tags=["sessions"])
    async def list_sessions(who: Owner) -> dict[str, Any]:
        """Sessions of this API key, on every worker."""
        return {"data": await service.list(who)}

    @app.get("/v1/sessions/{session_id}", response_model=SessionView, tags=["sessions"], responses=ERRORS)
    async def get_session(session_id: str, who: Owner) -> SessionView:
        return await service.describe(who, session_id)

    @app.delete("/v1/sessions/{session_id}", status_code=204, tags=["sessions"], responses=ERRORS)
    async def delete_session(session_id: str, who: Owner) -> Response:
        """End a session and forget it."""
        await service.delete(who, session_id)
        return Response(status_code=204)

    # -- frames --------------------------------------------------------------------------------------------
    frame_body = {
        "requestBody": {
            "content": {
                **{t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "frame": {"type": "array", "items": {"type": "string", "format": "binary"}},
                            "t": {"type": "array", "items": {"type": "number"}},
                        },
                    }
                },
            },
            "required": True,
        }
    }

    @app.post(
        "/v1/sessions/{session_id}/frames",
        response_model=FramesResult,
        tags=["frames"],
        responses=ERRORS,
        openapi_extra=frame_body,
    )
    async def push_frames(
        session_id: str,
        request: Request,
        who: Owner,
        t: Annotated[float | None, Query(description="Stream time of a single image (default: now).")] = None,
    ) -> dict[str, Any]:
        """One image (``image/jpeg``, ``image/png``, ``image/webp``) or several as ``multipart/form-data``."""
        await service.get(who, session_id)  # 404/307 before reading a body
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type in IMAGE_TYPES:
            header_t = request.headers.get("x-frame-time")
            if t is None and header_t is not None:
                t = _parse_time(header_t)
            frames = [(await request.body(), t)]
        elif content_type == "multipart/form-data":
            frames = await _multipart_frames(request)
        else:
            raise ServiceError(
                415,
                "unsupported_media",
                f"send frames as {', '.join(IMAGE_TYPES)} or multipart/form-data, not {content_type or 'nothing'}",
            )
        return await service.push_frames(who, session_id, frames)

    async def _multipart_frames(request: Request) -> list[tuple[bytes, float | None]]:
        try:
            form = await request.form(max_files=limits.max_frames_per_request, max_fields=limits.max_frames_per_request)
        except StarletteHTTPException:
            raise
        except Exception as exc:
            raise ServiceError(422, "invalid_multipart", f"unreadable multipart body: {exc}") from None
        images: list[bytes] = []
        times: list[float] = []
        for key, value in form.multi_items():
            if isinstance(value, str):
                if key != "t":
                    raise ServiceError(422, "invalid_multipart", f"unexpected form field {key!r}; use frame and t")
                times.append(_parse_time(value))
            else:
                images.append(await value.read())
        await form.close()
        if times and len(times) != len(images):
            raise ServiceError(422, "invalid_multipart", f"{len(times)} times for {len(images)} frames")
        return [(img, times[i] if times else None) for i, img in enumerate(images)]

    # -- live stream over WebSocket ------------------------------------------------------------------------
    @app.websocket("/v1/sessions/{session_id}/stream")
    async def stream(ws: WebSocket, session_id: str) -> None:
        """Binary messages are frames (encoded images); text messages are JSON commands; events come back."""
        try:
            who = keys.owner(ws.headers.get("authorization"), ws.query_params.get("api_key"))
            h = await service.get(who, session_id)
        except (Unauthorized, ServiceError) as exc:
            await ws.accept()
            code = getattr(exc, "code", "unauthorized")
            await ws.send_json({"type": "error", "code": code, "message": str(exc)})
            await ws.close(code=1008)
            return
        await ws.accept()
        after = ws.query_params.get("after")
        cursor = int(after) if after and after.isdigit() else h.live.events.last_seq

        async def send_events() -> None:
            async for event in service.events(who, session_id, cursor):
                if event is not None:
                    await ws.send_json(event)
            await ws.close()

        sender = asyncio.create_task(send_events())
        next_t: float | None = None
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                try:
                    if message.get("bytes") is not None:
                        await service.push_frames(who, session_id, [(message["bytes"], next_t)])
                        next_t = None
                    elif message.get("text") is not None:
                        next_t = await _ws_command(ws, who, session_id, message["text"], next_t)
                except ServiceError as exc:
                    await ws.send_json({"type": "error", "code": exc.code, "message": exc.message})
        except WebSocketDisconnect:
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender

    async def _ws_command(ws: WebSocket, who: str, session_id: str, text: str, next_t: float | None) -> float | None:
        try:
            command = json.loads(text)
            kind = command["type"]
        except (ValueError, KeyError, TypeError):
            raise ServiceError(422, "invalid_command", 'commands are JSON objects with a "type"') from None
        if kind == "time":
            return _parse_time(command.get("t"))
        if kind == "ask":
            question = command.get("question")
            if not isinstance(question, str):
                raise ServiceError(422, "invalid_command", "ask needs a question string")
            _, answer_id, _, _ = await service.ask(who, session_id, question)
            await ws.send_json({"type": "question_queued", "answer_id": answer_id, "question": question})
            return next_t
        raise ServiceError(422, "invalid_command", f"unknown command {kind!r}; use time or ask")

    # -- video ---------------------------------------------------------------------------------------------
    video_body = {
        "requestBody": {
            "content": {
                "application/json": {"schema": VideoRequest.model_json_schema()},
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
                },
                "video/mp4": {"schema": {"type": "string", "format": "binary"}},
            },
            "required": True,
        }
    }

    @app.post(
        "/v1/sessions/{session_id}/video",
        status_code=202,
        response_model=VideoView,
        tags=["frames"],
        responses={**ERRORS, 403: {"model": ErrorResponse}, 409: {"model": ErrorResponse}},
        openapi_extra=video_body,
    )
    async def play_video(
        session_id: str,
        request: Request,
        who: Owner,
        speed: Annotated[str, Query(pattern=r"^(realtime|max|\d+(\.\d+)?)$")] = "realtime",
    ) -> dict[str, Any]:
        """Play a video into the session as live: an upload (multipart ``file`` or a raw video body) or a
        server-side path/URL on the allow-list (JSON ``{"source": ...}``)."""
        await service.get(who, session_id)
        pace: str | float = speed if speed in ("realtime", "max") else float(speed)
        if not (pace in ("realtime", "max") or (isinstance(pace, float) and 0 < pace <= 1000)):
            raise ServiceError(422, "invalid_request", "speed must be realtime, max or a factor in (0, 1000]")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if content_type == "application/json":
                try:
                    body = VideoRequest.model_validate_json(await request.body())
                except ValidationError as exc:
                    raise ServiceError(422, "invalid_request", str(exc).splitlines()[0]) from None
                source = allowed_source(body.source, config.server.video_allow)
                return await service.play(who, session_id, source, speed=body.speed)
            if content_type == "multipart/form-data":
                path, name = await _save_multipart_video(request)
            elif content_type.startswith("video/") or content_type == "application/octet-stream":
                path, name = await _save_video(request.stream()), "upload"
            else:
                raise ServiceError(
                    415, "unsupported_media", "send a video (multipart file or video/* body) or JSON with a source"
                )
        except UploadError as exc:
            raise ServiceError(exc.status, exc.code, str(exc)) from None
        return await service.play(who, session_id, path, speed=pace, cleanup=path, label=name)

    async def _save_multipart_video(request: Request) -> tuple[str, str]:
        try:
            form = await request.form(max_files=1, max_fields=4)
        except StarletteHTTPException:
            raise
        except Exception as exc:
            raise ServiceError(422, "invalid_multipart", f"unreadable multipart body: {exc}") from None
        try:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ServiceError(422, "invalid_multipart", "the video goes in a form field named 'file'")

            async def chunks() -> AsyncIterator[bytes]:
                while chunk := await upload.read(1 << 20):
                    yield chunk

            return await _save_video(chunks()), upload.filename or "upload"
        finally:
            await form.close()

    async def _save_video(chunks: AsyncIterator[bytes]) -> str:
        fd, path = tempfile.mkstemp(prefix="vigil-upload-", suffix=".video")
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                head = b""
                async for chunk in chunks:
                    if len(head) < 512:
                        head += chunk[: 512 - len(head)]
                    size += len(chunk)
                    if size > limits.max_upload_bytes:
                        raise UploadError(413, "upload_too_large", f"videos are limited to {limits.max_upload_bytes}")
                    await asyncio.to_thread(out.write, chunk)
            if size == 0:
                raise UploadError(422, "empty_upload", "the video file is empty")
            check_video_head(head)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        return path

    @app.get("/v1/sessions/{session_id}/video", response_model=VideoView, tags=["frames"], responses=ERRORS)
    async def video_status(session_id: str, who: Owner) -> dict[str, Any]:
        h = await service.get(who, session_id)
        if h.playback is None:
            raise ServiceError(404, "no_video", "no video was played into this session")
        return h.playback.view()

    @app.delete("/v1/sessions/{session_id}/video", response_model=VideoView, tags=["frames"], responses=ERRORS)
    async def stop_video(session_id: str, who: Owner) -> dict[str, Any]:
        """Stop the video that plays into the session (what it sent stays in memory)."""
        return await service.stop_video(who, session_id)

    # -- questions -----------------------------------------------------------------------------------------
    @app.post(
        "/v1/sessions/{session_id}/messages",
        response_model=AnswerView,
        tags=["questions"],
        responses={**ERRORS, 200: {"content": {"text/event-stream": {}, "application/json": {}}}},
    )
    async def ask(
        session_id: str,
        body: Question,
        who: Owner,
        stream: Annotated[bool, Query(description="Stream the answer as Server-Sent Events.")] = True,
    ) -> Any:
        """Ask about the stream; the answer streams as SSE (``answer_start``, ``answer_delta``, ``answer_done``)."""
        h, answer_id, future, after = await service.ask(
            who,
            session_id,
            body.question,
            body.t,
            max_new_tokens=body.max_new_tokens,
            min_new_tokens=body.min_new_tokens,
            temperature=body.temperature,
        )
        if not stream:
            return _answer_view(await service.wait_answer(future))

        async def events() -> AsyncIterator[bytes]:
            finished = False
            try:
                async for event in service.answer_events(h, answer_id, after):
                    if event is None:
                        yield KEEPALIVE
                        continue
                    if event.type == "answer_done":
                        finished = True
                        yield sse(_answer_view(event), event="answer_done")
                    elif event.type == "error":
                        finished = True
                        yield sse({"code": event.code, "message": event.message}, event="error")
                    elif event.type == "answer_delta":
                        yield sse({"id": answer_id, "text": event.text}, event="answer_delta")
                    else:
                        yield sse({"id": answer_id, "question": event.question, "t": event.t}, event="answer_start")
            except ServiceError as exc:
                finished = True
                yield sse({"code": exc.code, "message": exc.message}, event="error")
            finally:
                if not finished:  # the client went away: stop generating
                    h.live.cancel(answer_id)

        return sse_response(events())

    @app.delete("/v1/sessions/{session_id}/messages/{answer_id}", status_code=204, tags=["questions"])
    async def cancel_answer(session_id: str, answer_id: str, who: Owner) -> Response:
        """Cancel a queued or running answer."""
        if not await service.cancel(who, session_id, answer_id):
            raise ServiceError(404, "answer_not_found", f"no queued or running answer {answer_id!r}")
        return Response(status_code=204)

    @app.post("/v1/sessions/{session_id}/instructions", status_code=201, tags=["questions"], responses=ERRORS)
    async def add_instruction(session_id: str, body: Instruction, who: Owner) -> dict[str, Any]:
        """Add a standing instruction ("tell me when ..."), checked from now on."""
        await service.add_instruction(who, session_id, body.instruction)
        return {"instruction": body.instruction.strip()}

    # -- events and memory ---------------------------------------------------------------------------------
    @app.get(
        "/v1/sessions/{session_id}/events",
        tags=["events"],
        responses={**ERRORS, 200: {"content": {"text/event-stream": {}}}},
        response_class=Response,
    )
    async def session_events(
        session_id: str,
        request: Request,
        who: Owner,
        after: Annotated[int | None, Query(ge=0, description="Resume after this event id.")] = None,
    ) -> Response:
        """Every session event as SSE with ``id`` = sequence number; ``Last-Event-ID`` resumes without a gap."""
        last = request.headers.get("last-event-id")
        if last is not None:
            if not last.strip().isdigit():
                raise ServiceError(422, "invalid_request", "Last-Event-ID must be an event id (an integer)")
            after = int(last)
        stream = service.events(who, session_id, after or 0)
        first = await _first(stream)  # errors (404, 307) before the response starts

        async def body() -> AsyncIterator[bytes]:
            pending = [first] if first is not _END else []
            for event in pending:
                yield _event_message(event)
            if first is _END:
                return
            async for event in stream:
                yield _event_message(event)

        return sse_response(body())

    @app.get("/v1/sessions/{session_id}/memory", tags=["sessions"], responses=ERRORS)
    async def memory(session_id: str, who: Owner) -> dict[str, Any]:
        """Memory, drop and engine statistics of a session."""
        return await service.memory(who, session_id)

    from serving.openai_compat import add_routes

    add_routes(app, service)

    if mount is not None:
        mount(app, service, config, keys)
    return app


_END = object()


async def _first(stream: AsyncIterator[Any]) -> Any:
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return _END


def _event_message(event: dict[str, Any] | None) -> bytes:
    if event is None:
        return KEEPALIVE
    return sse(event, event=event["type"], id=event.get("seq"))


def _answer_view(done: Any) -> dict[str, Any]:
    return {
        "id": done.answer_id,
        "question": done.question,
        "answer": done.text,
        "t": round(done.t, 4),
        "finish_reason": done.finish_reason,
        "ttft_s": round(done.ttft_s, 4),
        "total_s": round(done.total_s, 4),
        "prompt_tokens": done.prompt_tokens,
        "cached_tokens": done.cached_tokens,
        "generated_tokens": done.generated_tokens,
    }


def _parse_time(value: Any) -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise ServiceError(422, "invalid_time", f"frame time must be a number of seconds, got {value!r}") from None
    if not (t >= 0 and t < float("inf")):
        raise ServiceError(422, "invalid_time", f"frame time must be a finite number >= 0, got {value!r}")
    return t


def run_server(config: VigilConfig) -> int:
    """Load the model and engine, then serve until interrupted (``vigil serve``)."""
    import uvicorn

    from serving.runtime import Runtime

    server_config = config.server
    sock = socket.socket(socket.AF_INET6 if ":" in server_config.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((server_config.host, server_config.port))
    port = sock.getsockname()[1]
    url = f"http://{server_config.host}:{port}"
    if server_config.public_url is None:
        config = config.model_copy(update={"server": server_config.model_copy(update={"public_url": url})})
    app = Runtime.load(config).api_app()
    print(f"vigil: serving {config.model.name} on {url}" + (f" (app at {url}/ui)" if config.server.ui else ""))
    print(f"vigil: API docs at {url}/docs", flush=True)
    sys.stdout.flush()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    server.run(sockets=[sock])
    return 0


class BackgroundServer:
    """A uvicorn server for ``app`` on its own thread and event loop (benchmarks, tests, notebooks)."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        import threading

        import uvicorn

        self.app = app
        self._sock = socket.socket()
        self._sock.bind((host, port))
        self.url = f"http://{host}:{self._sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=3))
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"uvicorn-{self.url}")

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.server.serve(sockets=[self._sock]))
        self.loop.close()

    def start(self, timeout: float = 60.0) -> BackgroundServer:
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
        self.server.should_exit = True
        self.thread.join(30)
