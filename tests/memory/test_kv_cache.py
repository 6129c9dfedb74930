"""Segment-addressed KV cache over a real transformers DynamicCache."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from memory.kv_cache import CacheFullError, SegmentKVCache

LAYERS, HEADS, DIM = 2, 2, 4


def _write(cache: DynamicCache, n: int, value: float) -> None:
    """Append n tokens whose keys/values all equal value + token offset (as a model would)."""
    base = torch.arange(n, dtype=torch.float32).view(1, 1, n, 1) + value
    kv = base.expand(1, HEADS, n, DIM).contiguous()
    for layer in range(LAYERS):
        cache.update(kv + layer * 1000, -(kv + layer * 1000), layer)


def _build(segments: list[tuple[str, int]], cap: int = 100) -> SegmentKVCache:
    kv = SegmentKVCache(DynamicCache(), cap)
    for i, (sid, n) in enumerate(segments):
        with kv.append(sid, "visual", n):
            _write(kv.cache, n, 100.0 * i)
    return kv


def _tokens(kv: SegmentKVCache, layer: int = 0) -> list[float]:
    return kv.cache.layers[layer].keys[0, 0, :, 0].tolist()


def test_append_and_spans() -> None:
    kv = _build([("a", 2), ("b", 3), ("c", 1)])
    assert kv.length == 6 and kv.cache.get_seq_length() == 6
    assert kv.span("b") == (2, 5)
    assert [s.segment_id for s in kv.segments] == ["a", "b", "c"]
    assert kv.nbytes == LAYERS * 2 * 6 * HEADS * DIM * 4


def test_evict_removes_exact_tokens_in_every_layer() -> None:
    kv = _build([("a", 2), ("b", 3), ("c", 1)])
    assert kv.evict(["b"]) == 3
    assert _tokens(kv) == [0.0, 1.0, 200.0]
    assert _tokens(kv, 1) == [1000.0, 1001.0, 1200.0]
    assert kv.cache.layers[1].values[0, 0, :, 0].tolist() == [-1000.0, -1001.0, -1200.0]
    assert kv.span("c") == (2, 3)


def test_prune_keeps_local_indices() -> None:
    kv = _build([("a", 2), ("b", 4)])
    assert kv.prune("b", torch.tensor([0, 3])) == 2
    assert _tokens(kv) == [0.0, 1.0, 100.0, 103.0]
    assert kv.segments[1].length == 2


def test_fork_rollback_is_byte_identical() -> None:
    kv = _build([("a", 2), ("b", 3)])
    before = [(layer.keys.clone(), layer.values.clone()) for layer in kv.cache.layers]
    checkpoint = kv.fork()
    with kv.append("q", "question", 4):
        _write(kv.cache, 4, 900.0)
    _write(kv.cache, 1, 950.0)  # a generated token, never registered
    kv.rollback(checkpoint)
    assert kv.length == 5 and kv.cache.get_seq_length() == 5
    for (k, v), layer in zip(before, kv.cache.layers, strict=True):
        assert torch.equal(k, layer.keys) and torch.equal(v, layer.values)
    assert [s.segment_id for s in kv.segments] == ["a", "b"]


def test_cap_is_hard() -> None:
    kv = _build([("a", 6)], cap=8)
    with pytest.raises(CacheFullError, match="exceed the KV cap of 8"), kv.append("b", "visual", 3):
        pass
    assert kv.length == 6 and kv.room() == 2


def test_model_must_write_what_was_announced() -> None:
    kv = _build([("a", 2)])
    with pytest.raises(RuntimeError, match="expected 3 new tokens"), kv.append("b", "visual", 3):
        _write(kv.cache, 2, 5.0)
    assert kv.length == 2 and kv.cache.get_seq_length() == 2


def test_bad_ids() -> None:
    kv = _build([("a", 2)])
    with pytest.raises(KeyError, match="no segments"):
        kv.evict(["zz"])
    with pytest.raises(KeyError, match="no segment"):
        kv.span("zz")
    with pytest.raises(ValueError, match="already in the KV cache"), kv.append("a", "visual", 1):
        pass
    with pytest.raises(ValueError, match="cap_tokens"):
        SegmentKVCache(DynamicCache(), 0)


def test_rollback_refuses_changes_below_fork() -> None:
    kv = _build([("a", 2), ("b", 2)])
    checkpoint = kv.fork()
    kv.evict(["a"])
    with pytest.raises(RuntimeError, match="below the fork point"):
        kv.rollback(checkpoint)


def test_split_last() -> None:
    kv = _build([("all", 5)])
    kv.split_last([("x", "system", 2), ("y", "visual", 3)])
    assert kv.span("y") == (2, 5)
    with pytest.raises(ValueError, match="parts cover"):
        kv.split_last([("z", "visual", 1)])
