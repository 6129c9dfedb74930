"""Long-term archive of what the bounded memory evicts, with retrieval by a compact key (ReKV style).

Each archived entry keeps its tensors and a key: the unit-norm mean of its vectors. ``search`` ranks entries by
cosine similarity of their key to a query vector. Every archive is bounded in entries and bytes; the oldest
entries go first.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from memory.store import MemoryEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ArchivedEntry:
    """Index record of an archived entry."""

    entry_id: int
    chunk_index: int
    t_start: float
    t_end: float
    num_tokens: int
    nbytes: int
    key: torch.Tensor
    """[D] float32 unit-norm mean of the entry's vectors."""


@dataclass(frozen=True, slots=True)
class ArchiveStats:
    entries: int
    bytes: int
    dropped: int


class Archive(Protocol):
    def put(self, entry: MemoryEntry) -> None: ...

    def search(self, query: torch.Tensor, k: int) -> list[tuple[ArchivedEntry, float]]: ...

    def get(self, entry_id: int) -> MemoryEntry | None: ...

    def __len__(self) -> int: ...

    @property
    def stats(self) -> ArchiveStats: ...


def entry_key(entry: MemoryEntry) -> torch.Tensor:
    """[D] unit-norm mean of the entry's vectors (zeros when it has none)."""
    vectors = entry.vectors
    if vectors is None or vectors.numel() == 0:
        return torch.zeros(1)
    return F.normalize(vectors.float().mean(0), dim=0).cpu()


def _index_record(entry: MemoryEntry) -> ArchivedEntry:
    return ArchivedEntry(
        entry.entry_id, entry.chunk_index, entry.t_start, entry.t_end, entry.num_tokens, entry.nbytes, entry_key(entry)
    )


def _serialize(entry: MemoryEntry) -> bytes:
    buf = io.BytesIO()
    fields = {f: getattr(entry, f) for f in MemoryEntry.__dataclass_fields__}
    torch.save({k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in fields.items()}, buf)
    return buf.getvalue()


def _deserialize(data: bytes) -> MemoryEntry:
    fields = torch.load(io.BytesIO(data), weights_only=True)
    fields["pooled_from"] = tuple(fields.get("pooled_from", ()))
    return MemoryEntry(**fields)


class _IndexedArchive:
    """Shared bookkeeping: the key index, caps and search; subclasses store the payloads."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError(f"archive caps must be >= 1, got max_entries={max_entries}, max_bytes={max_bytes}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._index: OrderedDict[int, ArchivedEntry] = OrderedDict()
        self._bytes = 0
        self._dropped = 0

    def __len__(self) -> int:
        return len(self._index)

    @property
    def stats(self) -> ArchiveStats:
        return ArchiveStats(len(self._index), self._bytes, self._dropped)

    def put(self, entry: MemoryEntry) -> None:
        record = _index_record(entry)
        if record.entry_id in self._index:
            self._forget(record.entry_id)
        self._store(entry)
        self._index[record.entry_id] = record
        self._bytes += record.nbytes
        while len(self._index) > self.max_entries or (self._bytes > self.max_bytes and len(self._index) > 1):
            oldest = next(iter(self._index))
            self._forget(oldest)
            self._dropped += 1

    def search(self, query: torch.Tensor, k: int) -> list[tuple[ArchivedEntry, float]]:
        """Top-k entries by cosine similarity of their key to ``query`` [D], best first."""
        records = [r for r in self._index.values() if r.key.numel() == query.numel()]
        if not records or k < 1:
            return []
        keys = torch.stack([r.key for r in records])  # [E, D]
        scores = keys @ F.normalize(query.float().flatten().cpu(), dim=0)  # [E]
        top = torch.topk(scores, min(k, len(records)))
        return [(records[i], float(s)) for s, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)]

    def get(self, entry_id: int) -> MemoryEntry | None:
        return self._load(entry_id) if entry_id in self._index else None

    def _forget(self, entry_id: int) -> None:
        record = self._index.pop(entry_id)
        self._bytes -= record.nbytes
        self._delete(entry_id)

    def _store(self, entry: MemoryEntry) -> None:
        raise NotImplementedError

    def _load(self, entry_id: int) -> MemoryEntry | None:
        raise NotImplementedError

    def _delete(self, entry_id: int) -> None:
        raise NotImplementedError


class InMemoryArchive(_IndexedArchive):
    """In-process archive (the default)."""

    def __init__(self, max_entries: int = 4096, max_bytes: int = 1 << 30) -> None:
        super().__init__(max_entries, max_bytes)
        self._entries: dict[int, MemoryEntry] = {}

    def _store(self, entry: MemoryEntry) -> None:
        self._entries[entry.entry_id] = entry

    def _load(self, entry_id: int) -> MemoryEntry | None:
        return self._entries.get(entry_id)

    def _delete(self, entry_id: int) -> None:
        self._entries.pop(entry_id, None)


class DiskArchive(_IndexedArchive):
    """One file per entry in a directory, plus an index; reopening the directory restores the archive."""

    def __init__(self, directory: str | os.PathLike, max_entries: int = 65536, max_bytes: int = 16 << 30) -> None:
        super().__init__(max_entries, max_bytes)
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.directory.glob("entry-*.pt"), key=lambda p: int(p.stem.split("-")[1])):
            try:
                entry = _deserialize(path.read_bytes())
            except Exception as exc:  # a damaged file must not stop the archive from opening
                log.warning("skipping unreadable archive file %s: %s", path, exc)
                continue
            record = _index_record(entry)
            self._index[record.entry_id] = record
            self._bytes += record.nbytes

    def _path(self, entry_id: int) -> Path:
        return self.directory / f"entry-{entry_id}.pt"

    def _store(self, entry: MemoryEntry) -> None:
        tmp = self._path(entry.entry_id).with_suffix(".tmp")
        tmp.write_bytes(_serialize(entry))
        tmp.replace(self._path(entry.entry_id))

    def _load(self, entry_id: int) -> MemoryEntry | None:
        path = self._path(entry_id)
        return _deserialize(path.read_bytes()) if path.exists() else None

    def _delete(self, entry_id: int) -> None:
        self._path(entry_id).unlink(missing_ok=True)


class RedisArchive(_IndexedArchive):
    """Entries in Redis under ``namespace`` (shared by workers); keys also held in process for search."""

    def __init__(
        self,
        url: str | None = None,
        client: Any = None,
        namespace: str = "vigil:archive",
        max_entries: int = 65536,
        max_bytes: int = 4 << 30,
    ) -> None:
        super().__init__(max_entries, max_bytes)
        if client is None:
            try:
                import redis
            except ImportError as exc:
                raise RuntimeError("the redis archive needs the 'redis' package: pip install 'vigil[redis]'") from exc
            if not url:
                raise ValueError("the redis archive needs a URL (redis://host:port/db)")
            client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
            try:
                client.ping()
            except redis.RedisError as exc:
                raise RuntimeError(f"cannot reach Redis at {url}: {exc}") from exc
        self.client = client
        self.namespace = namespace
        for raw in self.client.zrange(f"{namespace}:order", 0, -1):
            data = self.client.hget(f"{namespace}:entries", raw)
            if data is None:
                continue
            entry = _deserialize(data)
            record = _index_record(entry)
            self._index[record.entry_id] = record
            self._bytes += record.nbytes

    def _store(self, entry: MemoryEntry) -> None:
        pipe = self.client.pipeline()
        pipe.hset(f"{self.namespace}:entries", str(entry.entry_id), _serialize(entry))
        pipe.zadd(f"{self.namespace}:order", {str(entry.entry_id): entry.entry_id})
        pipe.hset(
            f"{self.namespace}:meta",
            str(entry.entry_id),
            json.dumps({"t_start": entry.t_start, "t_end": entry.t_end, "tokens": entry.num_tokens}),
        )
        pipe.execute()

    def _load(self, entry_id: int) -> MemoryEntry | None:
        data = self.client.hget(f"{self.namespace}:entries", str(entry_id))
        return _deserialize(data) if data is not None else None

    def _delete(self, entry_id: int) -> None:
        pipe = self.client.pipeline()
        for key in ("entries", "meta"):
            pipe.hdel(f"{self.namespace}:{key}", str(entry_id))
        pipe.zrem(f"{self.namespace}:order", str(entry_id))
        pipe.execute()


ARCHIVE_KINDS = ("memory", "disk", "redis")


def make_archive(kind: str, **kwargs: Any) -> Archive:
    """An archive by kind: memory, disk (directory=...), redis (url=... or client=...)."""
    classes = {"memory": InMemoryArchive, "disk": DiskArchive, "redis": RedisArchive}
    if kind not in classes:
        raise ValueError(f"unknown archive {kind!r}; choose from {', '.join(ARCHIVE_KINDS)}")
    return classes[kind](**kwargs)
