"""The long-term archive: bounded, searchable by key, persistent on disk and in a real Redis."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pytest
import redis
import torch

from memory.archive import (
    ARCHIVE_KINDS,
    DiskArchive,
    InMemoryArchive,
    RedisArchive,
    deserialize_entry,
    entry_key,
    make_archive,
    serialize_entry,
)
from memory.policies import SinkWindowPolicy
from memory.store import MemoryEntry, VisualMemory

DIM = 8


def make_entry(i: int, direction: int, n: int = 4) -> MemoryEntry:
    """An entry whose vectors all point (nearly) along one axis."""
    vec = torch.zeros(n, DIM)
    vec[:, direction] = 1.0
    vec += 0.01 * torch.randn(n, DIM, generator=torch.Generator().manual_seed(i))
    idx = torch.arange(n)
    pos = torch.stack([torch.full_like(idx, i), idx // 2, idx % 2])
    return MemoryEntry(i, i, 2.0 * i, 2.0 * i + 2, idx, pos, embeddings=vec, round=i % 2, pooled_from=(i + 100,))


def axis(direction: int) -> torch.Tensor:
    query = torch.zeros(DIM)
    query[direction] = 1.0
    return query


def namespace() -> str:
    return f"test:{uuid.uuid4().hex}"


def all_kinds(tmp_path: Path, redis_url: str, **caps: int):
    yield InMemoryArchive(**caps)
    yield DiskArchive(tmp_path / f"disk-{uuid.uuid4().hex}", **caps)
    yield RedisArchive(redis_url, namespace=namespace(), **caps)


def assert_same_entry(a: MemoryEntry, b: MemoryEntry) -> None:
    assert (a.entry_id, a.chunk_index, a.t_start, a.t_end, a.round, a.pooled_from) == (
        b.entry_id,
        b.chunk_index,
        b.t_start,
        b.t_end,
        b.round,
        b.pooled_from,
    )
    assert torch.equal(a.token_indices, b.token_indices) and torch.equal(a.positions, b.positions)
    assert torch.equal(a.embeddings, b.embeddings)


def test_key_and_serialisation() -> None:
    e = make_entry(3, direction=2)
    key = entry_key(e)
    assert key.shape == (DIM,) and key.dtype == torch.float32 and abs(float(key.norm()) - 1.0) < 1e-6
    assert int(key.argmax()) == 2
    assert entry_key(MemoryEntry(0, 0, 0.0, 1.0, torch.arange(1), torch.zeros(3, 1, dtype=torch.long))).numel() == 0
    shared = MemoryEntry(1, 1, 0.0, 1.0, e.token_indices, e.positions, embeddings=e.embeddings, features=e.embeddings)
    back = deserialize_entry(serialize_entry(shared))
    assert back.features is back.embeddings and torch.equal(back.embeddings, e.embeddings)


def test_search_returns_the_planted_entry_first(tmp_path: Path, redis_url: str) -> None:
    for archive in all_kinds(tmp_path, redis_url):
        for i in range(20):
            archive.put(make_entry(i, direction=i % 3))
        archive.put(make_entry(99, direction=7))  # the only one pointing this way
        found = archive.search(axis(7), 3)
        (best, score), *_ = found
        assert best.entry_id == 99 and score > 0.99, type(archive).__name__
        assert (best.t_start, best.t_end, best.num_tokens, best.chunk_index) == (198.0, 200.0, 4, 99)
        scores = [s for _, s in found]
        assert scores == sorted(scores, reverse=True) and len(found) == 3
        assert [r.entry_id % 3 for r, _ in archive.search(axis(1), 7)] == [1] * 7
        assert_same_entry(archive.get(99), make_entry(99, 7))
        assert archive.get(12345) is None and len(archive) == 21
        assert archive.search(axis(1), 0) == []


def test_caps_on_entries_drop_oldest(tmp_path: Path, redis_url: str) -> None:
    for archive in all_kinds(tmp_path, redis_url, max_entries=5):
        for i in range(12):
            archive.put(make_entry(i, 0))
        assert len(archive) == 5 and archive.stats.evicted == 7 and archive.stats.entries == 5
        assert archive.get(6) is None and archive.get(7) is not None
        archive.put(make_entry(7, 1))  # a new version of 7 becomes the newest
        archive.put(make_entry(12, 0))
        assert archive.get(8) is None and archive.get(7) is not None and archive.stats.evicted == 8
        assert [r.entry_id for r, _ in archive.search(axis(0), 10)][-1] == 7  # the one pointing elsewhere
        assert sorted(r.entry_id for r, _ in archive.search(axis(0), 10)) == [7, 9, 10, 11, 12]


def test_caps_on_bytes_drop_oldest(tmp_path: Path, redis_url: str) -> None:
    one = make_entry(0, 0).nbytes
    for archive in all_kinds(tmp_path, redis_url, max_bytes=3 * one + one // 2):
        for i in range(6):
            archive.put(make_entry(i, 0))
        assert archive.stats.bytes == 3 * one and len(archive) == 3 and archive.stats.evicted == 3
        assert [archive.get(i) is not None for i in range(6)] == [False] * 3 + [True] * 3
    tiny = InMemoryArchive(max_bytes=one - 1)  # an entry bigger than the whole cap is not kept
    tiny.put(make_entry(0, 0))
    assert len(tiny) == 0 and tiny.stats.bytes == 0 and tiny.stats.evicted == 1


def test_disk_archive_reopens_from_its_index(tmp_path: Path) -> None:
    folder = tmp_path / "a"
    disk = DiskArchive(folder, max_entries=3)
    for i in range(5):
        disk.put(make_entry(i, i))
    assert sorted(p.name for p in folder.glob("entry-*")) == ["entry-2.pt", "entry-3.pt", "entry-4.pt"]
    lines = [json.loads(line) for line in (folder / DiskArchive.INDEX).read_text().splitlines()]
    assert [item["op"] for item in lines].count("put") == 5
    again = DiskArchive(folder)
    assert len(again) == 3 and again.stats.bytes == disk.stats.bytes
    (best, _), *_ = again.search(axis(3), 1)
    assert best.entry_id == 3 and torch.equal(best.key, entry_key(make_entry(3, 3)))
    assert_same_entry(again.get(4), make_entry(4, 4))
    # the reopened index is compact: one line per entry
    assert len((folder / DiskArchive.INDEX).read_text().splitlines()) == 3


def test_disk_archive_survives_damage(tmp_path: Path) -> None:
    folder = tmp_path / "b"
    disk = DiskArchive(folder)
    for i in range(3):
        disk.put(make_entry(i, i))
    (folder / "entry-1.pt").unlink()  # listed in the index, file gone: skipped
    serialized = serialize_entry(make_entry(7, 6))
    (folder / "entry-7.pt").write_bytes(serialized)  # a file the index missed: recovered
    (folder / "entry-8.pt").write_bytes(b"garbage")  # unreadable: skipped
    with (folder / DiskArchive.INDEX).open("a") as f:
        f.write('{"op": "put", "id": 9, "trunc')  # a torn last line: skipped
    again = DiskArchive(folder)
    assert sorted(r.entry_id for r, _ in again.search(axis(0), 10)) == [0, 2, 7]
    assert again.search(axis(6), 1)[0][0].entry_id == 7
    assert len(again) == 3 and again.get(1) is None and again.get(7) is not None
    (folder / "entry-2.pt").write_bytes(b"garbage")
    assert again.get(2) is None  # an unreadable payload reads as missing


def test_disk_index_stays_compact(tmp_path: Path) -> None:
    disk = DiskArchive(tmp_path / "c", max_entries=4)
    for i in range(300):
        disk.put(make_entry(i, i % DIM))
    lines = (tmp_path / "c" / DiskArchive.INDEX).read_text().splitlines()
    assert len(lines) <= 2 * 4 + 64 + 1 and len(list((tmp_path / "c").glob("entry-*.pt"))) == 4
    assert len(DiskArchive(tmp_path / "c")) == 4


def test_redis_archive_reopens_and_keeps_data_in_redis(redis_url: str) -> None:
    ns = namespace()
    first = RedisArchive(redis_url, namespace=ns)
    for i in range(4):
        first.put(make_entry(i, i))
    client = redis.Redis.from_url(redis_url)
    assert client.hlen(f"{ns}:entries") == 4 and client.zcard(f"{ns}:order") == 4 and client.hlen(f"{ns}:records") == 4
    reopened = RedisArchive(client=client, namespace=ns, max_entries=2)  # tighter caps apply on reopening
    assert len(reopened) == 2 and reopened.get(1) is None and client.zcard(f"{ns}:order") == 2
    (best, score), *_ = reopened.search(axis(3), 2)
    assert best.entry_id == 3 and score > 0.99
    assert_same_entry(reopened.get(3), make_entry(3, 3))
    assert len(RedisArchive(redis_url, namespace=namespace())) == 0  # namespaces are separate


def test_memory_evicts_into_a_redis_archive(redis_url: str) -> None:
    archive = make_archive("redis", url=redis_url, namespace=namespace())
    memory = VisualMemory(8, SinkWindowPolicy(sink_entries=0, target=0.5), archive)
    for i in range(4):
        memory.add(make_entry(i, i))
    assert [e.entry_id for e in memory.entries] == [2, 3] and len(archive) == 2
    assert archive.search(axis(1), 1)[0][0].entry_id == 1 and archive.get(0).num_tokens == 4


def test_make_archive_kinds(tmp_path: Path) -> None:
    assert ARCHIVE_KINDS == ("memory", "disk", "redis")
    assert isinstance(make_archive("memory", max_entries=3), InMemoryArchive)
    assert isinstance(make_archive("disk", directory=tmp_path / "d"), DiskArchive)


def test_bad_configuration_and_queries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown archive 's3'; choose one of memory, disk, redis"):
        make_archive("s3")
    with pytest.raises(ValueError, match="bad options for the disk archive"):
        make_archive("disk")
    with pytest.raises(ValueError, match="caps must be >= 1"):
        InMemoryArchive(max_entries=0)
    with pytest.raises(ValueError, match="caps must be >= 1"):
        DiskArchive(tmp_path / "x", max_bytes=0)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match=r"cannot use .* as the archive directory"):
        DiskArchive(blocker / "sub")
    with pytest.raises(RuntimeError, match=r"cannot reach Redis at redis://127\.0\.0\.1:1/0"):
        RedisArchive("redis://127.0.0.1:1/0")
    with pytest.raises(ValueError, match="needs a URL"):
        RedisArchive()
    with pytest.raises(ValueError, match="bad Redis URL"):
        RedisArchive("http://example")
    monkeypatch.setitem(sys.modules, "redis", None)  # as if the package were not installed
    with pytest.raises(RuntimeError, match="needs the 'redis' package: pip install redis"):
        RedisArchive("redis://127.0.0.1:1/0")
    archive = InMemoryArchive()
    archive.put(make_entry(0, 0))
    with pytest.raises(ValueError, match=r"query has 5 dims but archived keys have \[8\]"):
        archive.search(torch.ones(5), 1)
    with pytest.raises(ValueError, match=r"query must be one vector \[D\]"):
        archive.search(torch.ones(2, DIM), 1)
    with pytest.raises(ValueError, match="k must be >= 0"):
        archive.search(axis(0), -1)
