"""What the visual memory does when its budget is exceeded: small policy objects with one operation each.

Every policy brings the memory down to a low-water mark (``target`` x budget), so that it runs once per
several steps rather than on every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from memory.store import Evict, MemoryEntry, MemoryOp, MemoryPolicy, Pool, Prune

_HW_BASE = 1 << 20  # h * base + w is unique for any grid narrower than a million tokens
_SIM_ROWS = 2048  # older tokens scored per similarity block: bounds the [rows, R] matrices


def _check_target(target: float) -> None:
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target must be a fraction of the budget in (0, 1], got {target}")


def _goal(target: float, budget: int) -> int:
    return math.floor(target * budget)


def _hw_keys(entry: MemoryEntry) -> torch.Tensor:
    """[K] long: one key per (h, w) grid position."""
    return entry.positions[1] * _HW_BASE + entry.positions[2]


@dataclass(frozen=True, slots=True)
class SinkWindowPolicy:
    """Keep the first ``sink_entries`` entries (the visual attention sink) and the newest; evict others."""

    sink_entries: int = 1
    target: float = 0.9
    name: ClassVar[str] = "sink_window"

    def __post_init__(self) -> None:
        if self.sink_entries < 0:
            raise ValueError(f"sink_entries must be >= 0, got {self.sink_entries}")
        _check_target(self.target)

    def make_room(self, entries: Sequence[MemoryEntry], budget: int, next_id: Callable[[], int]) -> list[MemoryOp]:
        """Evict the oldest non-sink entries (never the newest) until the total is <= target x budget."""
        goal = _goal(self.target, budget)
        total = sum(e.num_tokens for e in entries)
        evicted = []
        for entry in entries[self.sink_entries : len(entries) - 1]:
            if total <= goal:
                break
            evicted.append(entry.entry_id)
            total -= entry.num_tokens
        return [Evict(tuple(evicted))] if evicted else []


@dataclass(frozen=True, slots=True)
class RedundancyPrunePolicy:
    """InfiniPot-V style: prune older tokens that repeat the recent entries; keep distinct, high-norm ones."""

    target: float = 0.75
    recent_fraction: float = 0.25
    """Share of the entries (the newest, at least one) used as reference and never pruned."""
    norm_share: float = 0.5
    """Share of the older tokens' budget kept by vector L2 norm; the rest is kept by low redundancy."""
    name: ClassVar[str] = "redundancy"

    def __post_init__(self) -> None:
        _check_target(self.target)
        if not 0.0 < self.recent_fraction <= 1.0:
            raise ValueError(f"recent_fraction must be in (0, 1], got {self.recent_fraction}")
        if not 0.0 <= self.norm_share <= 1.0:
            raise ValueError(f"norm_share must be in [0, 1], got {self.norm_share}")

    def make_room(self, entries: Sequence[MemoryEntry], budget: int, next_id: Callable[[], int]) -> list[MemoryOp]:
        """Prune the older entries' tokens down to the budget left by the reference entries."""
        missing = [e.entry_id for e in entries if e.vectors is None]
        if missing:
            raise ValueError(
                f"the redundancy policy compares token vectors, but entries {missing[:8]} have neither "
                "features nor embeddings; store features in the entries or choose the sink_window or "
                "round_pool policy"
            )
        dims = {int(e.vectors.shape[1]) for e in entries}
        if len(dims) > 1:
            raise ValueError(f"the redundancy policy needs one vector size across entries, got sizes {sorted(dims)}")
        goal = _goal(self.target, budget)
        n_ref = max(1, math.ceil(self.recent_fraction * len(entries)))
        old, ref = list(entries[:-n_ref]), list(entries[-n_ref:])
        ref_tokens = sum(e.num_tokens for e in ref)
        if ref_tokens > goal:
            # the reference alone is too big: drop everything older, then the oldest references
            evicted = [e.entry_id for e in old]
            for e in ref[:-1]:
                if ref_tokens <= goal:
                    break
                evicted.append(e.entry_id)
                ref_tokens -= e.num_tokens
            return [Evict(tuple(evicted))] if evicted else []
        evicted = [e.entry_id for e in old if not e.num_tokens]
        old = [e for e in old if e.num_tokens]
        if not old:
            return [Evict(tuple(evicted))] if evicted else []
        keep = self._keep_mask(old, ref, goal - ref_tokens)  # [M] over the older tokens
        ops: list[MemoryOp] = []
        offset = 0
        for e in old:
            local = keep[offset : offset + e.num_tokens]  # [K]
            offset += e.num_tokens
            if not local.any():
                evicted.append(e.entry_id)
            elif not local.all():
                ops.append(Prune(e.entry_id, local.nonzero().squeeze(1)))
        return [Evict(tuple(evicted)), *ops] if evicted else ops

    def _keep_mask(self, old: list[MemoryEntry], ref: list[MemoryEntry], old_budget: int) -> torch.Tensor:
        """[M] bool (CPU): which older tokens stay, ``old_budget`` of them at most."""
        device = old[0].vectors.device
        vectors = torch.cat([e.vectors.to(device).float() for e in old])  # [M, C]
        keys = torch.cat([_hw_keys(e).to(device) for e in old])  # [M]
        redundancy = self._redundancy(vectors, keys, ref)  # [M]
        keep = torch.zeros(vectors.shape[0], dtype=torch.bool, device=device)
        n_distinct = min(math.floor((1.0 - self.norm_share) * old_budget + 0.5), keep.numel())
        keep[torch.argsort(redundancy, stable=True)[:n_distinct]] = True
        n_norm = min(old_budget - n_distinct, int((~keep).sum()))
        if n_norm > 0:
            norms = vectors.norm(dim=-1).masked_fill(keep, -1.0)  # [M]; already kept tokens rank last
            keep[torch.argsort(norms, descending=True, stable=True)[:n_norm]] = True
        return keep.cpu()

    @staticmethod
    def _redundancy(vectors: torch.Tensor, keys: torch.Tensor, ref: list[MemoryEntry]) -> torch.Tensor:
        """[M]: mean cosine similarity to reference tokens at the same (h, w); the max over all if none."""
        device = vectors.device
        ref_unit = F.normalize(torch.cat([e.vectors.to(device).float() for e in ref]), dim=-1)  # [R, C]
        ref_keys = torch.cat([_hw_keys(e).to(device) for e in ref])  # [R]
        unit = F.normalize(vectors, dim=-1)  # [M, C]
        if ref_keys.numel() == 0:
            return torch.zeros(unit.shape[0], device=device)
        # the mean of cosines to a position's reference tokens is the dot with their mean unit vector
        cells, inverse = torch.unique(ref_keys, sorted=True, return_inverse=True)  # [G], [R]
        counts = torch.zeros(cells.numel(), device=device).index_add_(
            0, inverse, torch.ones_like(ref_keys, dtype=torch.float)
        )
        cell_mean = torch.zeros(cells.numel(), unit.shape[1], device=device).index_add_(0, inverse, ref_unit)
        cell_mean /= counts[:, None]  # [G, C]
        slot = torch.searchsorted(cells, keys).clamp(max=cells.numel() - 1)  # [M]
        found = cells[slot] == keys  # [M]
        out = (unit * cell_mean[slot]).sum(-1)  # [M]
        # tokens at a position no reference token has: the best match over all reference tokens
        missing = (~found).nonzero().squeeze(1)  # [M']
        for start in range(0, missing.numel(), _SIM_ROWS):
            rows = missing[start : start + _SIM_ROWS]
            out[rows] = (unit[rows] @ ref_unit.T).max(1).values  # [m]
        return out


def _mean_by_group(
    a: torch.Tensor | None, b: torch.Tensor | None, inverse: torch.Tensor, counts: torch.Tensor, groups: int
) -> torch.Tensor | None:
    """[G, C] mean of the rows of a and b that share a group, in a's dtype; None when either is missing."""
    if a is None or b is None:
        return None
    rows = torch.cat([a.float(), b.to(a.device).float()])  # [Ka + Kb, C]
    summed = torch.zeros(groups, rows.shape[1], device=a.device).index_add_(0, inverse.to(a.device), rows)
    return (summed / counts.to(a.device)[:, None]).to(a.dtype)


def pool_entries(first: MemoryEntry, second: MemoryEntry, entry_id: int) -> MemoryEntry:
    """One entry from two: tokens at equal (h, w) averaged, others kept; the first entry's t; (h, w) order."""
    device = first.token_indices.device
    keys = torch.cat([_hw_keys(first), _hw_keys(second).to(device)])  # [Ka + Kb]
    unique, inverse = torch.unique(keys, sorted=True, return_inverse=True)  # [G], [Ka + Kb]
    groups = unique.numel()
    counts = torch.zeros(groups, device=device).index_add_(0, inverse, torch.ones(keys.numel(), device=device))
    # the first occurrence of each (h, w) gives its token index (the first entry's where both have it)
    source = torch.full((groups,), keys.numel(), dtype=torch.long, device=device)
    source.scatter_reduce_(0, inverse, torch.arange(keys.numel(), device=device), reduce="amin")
    token_indices = torch.cat([first.token_indices, second.token_indices.to(device)])[source]  # [G]
    hw = torch.cat([first.positions, second.positions.to(device)], dim=1)[1:, source]  # [2, G]
    t_source = first.positions[0] if first.num_tokens else second.positions[0].to(device)
    t = int(t_source.min()) if t_source.numel() else 0
    positions = torch.cat([torch.full((1, groups), t, dtype=torch.long, device=device), hw])  # [3, G]
    embeddings = _mean_by_group(first.embeddings, second.embeddings, inverse, counts, groups)  # [G, D]
    shared = first.features is first.embeddings and second.features is second.embeddings
    features = embeddings if shared else _mean_by_group(first.features, second.features, inverse, counts, groups)
    return MemoryEntry(
        entry_id=entry_id,
        chunk_index=first.chunk_index,
        t_start=first.t_start,
        t_end=max(first.t_end, second.t_end),
        token_indices=token_indices,
        positions=positions,
        embeddings=embeddings,
        features=features,
        round=first.round,
        pooled_from=tuple(sorted({*first.pooled_from, *second.pooled_from, first.entry_id, second.entry_id})),
    )


@dataclass(frozen=True, slots=True)
class RoundPoolPolicy:
    """StreamBridge style: average adjacent entries, oldest dialogue round first; recent rounds stay sharp."""

    target: float = 0.9
    name: ClassVar[str] = "round_pool"

    def __post_init__(self) -> None:
        _check_target(self.target)

    def make_room(self, entries: Sequence[MemoryEntry], budget: int, next_id: Callable[[], int]) -> list[MemoryOp]:
        """Pool pairs, oldest round and oldest pairs first; evict the oldest entry when none can be pooled."""
        goal = _goal(self.target, budget)
        work = list(entries)
        total = sum(e.num_tokens for e in work)
        ops: list[MemoryOp] = []
        while total > goal and len(work) > 1:
            pooled = self._pool_pass(work, total, goal, next_id)
            if pooled:
                ops.extend(pooled)
            else:
                oldest = work.pop(0)
                ops.append(Evict((oldest.entry_id,)))
            total = sum(e.num_tokens for e in work)
        return ops

    @staticmethod
    def _pool_pass(work: list[MemoryEntry], total: int, goal: int, next_id: Callable[[], int]) -> list[Pool]:
        """One pass over the oldest round with a poolable pair: pool disjoint adjacent pairs, oldest first."""
        for rnd in sorted({e.round for e in work}):
            done: list[Pool] = []
            i = 0
            while i < len(work) - 1 and total > goal:
                a, b = work[i], work[i + 1]
                if a.round == rnd and b.round == rnd and bool(torch.isin(_hw_keys(a), _hw_keys(b)).any()):
                    pooled = pool_entries(a, b, next_id())
                    done.append(Pool((a.entry_id, b.entry_id), pooled))
                    total -= a.num_tokens + b.num_tokens - pooled.num_tokens
                    work[i : i + 2] = [pooled]
                i += 1
            if done:
                return done
        return []


POLICY_NAMES: tuple[str, ...] = ("sink_window", "redundancy", "round_pool")
_POLICIES: dict[str, type] = {
    "sink_window": SinkWindowPolicy,
    "redundancy": RedundancyPrunePolicy,
    "round_pool": RoundPoolPolicy,
}


def make_policy(name: str, **kwargs: Any) -> MemoryPolicy:
    """A policy by name (one of POLICY_NAMES) with its options."""
    if name not in _POLICIES:
        raise ValueError(f"unknown memory policy {name!r}; choose one of {', '.join(POLICY_NAMES)}")
    try:
        return _POLICIES[name](**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad options for memory policy {name!r}: {exc}") from None


__all__ = [
    "POLICY_NAMES",
    "RedundancyPrunePolicy",
    "RoundPoolPolicy",
    "SinkWindowPolicy",
    "make_policy",
    "pool_entries",
]
