"""What the HTTP API does, without HTTP: sessions per API key on this worker, limits, playback, event streams.

Sessions run on the worker that created them. The directory (in-process, or Redis for many workers) says who owns
a session and where it runs; a request for a session of another live worker gets a redirect to that worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from assistant.config import SessionOptions, VigilConfig, format_validation_error
from assistant.decision import InstructionMonitor
from assistant.events import AnswerFinished, ErrorEvent, SessionEvent
from assistant.orchestrator import LiveSession, Orchestrator, SessionClosedError
from assistant.sources import FrameTimeError, InvalidFrameError, SourceError, open_source
from serving.directory import DirectoryError, LocalDirectory, SessionDirectory, SessionRecord
from serving.limits import TokenBucket
from serving.metrics import Metrics
from serving.schemas import SessionCreate, SessionView

log = logging.getLogger(__name__)

HEARTBEAT_S = 2.0
KEEPALIVE_S = 15.0


class ServiceError(Exception):
    """A refused request: HTTP status, a stable error code and a message for people."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        redirect: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.redirect = redirect
        """Base URL of the worker that runs the session (the API appends the request path)."""


def _not_found(session_id: str) -> ServiceError:
    return ServiceError(404, "session_not_found", f"no session {session_id!r}")


@dataclass
class Playback:
    """A video played into a session as if it were live."""

    source: str
    task: asyncio.Task | None = None
    frames: int = 0
    duration_s: float | None = None
    end_reason: str | None = None
    error: str | None = None
    cleanup: str | None = None
    """Temporary upload to delete when playback ends."""

    @property
    def state(self) -> str:
        if self.task is None or not self.task.done():
            return "playing"
        return "failed" if self.error else ("stopped" if self.task.cancelled() else "finished")

    def view(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "source": self.source,
            "frames": self.frames,
            "duration_s": self.duration_s,
            "end_reason": self.end_reason,
            "error": self.error,
        }


@dataclass
class Hosted:
    """A session that runs on this worker."""

    live: LiveSession
    record: SessionRecord
    config: VigilConfig
    bucket: TokenBucket
    last_active: float = field(default_factory=time.monotonic)
    frames_in: int = 0
    subscribers: int = 0
    playback: Playback | None = None
    watcher: asyncio.Task | None = None


class VigilService:
    """Sessions of one worker, shared state through a directory, limits from ``config.server.limits``."""

    def __init__(
        self,
        config: VigilConfig,
        orchestrator: Orchestrator,
        directory: SessionDirectory | None = None,
        *,
        worker_id: str | None = None,
    ) -> None:
        self.config = config
        self.limits = config.server.limits
        self.orchestrator = orchestrator
        self.directory = directory or LocalDirectory()
        self.worker_id = worker_id or config.server.worker_id or f"w{uuid.uuid4().hex[:8]}"
        self.public_url = config.server.public_url
        self.hosted: dict[str, Hosted] = {}
        self.metrics = Metrics(
            sessions=lambda: len(self.hosted),
            memory_tokens=lambda: sum(h.live.session.memory.tokens_held for h in self.hosted.values()),
        )
        self._tasks: list[asyncio.Task] = []
        self.started_at = time.time()

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Mark sessions a previous run of this worker left behind as lost, then keep the heartbeat going."""
        if self.directory.shared:
            for record in await self.directory.sessions_of(self.worker_id):
                if record.status == "live":
                    await self._end_orphan(record)
            await self.directory.heartbeat(self.worker_id, self.public_url, 3 * HEARTBEAT_S)
            self._tasks.append(asyncio.create_task(self._heartbeat(), name="heartbeat"))
        self._tasks.append(asyncio.create_task(self._reap_idle(), name="reaper"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for sid in list(self.hosted):
            with contextlib.suppress(Exception):
                await self._close(sid, "shutdown", keep=True)
        await self.orchestrator.shutdown()
        await self.directory.close()

    async def _end_orphan(self, record: SessionRecord) -> None:
        last = await self.directory.last_event(record.id)
        seq, t = (last["seq"] + 1, last["t"]) if last else (1, 0.0)
        closed = {"type": "session_closed", "seq": seq, "session_id": record.id, "t": t, "reason": "worker_restarted"}
        await self.directory.append_events(record.id, [closed])
        await self.directory.set_status(record.id, "lost")

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self.directory.heartbeat(self.worker_id, self.public_url, 3 * HEARTBEAT_S)
            except DirectoryError as exc:
                log.warning("heartbeat failed: %s", exc)

    async def _reap_idle(self) -> None:
        timeout = self.config.server.idle_timeout_s
        while True:
            await asyncio.sleep(min(10.0, timeout / 4))
            now = time.monotonic()
            for sid, h in list(self.hosted.items()):
                playing = h.playback is not None and h.playback.state == "playing"
                busy = playing or h.subscribers > 0 or not h.live.idle
                if not busy and now - h.last_active > timeout:
                    log.info("closing idle session %s", sid)
                    await self._close(sid, "idle_timeout", keep=True)

    # -- sessions ------------------------------------------------------------------------------------------
    def session_config(self, options: SessionOptions) -> VigilConfig:
        """The server's config with a session's choices applied (ServiceError 422 when invalid)."""
        try:
            return options.apply(self.config)
        except ValidationError as exc:
            raise ServiceError(
                422, "invalid_config", f"invalid session options: {format_validation_error(exc)}"
            ) from None

    async def create(self, owner: str, spec: SessionCreate) -> SessionView:
        config = self.session_config(spec)
        if len(self.hosted) >= self.limits.max_sessions:
            raise ServiceError(
                503, "worker_full", "this worker runs its maximum number of sessions", headers={"Retry-After": "30"}
            )
        if await self._directory(self.directory.count_live(owner)) >= self.limits.max_sessions_per_key:
            raise ServiceError(
                429,
                "too_many_sessions",
                f"this API key has {self.limits.max_sessions_per_key} open sessions; close one first",
                headers={"Retry-After": "60"},
            )
        options = SessionOptions.model_validate(spec.model_dump(exclude={"metadata"}))
        try:
            live = await self.orchestrator.create_session(options)
        except ValueError as exc:  # the model cannot take these options (e.g. frames per step over its patch)
            raise ServiceError(422, "invalid_config", f"invalid session options: {exc}") from None
        public = spec.model_dump(exclude_none=True, mode="json")
        record = SessionRecord(live.session_id, owner, self.worker_id, options=public)
        rate = self.limits.max_fps
        hosted = Hosted(live, record, config, TokenBucket(rate, burst=max(4.0, 2 * rate)))
        self.hosted[live.session_id] = hosted
        try:
            await self._directory(self.directory.register(record))
        except ServiceError:
            await self._close(live.session_id, "directory_unavailable", keep=False)
            raise
        hosted.watcher = asyncio.create_task(self._watch(hosted), name=f"watch-{live.session_id}")
        return self.view(hosted)

    def view(self, h: Hosted) -> SessionView:
        """A session of this worker as clients see it."""
        return SessionView(
            id=h.record.id,
            status="live" if not h.live.closed else "closed",
            worker=self.worker_id,
            created=h.record.created,
            stream_t=h.live.last_frame_t,
            options=h.record.options,
            video=h.playback.view() if h.playback else None,
        )

    @staticmethod
    def record_view(record: SessionRecord) -> SessionView:
        """A session known from the directory only (ended, or on another worker)."""
        return SessionView(
            id=record.id, status=record.status, worker=record.worker, created=record.created, options=record.options
        )

    async def list(self, owner: str) -> list[SessionView]:
        records = await self._directory(self.directory.list(owner))
        return [self.view(self.hosted[r.id]) if r.id in self.hosted else self.record_view(r) for r in records]

    async def describe(self, owner: str, session_id: str) -> SessionView:
        h = self.hosted.get(session_id)
        if h is not None and h.record.owner == owner:
            return self.view(h)
        record = await self._record(owner, session_id)
        await self._route(record)
        return self.record_view(record)

    async def get(self, owner: str, session_id: str) -> Hosted:
        """The session running here, or ServiceError: 404 unknown/not yours, 307 elsewhere, 410 ended."""
        h = self.hosted.get(session_id)
        if h is not None and h.record.owner == owner:
            h.last_active = time.monotonic()
            return h
        record = await self._record(owner, session_id)
        await self._route(record)
        raise ServiceError(410, "session_closed", f"session {session_id!r} has ended ({record.status})")

    async def _record(self, owner: str, session_id: str) -> SessionRecord:
        record = await self._directory(self.directory.get(session_id))
        if record is None or record.owner != owner:
            raise _not_found(session_id)
        return record

    async def _route(self, record: SessionRecord) -> None:
        """Raise the redirect (or error) for a live session that runs on another worker."""
        if record.status != "live" or record.worker == self.worker_id:
            return
        if not await self._directory(self.directory.worker_alive(record.worker)):
            raise ServiceError(410, "session_lost", f"session {record.id!r} ran on worker {record.worker}, now gone")
        url = await self._directory(self.directory.worker_url(record.worker))
        if not url:
            raise ServiceError(
                421,
                "session_on_other_worker",
                f"session {record.id!r} runs on worker {record.worker}, which publishes no URL",
            )
        raise ServiceError(
            307, "session_on_other_worker", f"session {record.id!r} runs on worker {record.worker}", redirect=url
        )

    async def delete(self, owner: str, session_id: str) -> None:
        h = self.hosted.get(session_id)
        if h is None or h.record.owner != owner:
            record = await self._record(owner, session_id)
            await self._route(record)
            await self._directory(self.directory.remove(session_id))  # an ended session: forget it
            return
        await self._close(session_id, "deleted", keep=False)

    async def _close(self, session_id: str, reason: str, *, keep: bool) -> None:
        h = self.hosted.pop(session_id, None)
        if h is None:
            return
        if h.playback is not None and h.playback.task is not None:
            h.playback.task.cancel()
        with contextlib.suppress(KeyError):
            await self.orchestrator.close_session(session_id, reason)
        if h.watcher is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(h.watcher, 10)
        try:
            if keep and self.directory.shared:
                await self.directory.set_status(session_id, "closed")
            else:
                await self.directory.remove(session_id)
        except DirectoryError as exc:
            log.warning("could not update the directory for %s: %s", session_id, exc)

    async def _watch(self, h: Hosted) -> None:
        """Feed metrics and mirror events to the shared directory until the session closes."""
        cursor = 0
        log_ = h.live.events
        while True:
            batch = await log_.wait(cursor, 1.0)
            if not batch:
                if log_.closed:
                    return
                continue
            for event in batch:
                self.metrics.observe(event)
            cursor = batch[-1].seq
            if self.directory.shared:
                try:
                    await self.directory.append_events(h.record.id, [e.to_dict() for e in batch])
                except DirectoryError as exc:
                    log.warning("events of %s not mirrored: %s", h.record.id, exc)

    async def _directory(self, coro: Any) -> Any:
        try:
            return await coro
        except DirectoryError as exc:
            raise ServiceError(503, "directory_unavailable", str(exc), headers={"Retry-After": "5"}) from None

    # -- frames --------------------------------------------------------------------------------------------
    async def push_frames(self, owner: str, session_id: str, frames: list[tuple[bytes, float | None]]) -> dict:
        """Decode and queue encoded images (all or none); 413/422/429 with the reason when refused."""
        h = await self.get(owner, session_id)
        if not frames:
            raise ServiceError(422, "no_frames", "the request carries no image")
        if len(frames) > self.limits.max_frames_per_request:
            raise ServiceError(
                413, "too_many_frames", f"at most {self.limits.max_frames_per_request} frames per request"
            )
        for data, _ in frames:
            if len(data) > self.limits.max_frame_bytes:
                raise ServiceError(413, "frame_too_large", f"a frame exceeds {self.limits.max_frame_bytes} bytes")
        self._rate(h, len(frames))
        try:
            pushed = await h.live.push_encoded(frames, self.limits.max_frame_pixels)
        except FrameTimeError as exc:
            raise ServiceError(422, "invalid_time", str(exc)) from None
        except InvalidFrameError as exc:
            raise ServiceError(422, "invalid_frame", str(exc)) from None
        except SessionClosedError as exc:
            raise ServiceError(410, "session_closed", str(exc)) from None
        h.frames_in += pushed.accepted
        self.metrics.frames_in.inc(pushed.accepted)
        h.last_active = time.monotonic()
        return {
            "accepted": pushed.accepted,
            "dropped": pushed.dropped,
            "t": [round(t, 4) for t in pushed.t],
            "queued": pushed.queued,
        }

    def _rate(self, h: Hosted, n: int) -> None:
        wait = h.bucket.take(n)
        if wait == 0.0:
            return
        self.metrics.rejected.labels("rate_limited").inc()
        if math.isinf(wait):
            raise ServiceError(
                429, "rate_limited", f"{n} frames exceed this session's burst of {h.bucket.burst:.0f}; send fewer"
            )
        raise ServiceError(
            429,
            "rate_limited",
            f"more than {self.limits.max_fps:g} frames per second for this session",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )

    # -- video ---------------------------------------------------------------------------------------------
    async def play(
        self,
        owner: str,
        session_id: str,
        source: str,
        *,
        speed: str | float = "realtime",
        cleanup: str | None = None,
        label: str | None = None,
    ) -> dict[str, Any]:
        """Play a video file or stream into the session as live; ``cleanup`` is deleted when it ends."""
        try:
            h = await self.get(owner, session_id)
            if h.playback is not None and h.playback.state == "playing":
                raise ServiceError(409, "video_playing", "a video is already playing; DELETE it first")
            fps = h.config.perception.fps
            try:
                frames = await asyncio.to_thread(open_source, source, fps, speed)
            except (SourceError, ValueError) as exc:
                raise ServiceError(422, "unreadable_video", str(exc)) from None
        except BaseException:
            if cleanup:
                with contextlib.suppress(OSError):
                    os.unlink(cleanup)
            raise
        playback = Playback(label or source, duration_s=getattr(frames, "duration", None), cleanup=cleanup)
        h.playback = playback
        playback.task = asyncio.create_task(self._play(h, playback, frames, speed), name=f"play-{session_id}")
        return playback.view()

    async def _play(self, h: Hosted, playback: Playback, frames: Any, speed: str | float) -> None:
        live = h.live
        fps = h.config.perception.fps
        offset = 0.0 if live.last_frame_t is None else live.last_frame_t + 1.0 / fps
        try:
            async with contextlib.aclosing(live.play(frames, offset, lossless=speed == "max")) as pushed:
                async for _ in pushed:
                    playback.frames += 1
                    h.frames_in += 1
                    h.last_active = time.monotonic()
                    self.metrics.frames_in.inc()
            end = getattr(frames, "end", None)
            playback.end_reason = end.reason if end is not None else "end"
        except (SourceError, SessionClosedError) as exc:
            playback.error = str(exc)
            if not live.closed:
                live.events.emit(ErrorEvent, live.stream_t, code="video_failed", message=str(exc))
        finally:
            if playback.cleanup:
                with contextlib.suppress(OSError):
                    os.unlink(playback.cleanup)

    async def stop_video(self, owner: str, session_id: str) -> dict[str, Any]:
        h = await self.get(owner, session_id)
        if h.playback is None:
            raise ServiceError(404, "no_video", "no video was played into this session")
        if h.playback.task is not None and not h.playback.task.done():
            h.playback.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await h.playback.task
        return h.playback.view()

    # -- questions -----------------------------------------------------------------------------------------
    async def ask(
        self, owner: str, session_id: str, question: str, t: float | None = None, **options: Any
    ) -> tuple[Hosted, str, asyncio.Future, int]:
        """Queue a question; returns the session, the answer id, its future and the event seq to follow from."""
        h = await self.get(owner, session_id)
        if len(question) > self.limits.max_question_chars:
            raise ServiceError(413, "question_too_long", f"questions are limited to {self.limits.max_question_chars}")
        options = {k: v for k, v in options.items() if v is not None}
        after = h.live.events.last_seq
        try:
            answer_id, future = h.live.ask(question, t, **options)
        except SessionClosedError as exc:
            raise ServiceError(410, "session_closed", str(exc)) from None
        except ValueError as exc:
            raise ServiceError(422, "invalid_question", str(exc)) from None
        return h, answer_id, future, after

    @staticmethod
    async def wait_answer(future: asyncio.Future) -> AnswerFinished:
        """The finished answer of ``ask``, or ServiceError: 409 cancelled, 410 session closed, 502 engine failed."""
        try:
            return await future
        except asyncio.CancelledError:
            raise ServiceError(409, "answer_cancelled", "the answer was cancelled") from None
        except SessionClosedError as exc:
            raise ServiceError(410, "session_closed", str(exc)) from None
        except Exception as exc:
            raise ServiceError(502, "engine_error", f"the engine failed: {exc}") from None

    async def answer_events(self, h: Hosted, answer_id: str, after: int) -> AsyncIterator[SessionEvent | None]:
        """The answer's events (start, deltas, done or error) as they happen; None now and then as a keepalive."""
        cursor = after
        h.subscribers += 1
        try:
            while True:
                batch = await h.live.events.wait(cursor, KEEPALIVE_S)
                if not batch:
                    if h.live.events.closed:
                        raise ServiceError(410, "session_closed", "the session ended before the answer")
                    yield None
                    continue
                cursor = batch[-1].seq
                for event in batch:
                    if getattr(event, "answer_id", None) != answer_id:
                        continue
                    yield event
                    if event.type in ("answer_done", "error"):
                        return
        finally:
            h.subscribers -= 1

    async def cancel(self, owner: str, session_id: str, answer_id: str) -> bool:
        h = await self.get(owner, session_id)
        return h.live.cancel(answer_id)

    # -- events --------------------------------------------------------------------------------------------
    async def events(self, owner: str, session_id: str, after: int) -> AsyncIterator[dict[str, Any] | None]:
        """Every event after ``after`` (live ones as they happen; None as a keepalive), resumable by seq."""
        h = self.hosted.get(session_id)
        if h is None or h.record.owner != owner:
            record = await self._record(owner, session_id)
            await self._route(record)
            async for event in self._replay(session_id, after):  # ended, or this worker restarted
                yield event
            return
        h.subscribers += 1
        cursor = after
        try:
            yield None  # the response starts at once, before the first event
            while True:
                batch = await h.live.events.wait(cursor, KEEPALIVE_S)
                if not batch:
                    if h.live.events.closed:
                        return
                    yield None
                    continue
                if batch[0].seq > cursor + 1:  # older than the kept history
                    async for event in self._fill(session_id, cursor, batch[0].seq):
                        yield event
                for event in batch:
                    yield event.to_dict()
                cursor = batch[-1].seq
        finally:
            h.subscribers -= 1

    async def _fill(self, session_id: str, after: int, before: int) -> AsyncIterator[dict[str, Any]]:
        """Events in (after, before) from the mirror, or one ``events_lost`` record for what is gone."""
        found: list[dict[str, Any]] = []
        if self.directory.shared:
            with contextlib.suppress(DirectoryError):
                found = await self.directory.events(session_id, after, limit=before - after - 1)
        found = [e for e in found if e["seq"] < before]
        for event in found:
            yield event
        first_missing = found[-1]["seq"] + 1 if found else after + 1
        if first_missing < before:
            yield {"type": "events_lost", "first_seq": first_missing, "last_seq": before - 1}

    async def _replay(self, session_id: str, after: int) -> AsyncIterator[dict[str, Any]]:
        cursor = after
        while True:
            batch = await self._directory(self.directory.events(session_id, cursor))
            if not batch:
                return
            for event in batch:
                yield event
            cursor = batch[-1]["seq"]

    # -- memory --------------------------------------------------------------------------------------------
    async def memory(self, owner: str, session_id: str) -> dict[str, Any]:
        h = await self.get(owner, session_id)
        live = h.live
        stats = dataclasses.asdict(live.session.stats())
        try:
            engine = dataclasses.asdict(self.orchestrator.engine.session_stats(session_id))
        except Exception:  # the engine may not know a session it has not seen a change of yet
            engine = None
        return {
            "id": session_id,
            "stream_t": live.stream_t,
            "frames": {
                "received": h.frames_in,
                "processed": live.processed_frames,
                "queued": live.queued_frames,
                "dropped": dict(live.frames_dropped),
            },
            "perception": {
                k: stats[k] for k in ("frames", "steps", "tokens_seen", "tokens_kept", "weighted_drop_ratio")
            },
            "memory": {
                "tokens": stats["memory_tokens"],
                "entries": stats["memory_entries"],
                "budget": stats["memory_budget"],
                "archived_entries": stats["archived_entries"],
                "policy": h.config.memory.policy,
            },
            "engine": engine,
        }

    async def add_instruction(self, owner: str, session_id: str, instruction: str) -> None:
        h = await self.get(owner, session_id)
        if not instruction.strip():
            raise ServiceError(422, "invalid_instruction", "the instruction is empty")
        h.live.add_instruction(InstructionMonitor(instruction.strip()))
