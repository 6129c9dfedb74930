"""The sessions of one worker: create, find, route, close; the directory, the heartbeat and the idle reaper.

Sessions run on the worker that created them. The directory (in-process, or Redis for many workers) says who owns
a session and where it runs; a request for a session of another live worker gets a redirect to that worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from pydantic import ValidationError

from assistant.config import VigilConfig, format_validation_error
from assistant.orchestrator import Orchestrator
from serving.directory import DirectoryError, SessionDirectory, SessionRecord
from serving.errors import ServiceError, directory_call, not_found
from serving.hosted import Hosted
from serving.limits import TokenBucket
from serving.metrics import Metrics
from serving.schemas import SessionCreate, SessionView

log = logging.getLogger(__name__)

HEARTBEAT_S = 2.0


def record_view(record: SessionRecord) -> SessionView:
    """A session known from the directory only (ended, or on another worker)."""
    return SessionView(
        id=record.id, status=record.status, worker=record.worker, created=record.created, options=record.options
    )


class SessionRegistry:
    """Which sessions this worker hosts, and the directory entries that tell other workers about them."""

    def __init__(
        self,
        config: VigilConfig,
        orchestrator: Orchestrator,
        directory: SessionDirectory,
        metrics: Metrics,
        worker_id: str,
    ) -> None:
        self.config = config
        self.limits = config.server.limits
        self.orchestrator = orchestrator
        self.directory = directory
        self.metrics = metrics
        self.worker_id = worker_id
        self.public_url = config.server.public_url
        self.hosted: dict[str, Hosted] = {}
        self._tasks: list[asyncio.Task] = []

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
        """Stop the background tasks and close every hosted session (their records stay, as closed)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for sid in list(self.hosted):
            with contextlib.suppress(Exception):
                await self.close(sid, "shutdown", keep=True)

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
        every = min(10.0, self.config.server.idle_timeout_s / 4)
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            for sid, h in list(self.hosted.items()):
                if not h.busy and now - h.last_active > h.idle_timeout_s:
                    log.info("closing idle session %s", sid)
                    try:
                        await self.close(sid, "idle_timeout", keep=True)
                    except Exception:  # the reaper must outlive one bad close
                        log.exception("closing idle session %s failed", sid)

    # -- create --------------------------------------------------------------------------------------------
    async def create(self, owner: str, spec: SessionCreate, *, idle_timeout_s: float | None = None) -> Hosted:
        """Start a session for ``owner`` (503 worker full, 429 too many for the key, 422 invalid options).

        It is closed after ``idle_timeout_s`` without activity (default ``server.idle_timeout_s``).
        """
        try:  # invalid options are refused first, whatever the limits say
            spec.apply(self.config)
        except ValidationError as exc:
            raise ServiceError(
                422, "invalid_config", f"invalid session options: {format_validation_error(exc)}"
            ) from None
        if len(self.hosted) >= self.limits.max_sessions:
            raise ServiceError(
                503, "worker_full", "this worker runs its maximum number of sessions", headers={"Retry-After": "30"}
            )
        if await directory_call(self.directory.count_live(owner)) >= self.limits.max_sessions_per_key:
            raise ServiceError(
                429,
                "too_many_sessions",
                f"this API key has {self.limits.max_sessions_per_key} open sessions; close one first",
                headers={"Retry-After": "60"},
            )
        try:  # the orchestrator applies the options to the server's config
            live = await self.orchestrator.create_session(spec, self.config)
        except ValueError as exc:  # the model cannot take these options (e.g. frames per step over its patch)
            raise ServiceError(422, "invalid_config", f"invalid session options: {exc}") from None
        public = spec.model_dump(exclude_none=True, mode="json")
        record = SessionRecord(live.session_id, owner, self.worker_id, options=public)
        rate = self.limits.max_fps
        idle = self.config.server.idle_timeout_s if idle_timeout_s is None else idle_timeout_s
        hosted = Hosted(live, record, live.session.config, TokenBucket(rate, burst=max(4.0, 2 * rate)), idle)
        self.hosted[live.session_id] = hosted
        try:
            await directory_call(self.directory.register(record))
        except ServiceError:
            await self.close(live.session_id, "directory_unavailable", keep=False)
            raise
        hosted.watcher = asyncio.create_task(self._watch(hosted), name=f"watch-{live.session_id}")
        return hosted

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

    # -- find ----------------------------------------------------------------------------------------------
    def mine(self, owner: str, session_id: str) -> Hosted | None:
        """The session when it runs here and belongs to ``owner``."""
        h = self.hosted.get(session_id)
        return h if h is not None and h.record.owner == owner else None

    async def get(self, owner: str, session_id: str) -> Hosted:
        """The session running here, or ServiceError: 404 unknown/not yours, 307 elsewhere, 410 ended."""
        h = self.mine(owner, session_id)
        if h is not None:
            h.touch()
            return h
        record = await self.elsewhere(owner, session_id)
        raise ServiceError(410, "session_closed", f"session {session_id!r} has ended ({record.status})")

    async def elsewhere(self, owner: str, session_id: str) -> SessionRecord:
        """The directory record of a session not hosted here; 404 unknown/not yours, 307 (or 410, 421) when it
        runs on another worker."""
        record = await directory_call(self.directory.get(session_id))
        if record is None or record.owner != owner:
            raise not_found(session_id)
        await self._route(record)
        return record

    async def _route(self, record: SessionRecord) -> None:
        """Raise the redirect (or error) for a live session that runs on another worker."""
        if record.status != "live" or record.worker == self.worker_id:
            return
        if not await directory_call(self.directory.worker_alive(record.worker)):
            raise ServiceError(410, "session_lost", f"session {record.id!r} ran on worker {record.worker}, now gone")
        url = await directory_call(self.directory.worker_url(record.worker))
        if not url:
            raise ServiceError(
                421,
                "session_on_other_worker",
                f"session {record.id!r} runs on worker {record.worker}, which publishes no URL",
            )
        raise ServiceError(
            307, "session_on_other_worker", f"session {record.id!r} runs on worker {record.worker}", redirect=url
        )

    async def describe(self, owner: str, session_id: str) -> SessionView:
        """A session of ``owner``, here or known from the directory (404/307 as ``elsewhere``)."""
        h = self.mine(owner, session_id)
        if h is not None:
            return h.view()
        return record_view(await self.elsewhere(owner, session_id))

    async def list(self, owner: str) -> list[SessionView]:
        """Sessions of ``owner`` on every worker, oldest first."""
        records = await directory_call(self.directory.list(owner))
        return [self.hosted[r.id].view() if r.id in self.hosted else record_view(r) for r in records]

    # -- end -----------------------------------------------------------------------------------------------
    async def delete(self, owner: str, session_id: str) -> None:
        """End a session and forget it (an ended one is only forgotten)."""
        if self.mine(owner, session_id) is None:
            await self.elsewhere(owner, session_id)
            await directory_call(self.directory.remove(session_id))
            return
        await self.close(session_id, "deleted", keep=False)

    async def close(self, session_id: str, reason: str, *, keep: bool) -> None:
        """Close a hosted session; ``keep`` leaves its record (as closed) in a shared directory."""
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
