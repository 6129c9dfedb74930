"""Long-term archive of what the bounded memory evicts, searchable by a compact key (ReKV style).

Each archived entry keeps its tensors and a key: the unit-norm mean of its vectors. ``search`` ranks
entries by the cosine similarity of their key to a query vector; ``get`` loads an entry back. Every archive
is bounded in entries and in bytes, and drops its oldest entries first. Keys are held in process; payloads
live in process, in files or in Redis.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from memory.entry import MemoryEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ArchivedEntry:
    """Index record of an archived entry; the archive's ``get(entry_id)`` loads the entry itself."""

    entry_id: int
    chunk_index: int
    t_start: float
    t_end: float
    num_tokens: int
    key: torch.Tensor
    """[D] float32 unit-norm mean of the entry's vectors ([0] when it has none)."""
    nbytes: int = 0
    """Bytes of the entry's tensors (what the byte cap counts)."""


@dataclass(frozen=True, slots=True)
class ArchiveStats:
    entries: int
    bytes: int
    evicted: int
    """Entries dropped to keep within the caps."""


class Archive(Protocol):
    """A bounded store of memory entries with cosine search over their keys."""

    def put(self, entry: MemoryEntry) -> None:
        """Store an entry (replacing one with the same id); the oldest entries go beyond the caps."""
        ...

    def search(self, query: torch.Tensor, k: int) -> list[tuple[ArchivedEntry, float]]:
        """The k entries whose key is most cosine-similar to ``query`` [D], best first, with their scores."""
        ...

    def get(self, entry_id: int) -> MemoryEntry | None:
        """The stored entry, or None when it is not (or no longer) archived."""
        ...

    def __len__(self) -> int: ...

    @property
    def stats(self) -> ArchiveStats: ...


def entry_key(entry: MemoryEntry) -> torch.Tensor:
    """[D] float32 unit-norm mean of the entry's vectors; [0] when it has none."""
    vectors = entry.vectors
    if vectors is None or vectors.numel() == 0:
        return torch.zeros(0)
    return F.normalize(vectors.detach().float().mean(0), dim=0).cpu()


def _record(entry: MemoryEntry) -> ArchivedEntry:
    return ArchivedEntry(
        entry.entry_id,
        entry.chunk_index,
        entry.t_start,
        entry.t_end,
        entry.num_tokens,
        entry_key(entry),
        entry.nbytes,
    )


def _record_to_json(record: ArchivedEntry) -> dict[str, Any]:
    key = record.key.numpy().astype("<f4").tobytes()
    return {
        "id": record.entry_id,
        "chunk": record.chunk_index,
        "t_start": record.t_start,
        "t_end": record.t_end,
        "tokens": record.num_tokens,
        "bytes": record.nbytes,
        "key": base64.b64encode(key).decode("ascii"),
    }


def _record_from_json(data: dict[str, Any]) -> ArchivedEntry:
    key = np.frombuffer(base64.b64decode(data["key"]), dtype="<f4").astype(np.float32)
    return ArchivedEntry(
        int(data["id"]),
        int(data["chunk"]),
        float(data["t_start"]),
        float(data["t_end"]),
        int(data["tokens"]),
        torch.from_numpy(key),
        int(data["bytes"]),
    )


def serialize_entry(entry: MemoryEntry) -> bytes:
    """An entry as bytes (torch.save of its fields, tensors on CPU)."""
    fields = {name: getattr(entry, name) for name in MemoryEntry.__dataclass_fields__}
    fields = {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in fields.items()}
    if entry.features is not None and entry.features is entry.embeddings:
        fields["features"] = fields["embeddings"]  # stored once
    buf = io.BytesIO()
    torch.save(fields, buf)
    return buf.getvalue()


def deserialize_entry(data: bytes) -> MemoryEntry:
    """The entry ``serialize_entry`` wrote."""
    fields = torch.load(io.BytesIO(data), weights_only=True)
    fields["pooled_from"] = tuple(fields.get("pooled_from", ()))
    return MemoryEntry(**fields)


class _BoundedArchive:
    """The key index, the caps and search; subclasses store the payloads (_store, _load, _delete)."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError(f"archive caps must be >= 1, got max_entries={max_entries}, max_bytes={max_bytes}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._records: OrderedDict[int, ArchivedEntry] = OrderedDict()  # oldest first
        self._bytes = 0
        self._evicted = 0
        self._matrices: dict[int, tuple[torch.Tensor, list[ArchivedEntry]]] | None = None

    def __len__(self) -> int:
        return len(self._records)

    @property
    def stats(self) -> ArchiveStats:
        return ArchiveStats(len(self._records), self._bytes, self._evicted)

    def put(self, entry: MemoryEntry) -> None:
        """Store an entry (replacing one with the same id) and drop the oldest beyond the caps."""
        record = _record(entry)
        if record.entry_id in self._records:
            self._forget(record.entry_id)
        self._store(entry, record)
        self._index(record)
        self._enforce_caps()

    def search(self, query: torch.Tensor, k: int) -> list[tuple[ArchivedEntry, float]]:
        """Top-k entries by cosine similarity of their key to ``query`` [D], best first."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        if query.ndim != 1:
            raise ValueError(f"query must be one vector [D], got shape {tuple(query.shape)}")
        if k == 0 or not self._records:
            return []
        matrices = self._key_matrices()
        if query.numel() not in matrices:
            raise ValueError(
                f"query has {query.numel()} dims but archived keys have {sorted(d for d in matrices if d)}; "
                "keys are the mean of each entry's vectors (features when set, else embeddings)"
            )
        keys, records = matrices[query.numel()]  # [E, D]
        scores = keys @ F.normalize(query.detach().float().cpu(), dim=0)  # [E]
        order = torch.argsort(scores, descending=True, stable=True)[:k]
        return [(records[i], float(scores[i])) for i in order.tolist()]

    def get(self, entry_id: int) -> MemoryEntry | None:
        """The stored entry, or None when it is not archived (or its payload is unreadable)."""
        return self._load(entry_id) if entry_id in self._records else None

    def _key_matrices(self) -> dict[int, tuple[torch.Tensor, list[ArchivedEntry]]]:
        """Keys stacked per dimension ([E_d, d] each), rebuilt after a change."""
        if self._matrices is None:
            groups: dict[int, list[ArchivedEntry]] = {}
            for record in self._records.values():
                groups.setdefault(record.key.numel(), []).append(record)
            self._matrices = {d: (torch.stack([r.key for r in rs]), rs) for d, rs in groups.items()}
        return self._matrices

    def _index(self, record: ArchivedEntry) -> None:
        self._records[record.entry_id] = record
        self._bytes += record.nbytes
        self._matrices = None

    def _enforce_caps(self) -> None:
        while self._records and (len(self._records) > self.max_entries or self._bytes > self.max_bytes):
            oldest = next(iter(self._records))
            self._forget(oldest)
            self._evicted += 1

    def _forget(self, entry_id: int) -> None:
        record = self._records.pop(entry_id)
        self._bytes -= record.nbytes
        self._matrices = None
        self._delete(entry_id)

    def _store(self, entry: MemoryEntry, record: ArchivedEntry) -> None:
        raise NotImplementedError

    def _load(self, entry_id: int) -> MemoryEntry | None:
        raise NotImplementedError

    def _delete(self, entry_id: int) -> None:
        raise NotImplementedError


class InMemoryArchive(_BoundedArchive):
    """In-process archive (the default): entries kept as they are."""

    def __init__(self, max_entries: int = 4096, max_bytes: int = 1 << 30) -> None:
        super().__init__(max_entries, max_bytes)
        self._entries: dict[int, MemoryEntry] = {}

    def _store(self, entry: MemoryEntry, record: ArchivedEntry) -> None:
        self._entries[entry.entry_id] = entry

    def _load(self, entry_id: int) -> MemoryEntry | None:
        return self._entries.get(entry_id)

    def _delete(self, entry_id: int) -> None:
        self._entries.pop(entry_id, None)


class DiskArchive(_BoundedArchive):
    """One file per entry in a directory plus an append-only index of keys; reopening restores the archive."""

    INDEX = "index.jsonl"

    def __init__(self, directory: str | os.PathLike[str], max_entries: int = 65536, max_bytes: int = 16 << 30) -> None:
        super().__init__(max_entries, max_bytes)
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"cannot use {self.directory} as the archive directory: {exc}") from exc
        self._index_path = self.directory / self.INDEX
        self._log_lines = 0
        self._reopen()
        self._enforce_caps()
        self._rewrite_index()

    def _path(self, entry_id: int) -> Path:
        return self.directory / f"entry-{entry_id}.pt"

    def _reopen(self) -> None:
        """Replay the index, then keep the records whose file exists and recover files the index missed."""
        records: OrderedDict[int, ArchivedEntry] = OrderedDict()
        if self._index_path.exists():
            for number, line in enumerate(self._index_path.read_text().splitlines(), 1):
                try:
                    item = json.loads(line)
                    if item["op"] == "put":
                        record = _record_from_json(item)
                        records.pop(record.entry_id, None)
                        records[record.entry_id] = record
                    else:
                        records.pop(int(item["id"]), None)
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("skipping line %d of %s: %s", number, self._index_path, exc)
        for record in records.values():
            if self._path(record.entry_id).exists():
                self._index(record)
            else:
                log.warning("archive index names entry %d but %s is missing", record.entry_id, self.directory)
        for tmp in self.directory.glob("entry-*.tmp"):
            tmp.unlink(missing_ok=True)
        orphans = [p for p in self.directory.glob("entry-*.pt") if p.stem.split("-", 1)[1].isdigit()]
        for path in sorted(orphans, key=lambda p: int(p.stem.split("-", 1)[1])):
            if int(path.stem.split("-", 1)[1]) in self._records:
                continue
            try:
                self._index(_record(deserialize_entry(path.read_bytes())))
                log.warning("recovered %s, which the archive index did not list", path)
            except Exception as exc:  # a damaged file must not stop the archive from opening
                log.warning("skipping unreadable archive file %s: %s", path, exc)

    def _append(self, item: dict[str, Any]) -> None:
        with self._index_path.open("a") as f:
            f.write(json.dumps(item) + "\n")
        self._log_lines += 1
        if self._log_lines > 2 * len(self._records) + 64:
            self._rewrite_index()

    def _rewrite_index(self) -> None:
        """Write the index afresh (one line per live entry) and atomically replace the old one."""
        tmp = self._index_path.with_suffix(".tmp")
        lines = [json.dumps({"op": "put", **_record_to_json(r)}) + "\n" for r in self._records.values()]
        tmp.write_text("".join(lines))
        tmp.replace(self._index_path)
        self._log_lines = len(lines)

    def _store(self, entry: MemoryEntry, record: ArchivedEntry) -> None:
        path = self._path(entry.entry_id)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(serialize_entry(entry))
        tmp.replace(path)
        self._append({"op": "put", **_record_to_json(record)})

    def _load(self, entry_id: int) -> MemoryEntry | None:
        try:
            return deserialize_entry(self._path(entry_id).read_bytes())
        except Exception as exc:
            log.warning("cannot read archived entry %d from %s: %s", entry_id, self.directory, exc)
            return None

    def _delete(self, entry_id: int) -> None:
        self._path(entry_id).unlink(missing_ok=True)
        self._append({"op": "del", "id": entry_id})


def _import_redis() -> Any:
    try:
        import redis
    except ImportError as exc:
        raise RuntimeError(
            "the redis archive needs the 'redis' package: pip install redis (or vigil[redis]), "
            "or choose the memory or disk archive"
        ) from exc
    return redis


class RedisArchive(_BoundedArchive):
    """Entries in Redis under ``namespace``: payloads and key records in hashes, order in a sorted set.

    Reopening the namespace restores the archive. Keys are also held in process for search.
    """

    def __init__(
        self,
        url: str | None = None,
        client: Any = None,
        namespace: str = "vigil:archive",
        max_entries: int = 65536,
        max_bytes: int = 4 << 30,
    ) -> None:
        super().__init__(max_entries, max_bytes)
        redis = _import_redis()
        self._redis_error = redis.RedisError
        if client is None:
            if not url:
                raise ValueError("the redis archive needs a URL (redis://host:port/db) or a client")
            try:
                client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
            except ValueError as exc:
                raise ValueError(f"bad Redis URL {url!r}: {exc}") from exc
        self.client = client
        self.where = url or repr(client)
        self.namespace = namespace
        self._entries_key = f"{namespace}:entries"
        self._records_key = f"{namespace}:records"
        self._order_key = f"{namespace}:order"
        self._seq_key = f"{namespace}:seq"
        with self._calling("open the archive"):
            client.ping()
            ids = [m.decode() if isinstance(m, bytes) else str(m) for m in client.zrange(self._order_key, 0, -1)]
            raw = client.hmget(self._records_key, ids) if ids else []
        for entry_id, data in zip(ids, raw, strict=True):
            if data is None:
                log.warning("redis archive %s: entry %s has no key record; skipped", namespace, entry_id)
                continue
            self._index(_record_from_json(json.loads(data)))
        self._enforce_caps()

    @contextlib.contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        try:
            yield
        except self._redis_error as exc:
            raise RuntimeError(
                f"cannot reach Redis at {self.where} to {what}: {exc}; is redis-server running there?"
            ) from exc

    def _store(self, entry: MemoryEntry, record: ArchivedEntry) -> None:
        member = str(entry.entry_id)
        with self._calling(f"store entry {member}"):
            seq = self.client.incr(self._seq_key)
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(self._entries_key, member, serialize_entry(entry))
            pipe.hset(self._records_key, member, json.dumps(_record_to_json(record)))
            pipe.zadd(self._order_key, {member: seq})
            pipe.execute()

    def _load(self, entry_id: int) -> MemoryEntry | None:
        with self._calling(f"load entry {entry_id}"):
            data = self.client.hget(self._entries_key, str(entry_id))
        if data is None:
            return None
        try:
            return deserialize_entry(data)
        except Exception as exc:
            log.warning("cannot read archived entry %d from redis %s: %s", entry_id, self.namespace, exc)
            return None

    def _delete(self, entry_id: int) -> None:
        member = str(entry_id)
        with self._calling(f"delete entry {member}"):
            pipe = self.client.pipeline(transaction=True)
            pipe.hdel(self._entries_key, member)
            pipe.hdel(self._records_key, member)
            pipe.zrem(self._order_key, member)
            pipe.execute()


ARCHIVE_KINDS: tuple[str, ...] = ("memory", "disk", "redis")
_ARCHIVES: dict[str, type] = {"memory": InMemoryArchive, "disk": DiskArchive, "redis": RedisArchive}


def make_archive(kind: str, **kwargs: Any) -> Archive:
    """An archive by kind: memory, disk (directory=...) or redis (url=... or client=...), with caps."""
    if kind not in _ARCHIVES:
        raise ValueError(f"unknown archive {kind!r}; choose one of {', '.join(ARCHIVE_KINDS)}")
    try:
        return _ARCHIVES[kind](**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad options for the {kind} archive: {exc}") from None


__all__ = [
    "ARCHIVE_KINDS",
    "Archive",
    "ArchiveStats",
    "ArchivedEntry",
    "DiskArchive",
    "InMemoryArchive",
    "RedisArchive",
    "deserialize_entry",
    "entry_key",
    "make_archive",
    "serialize_entry",
]
