"""Where sessions live and what they said: in-process for one worker, Redis for many.

The directory maps a session to its owner (an API key's id) and the worker that runs it; workers publish a
heartbeat with the URL other workers redirect to. Event streams mirror each session's events (by sequence
number) so a client can resume them after its worker restarted or from another worker.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

SessionStatus = str
"""``live`` (running on its worker), ``closed`` (ended; its events may still be read) or ``lost``."""


@dataclass(slots=True)
class SessionRecord:
    """A session as the directory knows it."""

    id: str
    owner: str
    worker: str
    created: float = field(default_factory=time.time)
    status: SessionStatus = "live"
    options: dict[str, Any] = field(default_factory=dict)
    end_reason: str | None = None
    """Why a lost session ended (``worker_lost``, ``worker_restarted``): its event stream ends with it."""

    def to_json(self) -> str:
        """The record as JSON (as stored in Redis)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> SessionRecord:
        """A record from its JSON."""
        return cls(**json.loads(raw))


class DirectoryError(RuntimeError):
    """The shared directory (Redis) cannot be reached."""


class SessionDirectory(Protocol):
    """What the service needs from a session directory."""

    shared: bool
    """True when other workers see the same directory."""

    async def register(self, record: SessionRecord) -> None:
        """Add (or re-assert) a session under its owner."""
        ...

    async def reserve(self, record: SessionRecord, max_live: int) -> bool:
        """Add a live session atomically when its owner has fewer than ``max_live`` live ones; False when full."""
        ...

    async def reassert(self, records: list[SessionRecord]) -> list[str]:
        """Put back records of live hosted sessions the directory lost or wrongly ended; the ids put back."""
        ...

    async def get(self, session_id: str) -> SessionRecord | None:
        """The record of a session, or None when unknown (or expired)."""
        ...

    async def list(self, owner: str) -> list[SessionRecord]:
        """An owner's sessions, oldest first."""
        ...

    async def count_live(self, owner: str) -> int:
        """How many of an owner's sessions are live."""
        ...

    async def set_status(self, session_id: str, status: SessionStatus, reason: str | None = None) -> None:
        """Mark a session live, closed or lost, with why it ended (ended ones expire after a while in Redis)."""
        ...

    async def remove(self, session_id: str) -> None:
        """Forget a session and its events."""
        ...

    async def heartbeat(self, worker: str, url: str | None, ttl_s: float) -> None:
        """Say this worker is alive (for ``ttl_s``) and where it serves."""
        ...

    async def worker_url(self, worker: str) -> str | None:
        """The URL a worker published with its heartbeat."""
        ...

    async def worker_alive(self, worker: str) -> bool:
        """Whether a worker's heartbeat is current."""
        ...

    async def sessions_of(self, worker: str) -> list[SessionRecord]:
        """The records of the sessions a worker runs (or ran)."""
        ...

    async def append_events(self, session_id: str, events: list[dict[str, Any]]) -> None:
        """Mirror a session's events (dicts with their ``seq``)."""
        ...

    async def events(self, session_id: str, after: int, limit: int = 1000) -> list[dict[str, Any]]:
        """Mirrored events after seq ``after``, at most ``limit``."""
        ...

    async def last_event(self, session_id: str) -> dict[str, Any] | None:
        """The last mirrored event of a session."""
        ...

    async def ping(self) -> bool:
        """Whether the directory answers."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class LocalDirectory:
    """One worker, no Redis: the directory is a dict and events live in each session's own log."""

    shared = False

    def __init__(self) -> None:
        self._records: dict[str, SessionRecord] = {}

    async def register(self, record: SessionRecord) -> None:
        self._records[record.id] = record

    async def reserve(self, record: SessionRecord, max_live: int) -> bool:
        if await self.count_live(record.owner) >= max_live:  # no await in between: atomic on the loop
            return False
        self._records[record.id] = record
        return True

    async def reassert(self, records: list[SessionRecord]) -> list[str]:
        return []

    async def get(self, session_id: str) -> SessionRecord | None:
        return self._records.get(session_id)

    async def list(self, owner: str) -> list[SessionRecord]:
        return sorted((r for r in self._records.values() if r.owner == owner), key=lambda r: r.created)

    async def count_live(self, owner: str) -> int:
        return sum(1 for r in self._records.values() if r.owner == owner and r.status == "live")

    async def set_status(self, session_id: str, status: SessionStatus, reason: str | None = None) -> None:
        if session_id in self._records:
            self._records[session_id].status = status
            self._records[session_id].end_reason = reason

    async def remove(self, session_id: str) -> None:
        self._records.pop(session_id, None)

    async def heartbeat(self, worker: str, url: str | None, ttl_s: float) -> None:
        return None

    async def worker_url(self, worker: str) -> str | None:
        return None

    async def worker_alive(self, worker: str) -> bool:
        return True

    async def sessions_of(self, worker: str) -> list[SessionRecord]:
        return [r for r in self._records.values() if r.worker == worker]

    async def append_events(self, session_id: str, events: list[dict[str, Any]]) -> None:
        return None

    async def events(self, session_id: str, after: int, limit: int = 1000) -> list[dict[str, Any]]:
        return []

    async def last_event(self, session_id: str) -> dict[str, Any] | None:
        return None

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None


_RESERVE = """
local owner_key, limit, sid, record = KEYS[1], tonumber(ARGV[1]), ARGV[2], ARGV[3]
local live = 0
for _, id in ipairs(redis.call('SMEMBERS', owner_key)) do
  local raw = redis.call('GET', 'vigil:session:' .. id)
  if raw then
    local r = cjson.decode(raw)
    if r.status == 'live' and redis.call('EXISTS', 'vigil:worker:' .. r.worker) == 1 then live = live + 1 end
  else
    redis.call('SREM', owner_key, id)
  end
end
if live >= limit then return 0 end
redis.call('SET', 'vigil:session:' .. sid, record)
redis.call('SADD', owner_key, sid)
return 1
"""
"""Count the owner's live sessions on live workers and add the new one, in one atomic step."""


class RedisDirectory:
    """The directory and event streams in Redis, shared by every worker that points at it.

    Keys: ``vigil:session:{id}`` (record JSON), ``vigil:owner:{owner}`` (set of ids), ``vigil:worker:{id}``
    (heartbeat, expiring), ``vigil:worker-url:{id}`` (the URL it serves at), ``vigil:events:{id}`` (stream; entry
    id ``0-{seq}``). Every call gives up after ``timeout_s`` (DirectoryError), so no request waits on a stalled Redis.
    """

    shared = True

    def __init__(self, url: str, *, events_max: int = 10_000, closed_ttl_s: int = 3600, timeout_s: float = 2.0) -> None:
        import redis.asyncio as aioredis  # optional dependency

        self.url = url
        self.events_max = events_max
        self.closed_ttl_s = closed_ttl_s
        self.timeout_s = timeout_s
        self._redis = aioredis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )
        self._reserve = self._redis.register_script(_RESERVE)

    async def _call(self, coro: Any) -> Any:
        import asyncio

        import redis

        try:
            async with asyncio.timeout(self.timeout_s * 1.5):  # a stalled server: the socket timeout, and this
                return await coro
        except (redis.RedisError, OSError, TimeoutError) as exc:
            raise DirectoryError(f"Redis at {self.url} is unavailable: {type(exc).__name__}: {exc}") from None

    async def register(self, record: SessionRecord) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(f"vigil:session:{record.id}", record.to_json())
        pipe.sadd(f"vigil:owner:{record.owner}", record.id)
        await self._call(pipe.execute())

    async def reserve(self, record: SessionRecord, max_live: int) -> bool:
        keys = [f"vigil:owner:{record.owner}"]
        return bool(await self._call(self._reserve(keys=keys, args=[max_live, record.id, record.to_json()])))

    async def reassert(self, records: list[SessionRecord]) -> list[str]:
        """Put back the records of live hosted sessions that Redis lost (restarted empty) or that another worker
        marked ended while this one was unreachable; the ids put back."""
        if not records:
            return []
        raws = await self._call(self._redis.mget([f"vigil:session:{r.id}" for r in records]))
        pipe = self._redis.pipeline(transaction=False)
        fixed = []
        for record, raw in zip(records, raws, strict=True):
            stored = SessionRecord.from_json(raw).status if raw is not None else None
            if stored in (record.status, "closed"):  # as it should be, or closed by this worker just now (final)
                continue
            pipe.set(f"vigil:session:{record.id}", record.to_json())
            pipe.sadd(f"vigil:owner:{record.owner}", record.id)
            pipe.persist(f"vigil:events:{record.id}")
            fixed.append(record.id)
        if fixed:
            await self._call(pipe.execute())
        return fixed

    async def get(self, session_id: str) -> SessionRecord | None:
        raw = await self._call(self._redis.get(f"vigil:session:{session_id}"))
        return None if raw is None else SessionRecord.from_json(raw)

    async def list(self, owner: str) -> list[SessionRecord]:
        ids = sorted(await self._call(self._redis.smembers(f"vigil:owner:{owner}")))
        if not ids:
            return []
        raws = await self._call(self._redis.mget([f"vigil:session:{i}" for i in ids]))
        stale = [i for i, raw in zip(ids, raws, strict=True) if raw is None]  # expired closed sessions
        if stale:
            await self._call(self._redis.srem(f"vigil:owner:{owner}", *stale))
        records = [SessionRecord.from_json(raw) for raw in raws if raw is not None]
        return sorted(records, key=lambda r: r.created)

    async def count_live(self, owner: str) -> int:
        return sum(1 for r in await self.list(owner) if r.status == "live")

    async def set_status(self, session_id: str, status: SessionStatus, reason: str | None = None) -> None:
        record = await self.get(session_id)
        if record is None:
            return
        record.status, record.end_reason = status, reason
        pipe = self._redis.pipeline(transaction=True)
        if status == "live":
            pipe.set(f"vigil:session:{session_id}", record.to_json())
        else:  # ended sessions stay readable for a while, then expire with their events
            pipe.set(f"vigil:session:{session_id}", record.to_json(), ex=self.closed_ttl_s)
            pipe.expire(f"vigil:events:{session_id}", self.closed_ttl_s)
        await self._call(pipe.execute())

    async def remove(self, session_id: str) -> None:
        record = await self.get(session_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(f"vigil:session:{session_id}", f"vigil:events:{session_id}")
        if record is not None:
            pipe.srem(f"vigil:owner:{record.owner}", session_id)
        await self._call(pipe.execute())

    async def heartbeat(self, worker: str, url: str | None, ttl_s: float) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(f"vigil:worker:{worker}", url or "", px=int(ttl_s * 1000))
        pipe.set(f"vigil:worker-url:{worker}", url or "", ex=7 * 86400)
        await self._call(pipe.execute())

    async def worker_url(self, worker: str) -> str | None:
        return (await self._call(self._redis.get(f"vigil:worker-url:{worker}"))) or None

    async def worker_alive(self, worker: str) -> bool:
        return bool(await self._call(self._redis.exists(f"vigil:worker:{worker}")))

    async def sessions_of(self, worker: str) -> list[SessionRecord]:
        async def scan() -> list[SessionRecord]:
            records = []
            async for key in self._redis.scan_iter(match="vigil:session:*", count=500):
                raw = await self._redis.get(key)
                if raw is not None:
                    record = SessionRecord.from_json(raw)
                    if record.worker == worker:
                        records.append(record)
            return records

        return await self._call(scan())

    async def append_events(self, session_id: str, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        key = f"vigil:events:{session_id}"
        pipe = self._redis.pipeline(transaction=True)
        for event in events:
            pipe.xadd(key, {"e": json.dumps(event)}, id=f"0-{event['seq']}", maxlen=self.events_max, approximate=True)
        await self._call(pipe.execute())

    async def events(self, session_id: str, after: int, limit: int = 1000) -> list[dict[str, Any]]:
        entries = await self._call(self._redis.xrange(f"vigil:events:{session_id}", min=f"(0-{after}", count=limit))
        return [json.loads(fields["e"]) for _, fields in entries]

    async def last_event(self, session_id: str) -> dict[str, Any] | None:
        entries = await self._call(self._redis.xrevrange(f"vigil:events:{session_id}", count=1))
        return json.loads(entries[0][1]["e"]) if entries else None

    async def ping(self) -> bool:
        try:
            return bool(await self._call(self._redis.ping()))
        except DirectoryError:
            return False

    async def close(self) -> None:
        await self._redis.aclose()


def make_directory(redis_url: str | None, timeout_s: float = 2.0) -> SessionDirectory:
    """Redis when a URL is given (every call bounded by ``timeout_s``), else the in-process directory."""
    return RedisDirectory(redis_url, timeout_s=timeout_s) if redis_url else LocalDirectory()
