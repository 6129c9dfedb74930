"""What the visual memory does when its budget is reached: small policy objects with one operation each."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from memory.store import Evict, MemoryEntry, MemoryOp, MemoryPolicy, Pool, Prune

_HW_BASE = 1 << 20
_SIM_ROWS = 2048


def _check_target(target: float) -> None:
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target must be in (0, 1], got {target}")


def _hw_keys(entry: MemoryEntry) -> torch.Tensor:
    """[K] long: one key per (h, w) grid position."""
    return entry.positions[1].long() * _HW_BASE + entry.positions[2].long()


@dataclass(frozen=True, slots=True)
class SinkWindowPolicy:
    """Keep the first ``sink_entries`` entries (the visual attention sink) and the newest; evict the oldest others."""

    sink_entries: int = 1
    target: float = 0.9
    name: str = "sink_window"

    def __post_init__(self) -> None:
        if self.sink_entries < 0:
            raise ValueError(f"sink_entries must be >= 0, got {self.sink_entries}")
        _check_target(self.target)

    def make_room(self, entries: Sequence[MemoryEntry], budget: int, next_id: Callable[[], int]) -> list[MemoryOp]:
        goal = math.floor(self.target * budget)
        total = sum(e.num_tokens for e in entries)
        evicted = []
        for entry in entries[self.sink_entries : -1]:  # never the newest
            if total <= goal:
                break
            evicted.append(entry.entry_id)
            total -= entry.num_tokens
        return [Evict(tuple(evicted))] if evicted else []


@dataclass(frozen=True, slots=True)
class RedundancyPrunePolicy:
    """InfiniPot-V style: prune old tokens that repeat the recent frames, keep distinct and high-norm ones."""

    target: float = 0.75
    recent_fraction: float = 0.25
    norm_share: float = 0.5
    name: str = "redundancy"

    def __post_init__(self) -> None:
        _check_target(self.target)
        if not 0.0 < self.recent_fraction <= 1.0:
            raise ValueError(f"recent_fraction must be in (0, 1], got {self.recent_fraction}")
        if not 0.0 <= self.norm_share <= 1.0:
            raise ValueError(f"norm_share must be in [0, 1], got {self.norm_share}")

    def make_room(self, entries: Sequence[MemoryEntry], budget: int, next_id: Callable[[], int]) -> list[MemoryOp]:
        if any(e.vectors is None for e in entries):
            raise ValueError("the redundancy policy needs per-token vectors (embeddings or features) in every entry")
        goal = math.floor(self.target * budget)
        n_ref = max(1, math.ceil(self.recent_fraction * len(entries)))
        old, ref = list(entries[:-n_ref]), list(entries[-n_ref:])
        ref_tokens = sum(e.num_tokens for e in ref)
        if ref_tokens > goal:  # the recent frames alone are too many: drop everything older, then the oldest recent
            evicted = [e.entry_id for e in old]
            for e in ref[:-1]:
                if ref_tokens <= goal:
                    break
                evicted.append(e.entry_id)
                ref_tokens -= e.num_tokens
            return [Evict(tuple(evicted))] if evicted else []
        old = [e for e in old if e.num_tokens]
        if not old:
            return []
        old_budget = goal - ref_tokens
        vectors = torch.cat([e.vectors.float() for e in old])  # [M, C]
        redundancy = self._redundancy(vectors, torch.cat([_hw_keys(e) for e in old]), ref)  # [M]
        keep = torch.zeros(vectors.shape[0], dtype=torch.bool)
        n_distinct = min(round((1.0 - self.norm_share) * old_budget), keep.numel())
        keep[torch.argsort(redundancy, stable=True)[:n_distinct]] = True
        n_norm = min(old_budget - n_distinct, int((~keep).sum()))
        if n_norm > 0:
            norms = vectors.norm(dim=-1).masked_fill(keep, -1.0)
            keep[torch.argsort(norms, descending=True, stable=True)[:n_norm]] = True
        ops: list[MemoryOp] = []
        evicted = []
        offset = 0
        for e in old:
            local = keep[offset : offset + e.num_tokens]
            offset += e.num_tokens
            if not local.any():
                evicted.append(e.entry_id)
            elif not local.all():
                ops.append(Prune(e.entry_id, local.nonzero().squeeze(1)))
        if evicted:
            ops.insert(0, Evict(tuple(evicted)))
        return ops

    @staticmethod
    def _redundancy(vectors: torch.Tensor, keys: torch.Tensor, ref: list[MemoryEntry]) -> torch.Tensor:
        """Mean cosine similarity [M] to reference tokens at the same (h, w); max over all when none there."""
        ref_vec = F.normalize(torch.cat([e.vectors.float() for e in ref]), dim=-1)  # [R, C]
        ref_keys = torch.cat([_hw_keys(e) for e in ref])  # [R]
        unit = F.normalize(vectors, dim=-1)
        out = torch.empty(vectors.shape[0])
        for start in range(0, vectors.shape[0], _SIM_ROWS):
            sim = unit[start : start + _SIM_ROWS] @ ref_vec.T  # [m, R]
            same = keys[start : start + _SIM_ROWS, None] == ref_keys[None, :]  # [m, R]
            count = same.sum(1)
            mean_same = (sim * same).sum(1) / count.clamp(min=1)
            out[start : start + _SIM_ROWS] = torch.where(count > 0, mean_same, sim.max(1).values)
        return out


def pool_entries(first: MemoryEntry, second: MemoryEntry, entry_id: int) -> MemoryEntry:
    """Average two entries' tokens at equal (h, w); tokens present in one are kept; t of the first."""
    keys = torch.cat([_hw_keys(first), _hw_keys(second)])
    unique, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    counts = torch.zeros(unique.numel()).index_add_(0, inverse, torch.ones(keys.numel()))

    def mean(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
        if a is None or b is None:
            return None
        both = torch.cat([a.float(), b.float()])
        summed = torch.zeros(unique.numel(), both.shape[1]).index_add_(0, inverse, both)
        return (summed / counts[:, None]).to(a.dtype)

    first_pos = torch.full((unique.numel(),), -1, dtype=torch.long)
    first_pos.scatter_reduce_(0, inverse, torch.arange(keys.numel()), reduce="amin", include_self=False)
    token_indices = torch.cat([first.token_indices, second.token_indices])[first_pos]
    hw = torch.cat([first.positions, second.positions], dim=1)[:, first_pos]
    t = first.positions[0, 0] if first.num_tokens else hw[0, 0]
    positions = torch.stack([torch.full_like(hw[0], int(t)), hw[1], hw[2]])
    order = torch.argsort(token_indices, stable=True)
    emb, feat = mean(first.embeddings, second.embeddings), mean(first.features, second.features)
    return MemoryEntry(
        entry_id=entry_id,
        chunk_index=first.chunk_index,
        t_start=first.t_start,
        t_end=second.t_end,
        token_indices=token_indices[order],
        positions=positions[:, order],
        embeddings=None if emb is None else emb[order],
        features=None if feat is None else feat[order],
        round=first.round,
        pooled_from=tuple(sorted({*first.pooled_from, *second.pooled_from, first.entry_id, second.entry_id})),
    )


@dataclass(frozen=True, slots=True)
class RoundPoolPolicy:
    """StreamBridge style: mean-pool adjacent entries, oldest dialogue round first, so recent rounds stay sharp."""

    target: float = 0.9
    name: str = "round_pool"

    def __post_init__(self) -> None:
        _check_target(self.target)

    def make_room(self, entries: Sequence[MemoryEntry], budget: int, next_id: Callable[[], int]) -> list[MemoryOp]:
        goal = math.floor(self.target * budget)
        work = list(entries)
        total = sum(e.num_tokens for e in work)
        ops: list[MemoryOp] = []
        while total > goal and len(work) > 1:
            pooled = self._pool_once(work, next_id)
            if pooled is None:
                oldest = work.pop(0)
                ops.append(Evict((oldest.entry_id,)))
                total -= oldest.num_tokens
                continue
            i, entry = pooled
            total -= work[i].num_tokens + work[i + 1].num_tokens - entry.num_tokens
            ops.append(Pool((work[i].entry_id, work[i + 1].entry_id), entry))
            work[i : i + 2] = [entry]
        return ops

    @staticmethod
    def _pool_once(work: list[MemoryEntry], next_id: Callable[[], int]) -> tuple[int, MemoryEntry] | None:
        """Pool the oldest adjacent same-round pair whose pooling saves tokens."""
        for rnd in sorted({e.round for e in work}):
            for i in range(len(work) - 1):
                a, b = work[i], work[i + 1]
                if a.round != rnd or b.round != rnd:
                    continue
                shared = torch.isin(_hw_keys(a), _hw_keys(b)).sum()
                if shared:
                    return i, pool_entries(a, b, next_id())
        return None


POLICY_NAMES = ("sink_window", "redundancy", "round_pool")


def make_policy(name: str, **kwargs: object) -> MemoryPolicy:
    """A policy by name: sink_window, redundancy or round_pool."""
    classes = {"sink_window": SinkWindowPolicy, "redundancy": RedundancyPrunePolicy, "round_pool": RoundPoolPolicy}
    if name not in classes:
        raise ValueError(f"unknown memory policy {name!r}; choose from {', '.join(POLICY_NAMES)}")
    return classes[name](**kwargs)
