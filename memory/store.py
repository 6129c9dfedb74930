"""The bounded visual memory: one entry per kept temporal step, under a token budget that is never exceeded.

Every change the memory makes is returned as a typed operation (Evict, Prune, Pool) so that an engine can
mirror it in its KV cache: prefill each added entry once, then apply the operations in the order returned.

The memory is the one record of what the engine's context holds: with a ``ContextBudget`` it also bounds the
context tokens its entries take in the engine's prompt (kept tokens plus each entry's prompt overhead: timestamp
text, vision start/end), so that an engine that mirrors its operations never has to evict anything itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import torch

from memory.entry import Evict, MemoryEntry, MemoryOp, Pool, Prune

__all__ = [
    "ContextBudget",
    "Evict",
    "MemoryEntry",
    "MemoryOp",
    "MemoryPolicy",
    "MemoryStats",
    "Pool",
    "Prune",
    "VisualMemory",
]

log = logging.getLogger(__name__)


class ArchiveSink(Protocol):
    """Where evicted entries go (any ``memory.archive.Archive``)."""

    def put(self, entry: MemoryEntry) -> None: ...


@dataclass(frozen=True, slots=True)
class ContextBudget:
    """A bound in the engine's context tokens: each entry costs its kept tokens plus ``overhead(entry)``."""

    tokens: int
    """Context tokens the entries may take together (the engine's KV cap less its other reservations)."""
    overhead: Callable[[MemoryEntry], int]
    """Prompt tokens an entry takes beyond its kept tokens (timestamp text, framing, whole-grid fill)."""

    def __post_init__(self) -> None:
        if self.tokens < 1:
            raise ValueError(f"a context budget needs at least 1 token, got {self.tokens}")

    def cost(self, entry: MemoryEntry) -> int:
        """Context tokens one entry takes."""
        return entry.num_tokens + max(0, int(self.overhead(entry)))


class MemoryPolicy(Protocol):
    """What to do when the budget is exceeded: one operation."""

    name: str

    def make_room(self, entries: Sequence[MemoryEntry], budget: int, next_id: Callable[[], int]) -> list[MemoryOp]:
        """Ops, in order, that bring the total tokens to <= budget (``next_id`` gives ids for new entries)."""
        ...


@dataclass(frozen=True, slots=True)
class MemoryStats:
    """What the memory holds now and what it has done since it was created."""

    tokens_held: int
    entries: int
    budget: int
    tokens_added: int
    tokens_evicted: int
    tokens_pruned: int
    tokens_pooled: int
    """Tokens removed by pooling (sources' tokens minus the pooled entry's)."""
    entries_evicted: int
    entries_archived: int
    bytes_held: int
    compactions: int
    """Calls of the policy that changed something."""


@dataclass(slots=True)
class _Counters:
    tokens_added: int = 0
    tokens_evicted: int = 0
    tokens_pruned: int = 0
    tokens_pooled: int = 0
    entries_evicted: int = 0
    entries_archived: int = 0
    compactions: int = 0


@dataclass(slots=True)
class _State:
    """Everything ``add`` may change, so that a failed ``add`` leaves the memory as it was."""

    entries: dict[int, MemoryEntry]
    tokens: int
    next_id: int
    counters: _Counters
    costs: dict[int, int]
    """Entry id -> context tokens (with a context budget; else empty)."""

    def copy(self) -> _State:
        return _State(dict(self.entries), self.tokens, self.next_id, replace(self.counters), dict(self.costs))

    @property
    def context_tokens(self) -> int:
        return sum(self.costs.values())


def _concat(a: torch.Tensor | None, b: torch.Tensor | None, dim: int = 0) -> torch.Tensor | None:
    return None if a is None or b is None else torch.cat([a, b.to(a.device)], dim=dim)


def _merge(a: MemoryEntry, b: MemoryEntry) -> MemoryEntry:
    """The tokens of two parts of one entry together, in token-index order."""
    indices = torch.cat([a.token_indices, b.token_indices.to(a.token_indices.device)])  # [Ka + Kb]
    order = torch.argsort(indices, stable=True)
    embeddings = _concat(a.embeddings, b.embeddings)
    features = embeddings if a.features is a.embeddings else _concat(a.features, b.features)
    return replace(
        a,
        token_indices=indices[order],
        positions=torch.cat([a.positions, b.positions.to(a.positions.device)], dim=1)[:, order],
        embeddings=None if embeddings is None else embeddings[order.to(embeddings.device)],
        features=None if features is None else features[order.to(features.device)],
    )


class VisualMemory:
    """Entries in time order under a hard token budget; ``add`` returns the ops an engine must mirror."""

    def __init__(
        self,
        budget_tokens: int,
        policy: MemoryPolicy,
        archive: ArchiveSink | None = None,
        *,
        context: ContextBudget | None = None,
    ) -> None:
        if isinstance(budget_tokens, bool) or not isinstance(budget_tokens, int) or budget_tokens < 1:
            raise ValueError(f"budget_tokens must be an integer >= 1, got {budget_tokens!r}")
        if not callable(getattr(policy, "make_room", None)):
            raise TypeError(f"policy must have a make_room(entries, budget, next_id) method, got {policy!r}")
        self.budget = budget_tokens
        self.policy = policy
        self.archive = archive
        self.context = context
        """The engine-context bound, or None (visual tokens only)."""
        self._state = _State({}, 0, 0, _Counters(), {})
        self._round = 0
        self._partial: set[int] = set()  # live entries whose pruned-away tokens are in the archive

    @property
    def entries(self) -> tuple[MemoryEntry, ...]:
        """The entries in time order."""
        return tuple(self._state.entries.values())

    @property
    def tokens_held(self) -> int:
        return self._state.tokens

    @property
    def context_tokens(self) -> int:
        """Context tokens the entries take in the engine's prompt (the visual tokens without a context budget)."""
        return self._state.context_tokens if self.context is not None else self._state.tokens

    @property
    def round(self) -> int:
        """The current dialogue round (0 before the first question)."""
        return self._round

    def get(self, entry_id: int) -> MemoryEntry:
        """The entry with this id; KeyError when it is not (or no longer) in memory."""
        try:
            return self._state.entries[entry_id]
        except KeyError:
            raise KeyError(f"no entry {entry_id} in memory (it was never added, or was evicted or pooled)") from None

    def begin_round(self) -> int:
        """A new dialogue round starts (a question was asked); returns its number."""
        self._round += 1
        return self._round

    def clear(self) -> None:
        """Drop every entry (nothing is archived); ids, round and cumulative counters carry on."""
        self._state.entries.clear()
        self._state.costs.clear()
        self._state.tokens = 0
        self._partial.clear()

    def add(self, entry: MemoryEntry) -> list[MemoryOp]:
        """Insert an entry (assigning its id when negative), make room if over budget; the ops, in order.

        After it returns, tokens_held <= budget. If it raises, the memory is unchanged.
        """
        if entry.num_tokens > self.budget:
            raise ValueError(
                f"one step has {entry.num_tokens} kept tokens but the memory budget is {self.budget} tokens; "
                "raise the budget or lower the resolution (max pixels)"
            )
        cost = self.context.cost(entry) if self.context is not None else entry.num_tokens
        if self.context is not None and cost > self.context.tokens:
            raise ValueError(
                f"one step takes {cost} tokens of the engine's context but the memory may fill only "
                f"{self.context.tokens}; raise engine.kv_cap_tokens or lower the resolution (max pixels)"
            )
        state = self._state
        if entry.entry_id >= 0 and entry.entry_id < state.next_id:
            raise ValueError(
                f"entry id {entry.entry_id} is not above the last id used ({state.next_id - 1}); "
                "ids must increase in insertion order: pass entry_id=-1 to have one assigned"
            )
        given_id = entry.entry_id
        work = state.copy()
        if entry.entry_id < 0:
            entry.entry_id = work.next_id
        work.next_id = entry.entry_id + 1
        work.entries[entry.entry_id] = entry
        work.tokens += entry.num_tokens
        work.counters.tokens_added += entry.num_tokens
        if self.context is not None:
            work.costs[entry.entry_id] = cost
        ops: list[MemoryOp] = []
        removed: list[tuple[MemoryEntry, bool]] = []  # (content, is_whole_entry) for the archive
        if self._over(work):
            try:
                ops = self._make_room(work, removed)
            except Exception:
                entry.entry_id = given_id
                raise
        self._state = work
        self._archive(removed)
        self._partial.intersection_update(work.entries)  # pooled sources leave the memory unarchived
        return ops

    def _over(self, work: _State) -> bool:
        """Whether ``work`` exceeds the token budget or the context budget."""
        return work.tokens > self.budget or (self.context is not None and work.context_tokens > self.context.tokens)

    def _policy_budget(self, work: _State) -> int:
        """The token budget the policy aims at: the context budget less the entries' overhead, when smaller."""
        if self.context is None:
            return self.budget
        overhead = work.context_tokens - work.tokens
        return max(1, min(self.budget, self.context.tokens - overhead))

    def _make_room(self, work: _State, removed: list[tuple[MemoryEntry, bool]]) -> list[MemoryOp]:
        """Ask the policy, apply its ops to ``work``, then evict more if it fell short."""

        def next_id() -> int:
            work.next_id += 1
            return work.next_id - 1

        # 1. the policy's ops
        ops = list(self.policy.make_room(tuple(work.entries.values()), self._policy_budget(work), next_id))
        for op in ops:
            self._apply(work, op, removed)
        # 2. the invariant, whatever the policy did: evict the oldest non-sink entries, then sinks
        if self._over(work):
            fallback = self._fallback(work)
            self._apply(work, fallback, removed)
            ops.append(fallback)
        if ops:
            work.counters.compactions += 1
        return ops

    def _fallback(self, work: _State) -> Evict:
        """Oldest non-sink entries first, then sinks, then the newest: just enough to meet both budgets."""
        name = getattr(self.policy, "name", type(self.policy).__name__)
        if work.tokens > self.budget:
            log.warning("memory policy %s left %d tokens over a budget of %d", name, work.tokens, self.budget)
        sinks = max(0, int(getattr(self.policy, "sink_entries", 0)))
        *older, newest = work.entries
        over = work.tokens - self.budget
        over_context = work.context_tokens - self.context.tokens if self.context is not None else 0
        evict = []
        for entry_id in [*older[sinks:], *older[:sinks], newest]:
            if over <= 0 and over_context <= 0:
                break
            evict.append(entry_id)
            over -= work.entries[entry_id].num_tokens
            over_context -= work.costs.get(entry_id, 0)
        return Evict(tuple(evict))

    def _apply(self, work: _State, op: MemoryOp, removed: list[tuple[MemoryEntry, bool]]) -> None:
        """Apply one op to ``work``; a malformed op raises ValueError."""
        entries, counters = work.entries, work.counters
        if isinstance(op, Evict):
            self._require(entries, op.entry_ids, op)
            if len(set(op.entry_ids)) != len(op.entry_ids):
                raise ValueError(f"{op!r} names an entry twice")
            for entry_id in op.entry_ids:
                entry = entries.pop(entry_id)
                work.costs.pop(entry_id, None)
                work.tokens -= entry.num_tokens
                counters.tokens_evicted += entry.num_tokens
                counters.entries_evicted += 1
                removed.append((entry, True))
        elif isinstance(op, Prune):
            self._require(entries, (op.entry_id,), op)
            entry = entries[op.entry_id]
            keep = op.keep
            if keep.dtype != torch.long or keep.ndim != 1 or keep.numel() == 0:
                raise ValueError(f"Prune.keep must be a non-empty [K'] long tensor (use Evict to drop all), got {keep}")
            if keep.numel() > 1 and not bool((keep[1:] > keep[:-1]).all()):
                raise ValueError(f"Prune.keep must be strictly ascending, got {keep.tolist()}")
            kept = entry.select(keep)
            dropped = torch.ones(entry.num_tokens, dtype=torch.bool)
            dropped[keep.cpu()] = False
            entries[op.entry_id] = kept
            if self.context is not None:
                work.costs[op.entry_id] = self.context.cost(kept)
            work.tokens -= entry.num_tokens - kept.num_tokens
            counters.tokens_pruned += entry.num_tokens - kept.num_tokens
            if dropped.any():
                removed.append((entry.select(dropped), False))
        elif isinstance(op, Pool):
            self._require(entries, op.source_ids, op)
            sources = set(op.source_ids)
            if not sources or len(sources) != len(op.source_ids):
                raise ValueError(f"Pool needs distinct source ids, got {op.source_ids}")
            new = op.entry
            if new.entry_id < 0 or new.entry_id in entries:
                raise ValueError(f"a pooled entry needs a fresh id from next_id(), got {new.entry_id}")
            ids = list(entries)
            at = min(ids.index(i) for i in op.source_ids)
            source_tokens = sum(entries[i].num_tokens for i in op.source_ids)
            kept_ids = [i for i in ids if i not in sources]
            kept_ids.insert(at, new.entry_id)
            pooled = {**entries, new.entry_id: new}
            work.entries = {i: pooled[i] for i in kept_ids}
            if self.context is not None:
                for i in op.source_ids:
                    work.costs.pop(i, None)
                work.costs[new.entry_id] = self.context.cost(new)
            work.tokens += new.num_tokens - source_tokens
            counters.tokens_pooled += source_tokens - new.num_tokens
        else:
            raise TypeError(f"unknown memory op {op!r}; expected Evict, Prune or Pool")

    @staticmethod
    def _require(entries: dict[int, MemoryEntry], ids: Sequence[int], op: MemoryOp) -> None:
        missing = [i for i in ids if i not in entries]
        if missing:
            raise ValueError(f"{type(op).__name__} names entries not in memory: {missing}")

    def _archive(self, removed: list[tuple[MemoryEntry, bool]]) -> None:
        """Send evicted entries and pruned-away tokens to the archive (merged per entry id)."""
        if self.archive is None:
            return
        counters = self._state.counters
        for content, whole in removed:
            if content.num_tokens == 0:
                continue
            entry_id = content.entry_id
            first = entry_id not in self._partial
            try:
                if not first:
                    earlier = self.archive.get(entry_id)
                    if earlier is not None:
                        content = _merge(content, earlier)
                self.archive.put(content)
            except Exception:
                log.exception("could not archive entry %d; its tokens are dropped", entry_id)
                continue
            counters.entries_archived += first
            if whole:
                self._partial.discard(entry_id)
            else:
                self._partial.add(entry_id)

    @property
    def stats(self) -> MemoryStats:
        c = self._state.counters
        return MemoryStats(
            tokens_held=self._state.tokens,
            entries=len(self._state.entries),
            budget=self.budget,
            tokens_added=c.tokens_added,
            tokens_evicted=c.tokens_evicted,
            tokens_pruned=c.tokens_pruned,
            tokens_pooled=c.tokens_pooled,
            entries_evicted=c.entries_evicted,
            entries_archived=c.entries_archived,
            bytes_held=sum(e.nbytes for e in self._state.entries.values()),
            compactions=c.compactions,
        )
