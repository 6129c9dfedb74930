"""The bounded visual memory: one entry per kept temporal step, a token budget that is never exceeded.

Every change the memory makes is returned as a typed operation (Evict, Prune, Pool) so that an engine can
mirror it in its KV cache.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from memory.archive import Archive

log = logging.getLogger(__name__)


@dataclass(slots=True)
class MemoryEntry:
    """The kept tokens of one temporal step (or of several pooled steps)."""

    entry_id: int
    """Unique, increasing in insertion order (assigned by VisualMemory.add when negative)."""
    chunk_index: int
    t_start: float
    t_end: float
    token_indices: torch.Tensor
    """[K] long: each kept token's index in its step's row-major token grid."""
    positions: torch.Tensor
    """[3, K] long: original M-RoPE (t, h, w) positions."""
    embeddings: torch.Tensor | None = None
    """[K, D] visual tokens the engine feeds."""
    features: torch.Tensor | None = None
    """[K, C] vectors the policies compare (embeddings when None)."""
    round: int = 0
    """Dialogue round at insertion."""
    pooled_from: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        k = self.token_indices.numel()
        if self.token_indices.ndim != 1:
            raise ValueError(f"token_indices must be [K], got shape {tuple(self.token_indices.shape)}")
        if tuple(self.positions.shape) != (3, k):
            raise ValueError(f"positions must be [3, {k}], got {tuple(self.positions.shape)}")
        for name in ("embeddings", "features"):
            value = getattr(self, name)
            if value is not None and (value.ndim != 2 or value.shape[0] != k):
                raise ValueError(f"{name} must be [{k}, D], got {tuple(value.shape)}")
        if self.t_end < self.t_start:
            raise ValueError(f"t_end ({self.t_end}) is before t_start ({self.t_start})")

    @property
    def num_tokens(self) -> int:
        return int(self.token_indices.numel())

    @property
    def vectors(self) -> torch.Tensor | None:
        """What policies compare: features, else embeddings."""
        return self.features if self.features is not None else self.embeddings

    @property
    def nbytes(self) -> int:
        tensors = (self.token_indices, self.positions, self.embeddings, self.features)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def select(self, keep: torch.Tensor) -> MemoryEntry:
        """The same entry (same id) restricted to ``keep`` ([K] bool or [K'] long local indices)."""
        idx = keep.nonzero().squeeze(1) if keep.dtype == torch.bool else keep.long()
        return replace(
            self,
            token_indices=self.token_indices[idx],
            positions=self.positions[:, idx],
            embeddings=None if self.embeddings is None else self.embeddings[idx],
            features=None if self.features is None else self.features[idx],
        )


@dataclass(frozen=True, slots=True)
class Evict:
    """Whole entries removed."""

    entry_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Prune:
    """Tokens of an entry removed; ``keep``: [K'] long ascending local indices kept (positions unchanged)."""

    entry_id: int
    keep: torch.Tensor


@dataclass(frozen=True, slots=True)
class Pool:
    """Entries replaced by one new (pooled) entry, which an engine must prefill afresh."""

    source_ids: tuple[int, ...]
    entry: MemoryEntry


MemoryOp = Evict | Prune | Pool


class MemoryPolicy(Protocol):
    """What to do when the budget is reached: one operation."""

    name: str

    def make_room(self, entries: Sequence[MemoryEntry], budget: int, next_id: Callable[[], int]) -> list[MemoryOp]:
        """Ops that bring the entries' total tokens to <= budget."""
        ...


@dataclass(frozen=True, slots=True)
class MemoryStats:
    tokens_held: int
    entries: int
    budget: int
    tokens_added: int
    tokens_evicted: int
    tokens_pruned: int
    tokens_pooled: int
    entries_evicted: int
    entries_archived: int
    bytes_held: int
    compactions: int


@dataclass(slots=True)
class _Counters:
    tokens_added: int = 0
    tokens_evicted: int = 0
    tokens_pruned: int = 0
    tokens_pooled: int = 0
    entries_evicted: int = 0
    entries_archived: int = 0
    compactions: int = 0


class VisualMemory:
    """Entries in time order under a hard token budget."""

    def __init__(self, budget_tokens: int, policy: MemoryPolicy, archive: Archive | None = None) -> None:
        if budget_tokens < 1:
            raise ValueError(f"budget_tokens must be >= 1, got {budget_tokens}")
        self.budget = budget_tokens
        self.policy = policy
        self.archive = archive
        self._entries: dict[int, MemoryEntry] = {}
        self._ids = itertools.count()
        self._tokens = 0
        self._round = 0
        self._count = _Counters()

    @property
    def entries(self) -> tuple[MemoryEntry, ...]:
        return tuple(self._entries.values())

    @property
    def tokens_held(self) -> int:
        return self._tokens

    @property
    def round(self) -> int:
        return self._round

    def get(self, entry_id: int) -> MemoryEntry:
        try:
            return self._entries[entry_id]
        except KeyError:
            raise KeyError(f"no entry {entry_id} in memory") from None

    def begin_round(self) -> int:
        """A new dialogue round starts; returns its number."""
        self._round += 1
        return self._round

    def clear(self) -> None:
        self._entries.clear()
        self._tokens = 0

    def add(self, entry: MemoryEntry) -> list[MemoryOp]:
        """Insert an entry, make room if the budget is exceeded; returns the ops applied, in order."""
        if entry.num_tokens > self.budget:
            raise ValueError(
                f"one step has {entry.num_tokens} tokens but the memory budget is {self.budget}; "
                "raise the budget or lower the frame resolution (max pixels)"
            )
        if entry.entry_id < 0:
            entry.entry_id = next(self._ids)
        elif entry.entry_id in self._entries:
            raise ValueError(f"entry {entry.entry_id} is already in memory")
        self._entries[entry.entry_id] = entry
        self._tokens += entry.num_tokens
        self._count.tokens_added += entry.num_tokens
        if self._tokens <= self.budget:
            return []
        ops = self.policy.make_room(self.entries, self.budget, lambda: next(self._ids))
        for op in ops:
            self._apply(op)
        if self._tokens > self.budget:  # a policy fell short: evict oldest until the invariant holds
            fallback = []
            for e in self.entries:
                if self._tokens - sum(self._entries[i].num_tokens for i in fallback) <= self.budget:
                    break
                fallback.append(e.entry_id)
            op = Evict(tuple(fallback))
            self._apply(op)
            ops.append(op)
        self._count.compactions += 1
        return ops

    def _apply(self, op: MemoryOp) -> None:
        if isinstance(op, Evict):
            for entry_id in op.entry_ids:
                entry = self._entries.pop(entry_id)
                self._tokens -= entry.num_tokens
                self._count.tokens_evicted += entry.num_tokens
                self._count.entries_evicted += 1
                if self.archive is not None and entry.num_tokens:
                    self.archive.put(entry)
                    self._count.entries_archived += 1
        elif isinstance(op, Prune):
            entry = self._entries[op.entry_id]
            kept = entry.select(op.keep)
            self._entries[op.entry_id] = kept
            removed = entry.num_tokens - kept.num_tokens
            self._tokens -= removed
            self._count.tokens_pruned += removed
        elif isinstance(op, Pool):
            sources = [self._entries[i] for i in op.source_ids]
            position = list(self._entries).index(op.source_ids[0])
            for i in op.source_ids:
                del self._entries[i]
            items = list(self._entries.items())
            items.insert(position, (op.entry.entry_id, op.entry))
            self._entries = dict(items)
            removed = sum(e.num_tokens for e in sources) - op.entry.num_tokens
            self._tokens -= removed
            self._count.tokens_pooled += removed
        else:
            raise TypeError(f"unknown memory op {op!r}")

    @property
    def stats(self) -> MemoryStats:
        c = self._count
        return MemoryStats(
            tokens_held=self._tokens,
            entries=len(self._entries),
            budget=self.budget,
            tokens_added=c.tokens_added,
            tokens_evicted=c.tokens_evicted,
            tokens_pruned=c.tokens_pruned,
            tokens_pooled=c.tokens_pooled,
            entries_evicted=c.entries_evicted,
            entries_archived=c.entries_archived,
            bytes_held=sum(e.nbytes for e in self._entries.values()),
            compactions=c.compactions,
        )


__all__ = ["Evict", "MemoryEntry", "MemoryOp", "MemoryPolicy", "MemoryStats", "Pool", "Prune", "VisualMemory"]
