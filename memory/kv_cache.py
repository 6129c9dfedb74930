"""A segment-addressed KV cache: append segments, evict or prune them by id, fork for a question, roll back.

It manages the per-layer key/value tensors of any cache object exposing ``layers`` whose items hold ``keys`` and
``values`` tensors shaped [batch, kv_heads, seq, head_dim] (``transformers.DynamicCache`` does). Tokens are kept
contiguous, in segment order, so a model can keep appending to the cache as usual.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch


class CacheFullError(RuntimeError):
    """An append would exceed the cache's hard token cap."""


@dataclass(frozen=True, slots=True)
class Segment:
    """A contiguous run of cached tokens with an id and a kind (``system``, ``visual``, ``text``, ``question``)."""

    segment_id: str
    kind: str
    length: int


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """State to roll back to: token count and the segment table at fork time."""

    length: int
    segments: tuple[Segment, ...]


class SegmentKVCache:
    """Segment table over a layered KV cache, with a hard cap in tokens."""

    def __init__(self, cache: Any, cap_tokens: int) -> None:
        if cap_tokens < 1:
            raise ValueError(f"cap_tokens must be >= 1, got {cap_tokens}")
        self.cache = cache
        self.cap_tokens = cap_tokens
        self._segments: list[Segment] = []

    # -- reading -------------------------------------------------------------------------------------------
    @property
    def length(self) -> int:
        """Tokens held (the sum of segment lengths)."""
        return sum(s.length for s in self._segments)

    @property
    def segments(self) -> tuple[Segment, ...]:
        return tuple(self._segments)

    def __contains__(self, segment_id: str) -> bool:
        return any(s.segment_id == segment_id for s in self._segments)

    def span(self, segment_id: str) -> tuple[int, int]:
        """(start, end) token offsets of a segment."""
        start = 0
        for seg in self._segments:
            if seg.segment_id == segment_id:
                return start, start + seg.length
            start += seg.length
        raise KeyError(f"no segment {segment_id!r} in the KV cache")

    @property
    def nbytes(self) -> int:
        """Bytes held by keys and values over all layers."""
        return sum(t.numel() * t.element_size() for t in self._tensors())

    def room(self) -> int:
        """Tokens that can still be appended."""
        return self.cap_tokens - self.length

    # -- writing -------------------------------------------------------------------------------------------
    @contextmanager
    def append(self, segment_id: str, kind: str, num_tokens: int) -> Iterator[None]:
        """Register the ``num_tokens`` the model appends inside this block as one segment."""
        if segment_id in self:
            raise ValueError(f"segment {segment_id!r} is already in the KV cache")
        if num_tokens > self.room():
            raise CacheFullError(
                f"appending {num_tokens} tokens would exceed the KV cap of {self.cap_tokens} "
                f"({self.length} held); evict segments first"
            )
        before = self._physical_length()
        yield
        grown = self._physical_length() - before
        if grown != num_tokens:
            self.truncate(before)
            raise RuntimeError(f"segment {segment_id!r}: expected {num_tokens} new tokens, the model wrote {grown}")
        self._segments.append(Segment(segment_id, kind, num_tokens))

    def split_last(self, parts: list[tuple[str, str, int]]) -> None:
        """Re-label the last segment as consecutive segments (id, kind, length) covering exactly its tokens."""
        last = self._segments[-1]
        if sum(n for _, _, n in parts) != last.length:
            raise ValueError(f"parts cover {sum(n for _, _, n in parts)} tokens, segment has {last.length}")
        self._segments[-1:] = [Segment(sid, kind, n) for sid, kind, n in parts]

    def evict(self, segment_ids: set[str] | list[str] | tuple[str, ...]) -> int:
        """Remove whole segments; returns tokens removed. Unknown ids raise KeyError."""
        ids = set(segment_ids)
        known = {s.segment_id for s in self._segments}
        if missing := ids - known:
            raise KeyError(f"no segments {sorted(missing)} in the KV cache")
        keep = torch.cat([torch.full((s.length,), s.segment_id not in ids, dtype=torch.bool) for s in self._segments])
        removed = int((~keep).sum())
        self._select(keep)
        self._segments = [s for s in self._segments if s.segment_id not in ids]
        return removed

    def prune(self, segment_id: str, keep_local: torch.Tensor) -> int:
        """Keep only the tokens at ``keep_local`` ([K'] long, offsets within the segment); returns tokens removed."""
        start, end = self.span(segment_id)
        local = torch.zeros(end - start, dtype=torch.bool)
        local[keep_local.long()] = True
        keep = torch.ones(self.length, dtype=torch.bool)
        keep[start:end] = local
        removed = int((~local).sum())
        self._select(keep)
        self._segments = [
            Segment(s.segment_id, s.kind, s.length - removed) if s.segment_id == segment_id else s
            for s in self._segments
        ]
        return removed

    def fork(self) -> Checkpoint:
        """Remember the current state; what is appended after can be rolled back."""
        return Checkpoint(self.length, tuple(self._segments))

    def rollback(self, checkpoint: Checkpoint) -> None:
        """Drop everything appended since ``checkpoint`` (segments registered or not)."""
        if self._segments[: len(checkpoint.segments)] != list(checkpoint.segments):
            raise RuntimeError("the KV cache changed below the fork point; cannot roll back")
        self.truncate(checkpoint.length)
        self._segments = list(checkpoint.segments)

    def truncate(self, length: int) -> None:
        """Cut the physical cache to ``length`` tokens (keeps the tensors' contents before it byte-identical)."""
        for layer in self.cache.layers:
            if getattr(layer, "keys", None) is not None and layer.keys.numel():
                layer.keys = layer.keys[..., :length, :]
                layer.values = layer.values[..., :length, :]

    def clear(self) -> None:
        """Empty the cache."""
        self.truncate(0)
        self._segments = []

    # -- internals -----------------------------------------------------------------------------------------
    def _tensors(self) -> Iterator[torch.Tensor]:
        for layer in self.cache.layers:
            if getattr(layer, "keys", None) is not None and layer.keys.numel():
                yield layer.keys
                yield layer.values

    def _physical_length(self) -> int:
        for layer in self.cache.layers:
            if getattr(layer, "keys", None) is not None and layer.keys.numel():
                return int(layer.keys.shape[-2])
        return 0

    def _select(self, keep: torch.Tensor) -> None:
        # keep: [S] bool over the cached tokens
        index = keep.nonzero().squeeze(1)
        for layer in self.cache.layers:
            if getattr(layer, "keys", None) is not None and layer.keys.numel():
                idx = index.to(layer.keys.device)
                layer.keys = layer.keys.index_select(-2, idx).contiguous()  # [B, H, S', D]
                layer.values = layer.values.index_select(-2, idx).contiguous()
