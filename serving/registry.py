"""The sessions of one worker: create, find, route, close; the directory, the heartbeat and the idle reaper.

Sessions run on the worker that created them. The directory (in-process, or Redis for many workers) says who owns
a session and where it runs; a request for a session of another live worker gets a redirect to that worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

from pydantic import ValidationError

from assistant.config import VigilConfig, format_validation_error
from assistant.intake import FrameBytes
from assistant.orchestrator import LiveSession, Orchestrator
from serving.directory import DirectoryError, SessionDirectory, SessionRecord
from serving.errors import ServiceError, directory_call, not_found
from serving.hosted import Hosted
from serving.limits import TokenBucket
from serving.metrics import Metrics
from serving.mirror import EventMirror
from serving.questions import check_instruction
from serving.schemas import SessionCreate, SessionView

log = logging.getLogger(__name__)


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
        self.heartbeat_s = config.server.heartbeat_s
        self.hosted: dict[str, Hosted] = {}
        self.directory_ok: bool = not directory.shared
        """The last heartbeat reached the directory (what ``/health`` reports, without waiting on Redis)."""
        self.frame_bytes = FrameBytes(self.limits.max_worker_frame_bytes)
        """Decoded bytes of the frames queued by all sessions of this worker."""
        self._creating: set[str] = set()  # sessions being built: counted against the worker's limit already
        self._tasks: list[asyncio.Task] = []

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Mark sessions a previous run of this worker left behind as lost, then keep the heartbeat going."""
        if self.directory.shared:
            for record in await self.directory.sessions_of(self.worker_id):
                if record.status == "live":
                    await self.end_lost(record, "worker_restarted")
            await self._beat()
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

    async def end_lost(self, record: SessionRecord, reason: str) -> None:
        """End a session whose worker is gone (status ``lost``); its event stream then ends with a
        ``session_closed`` event giving ``reason``. Nothing is written to the stream itself: a worker that was only
        unreachable puts its record back and goes on with its own sequence numbers."""
        await self.directory.set_status(record.id, "lost", reason)
        record.status, record.end_reason = "lost", reason

    async def forward_target(self, session_id: str) -> tuple[SessionRecord, str] | None:
        """The record and URL of the worker a request for ``session_id`` goes to, when that is another worker
        (None: answer here, also when the directory cannot tell)."""
        try:
            record = await self.directory.get(session_id)
            if record is None or record.status != "live" or record.worker == self.worker_id:
                return None
            url = await self.directory.worker_url(record.worker)
        except DirectoryError:
            return None
        return (record, url) if url else None

    async def unreachable(self, record: SessionRecord) -> bool:
        """The worker of ``record`` did not accept a connection: True (and the session lost) when its heartbeat
        has expired too; False while it may only be slow."""
        try:
            if await self.directory.worker_alive(record.worker):
                return False
            await self.end_lost(record, "worker_lost")
        except DirectoryError:
            return False
        return True

    async def _beat(self) -> None:
        """Say this worker is alive, and put back what the directory lost of its live sessions."""
        try:
            await self.directory.heartbeat(self.worker_id, self.public_url, 3 * self.heartbeat_s)
            live = [h for h in self.hosted.values() if not h.live.closed]
            for sid in await self.directory.reassert([h.record for h in live]):
                log.warning("session %s was missing from the directory; put back", sid)
                if (h := self.hosted.get(sid)) is not None and h.mirror is not None:
                    h.mirror.reset = True  # its events went with it: mirror again what the log holds
        except DirectoryError as exc:
            if self.directory_ok:
                log.warning("heartbeat failed: %s", exc)
            self.directory_ok = False
            return
        self.directory_ok = True

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            await self._beat()

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

        Both limits are reserved before the session is built (the worker's here, the key's atomically in the
        directory), so parallel creates cannot overshoot them. It is closed after ``idle_timeout_s`` without
        activity (default ``server.idle_timeout_s``).
        """
        try:  # invalid options are refused first, whatever the limits say
            applied = spec.apply(self.config)
        except ValidationError as exc:
            raise ServiceError(
                422, "invalid_config", f"invalid session options: {format_validation_error(exc)}"
            ) from None
        for instruction in spec.instructions:  # the same bounds as POST /instructions
            check_instruction(getattr(self.orchestrator.adapter, "layout", None), applied, instruction)
        if len(self.hosted) + len(self._creating) >= self.limits.max_sessions:
            raise ServiceError(
                503, "worker_full", "this worker runs its maximum number of sessions", headers={"Retry-After": "30"}
            )
        public = spec.model_dump(exclude_none=True, mode="json")
        record = SessionRecord(f"s{uuid.uuid4().hex[:16]}", owner, self.worker_id, options=public)
        self._creating.add(record.id)
        try:
            if not await directory_call(self.directory.reserve(record, self.limits.max_sessions_per_key)):
                raise ServiceError(
                    429,
                    "too_many_sessions",
                    f"this API key has {self.limits.max_sessions_per_key} open sessions; close one first",
                    headers={"Retry-After": "60"},
                )
            live = await self._build(spec, record)
        finally:
            self._creating.discard(record.id)
        live.intake.max_bytes = self.limits.max_session_frame_bytes
        live.intake.worker_bytes = self.frame_bytes
        idle = self.config.server.idle_timeout_s if idle_timeout_s is None else idle_timeout_s
        rate = self.limits.max_fps
        hosted = Hosted(live, record, live.session.config, TokenBucket(rate, burst=max(4.0, 2 * rate)), idle)
        if self.directory.shared:
            hosted.mirror = EventMirror(record.id, live.events, self.directory)
        self.hosted[live.session_id] = hosted
        hosted.watcher = asyncio.create_task(self._watch(hosted), name=f"watch-{live.session_id}")
        return hosted

    async def _build(self, spec: SessionCreate, record: SessionRecord) -> LiveSession:
        """The live session of a reserved record; the reservation is released when it cannot be built."""
        try:  # the orchestrator applies the options to the server's config
            return await self.orchestrator.create_session(spec, self.config, session_id=record.id)
        except BaseException as exc:
            with contextlib.suppress(DirectoryError):
                await self.directory.remove(record.id)
            if isinstance(exc, ValueError):  # the model cannot take these options (e.g. frames per step)
                raise ServiceError(422, "invalid_config", f"invalid session options: {exc}") from None
            raise

    async def _watch(self, h: Hosted) -> None:
        """Feed metrics and mirror events to the shared directory until the session closes and all is mirrored."""
        cursor = 0
        log_ = h.live.events
        while True:
            batch = await log_.wait(cursor, 1.0)
            for event in batch:
                self.metrics.observe(event)
            if batch:
                cursor = batch[-1].seq
            mirrored = True
            if h.mirror is not None and h.mirror.behind:
                mirrored = await h.mirror.flush()
            if not batch and log_.closed and mirrored:
                return
            if not mirrored and not batch:
                await asyncio.sleep(0.5)  # Redis refuses: retry from the last confirmed event

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
        if record.status == "live" and record.worker == self.worker_id:  # left by a previous run of this worker
            await directory_call(self.end_lost(record, "worker_restarted"))
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
        """Raise the redirect (or error) for a live session that runs on another live worker; a session whose
        worker is gone is ended (status ``lost``) so that its mirrored events can still be read."""
        if record.status != "live" or record.worker == self.worker_id:
            return
        if not await directory_call(self.directory.worker_alive(record.worker)):
            await directory_call(self.end_lost(record, "worker_lost"))
            return
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
        """Sessions of ``owner`` on every worker, oldest first (those of dead workers end as lost)."""
        records = await directory_call(self.directory.list(owner))
        alive: dict[str, bool] = {self.worker_id: True}
        for r in records:
            if r.status == "live" and r.id not in self.hosted and r.id not in self._creating:
                if r.worker not in alive:
                    alive[r.worker] = await directory_call(self.directory.worker_alive(r.worker))
                if not alive[r.worker] or r.worker == self.worker_id:
                    await directory_call(self.end_lost(r, "worker_lost"))
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
