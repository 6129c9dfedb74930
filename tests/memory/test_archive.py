"""The long-term archive: bounded, searchable by key, persistent on disk and in a real Redis."""

from __future__ import annotations

import uuid

import pytest
import torch

from memory.archive import DiskArchive, InMemoryArchive, RedisArchive, entry_key, make_archive
from memory.store import MemoryEntry


def entry(i: int, direction: int, dim: int = 8, n: int = 4) -> MemoryEntry:
    vec = torch.zeros(n, dim)
    vec[:, direction] = 1.0
    vec += 0.01 * torch.randn(n, dim, generator=torch.Generator().manual_seed(i))
    idx = torch.arange(n)
    return MemoryEntry(i, i, 2.0 * i, 2.0 * i + 2, idx, torch.zeros(3, n, dtype=torch.long), embeddings=vec)


def _archives(tmp_path, redis_url):
    yield InMemoryArchive()
    yield DiskArchive(tmp_path / "archive")
    yield RedisArchive(redis_url, namespace=f"test:{uuid.uuid4().hex}")


def test_search_returns_the_planted_entry_first(tmp_path, redis_url) -> None:
    for archive in _archives(tmp_path, redis_url):
        for i in range(20):
            archive.put(entry(i, direction=i % 3))
        archive.put(entry(99, direction=7))  # the only one pointing this way
        query = torch.zeros(8)
        query[7] = 1.0
        (best, score), *rest = archive.search(query, 3)
        assert best.entry_id == 99 and score > 0.99, type(archive).__name__
        assert all(s <= score for _, s in rest)
        got = archive.get(99)
        assert got is not None and torch.equal(got.embeddings, entry(99, 7).embeddings)


def test_caps_drop_oldest(tmp_path, redis_url) -> None:
    for kind, kwargs in (
        ("memory", {}),
        ("disk", {"directory": tmp_path / "d"}),
        ("redis", {"url": redis_url, "namespace": f"test:{uuid.uuid4().hex}"}),
    ):
        archive = make_archive(kind, max_entries=5, **kwargs)
        for i in range(12):
            archive.put(entry(i, 0))
        assert len(archive) == 5 and archive.stats.dropped == 7
        assert archive.get(6) is None and archive.get(7) is not None
    one = entry(0, 0).nbytes
    small = InMemoryArchive(max_bytes=3 * one)
    for i in range(6):
        small.put(entry(i, 0))
    assert small.stats.bytes <= 3 * one and len(small) == 3


def test_disk_and_redis_reopen(tmp_path, redis_url) -> None:
    disk = DiskArchive(tmp_path / "a")
    disk.put(entry(1, 2))
    disk.put(entry(2, 3))
    (tmp_path / "a" / "entry-3.pt").write_bytes(b"garbage")  # a damaged file is skipped, not fatal
    again = DiskArchive(tmp_path / "a")
    assert len(again) == 2 and again.get(2).t_start == 4.0
    ns = f"test:{uuid.uuid4().hex}"
    RedisArchive(redis_url, namespace=ns).put(entry(5, 1))
    reopened = RedisArchive(redis_url, namespace=ns)
    assert len(reopened) == 1 and reopened.search(entry_key(entry(5, 1)), 1)[0][0].entry_id == 5


def test_bad_configuration() -> None:
    with pytest.raises(ValueError, match="unknown archive"):
        make_archive("s3")
    with pytest.raises(RuntimeError, match="cannot reach Redis"):
        RedisArchive("redis://127.0.0.1:1/0")
    with pytest.raises(ValueError, match="caps must be >= 1"):
        InMemoryArchive(max_entries=0)
