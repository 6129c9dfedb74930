"""The bounded memory: entries, a budget that always holds, ops an engine can mirror, the archive hand-off."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch

from memory.archive import InMemoryArchive
from memory.policies import POLICY_NAMES, RedundancyPrunePolicy, SinkWindowPolicy, make_policy
from memory.store import ContextBudget, Evict, MemoryEntry, MemoryOp, Pool, Prune, VisualMemory

GW = 8  # grid width of the test steps


def make_entry(
    step: int, cells: Sequence[int], dim: int = 4, value: float | None = None, round_: int = 0
) -> MemoryEntry:
    idx = torch.tensor(list(cells), dtype=torch.long)
    pos = torch.stack([torch.full_like(idx, step), idx // GW, idx % GW])
    if value is None:
        vec = torch.randn(len(cells), dim, generator=torch.Generator().manual_seed(step))
    else:
        vec = torch.full((len(cells), dim), value)
    return MemoryEntry(-1, step, float(step), step + 1.0, idx, pos, embeddings=vec, round=round_)


def replay(shadow: dict[int, MemoryEntry], new: MemoryEntry, ops: list[MemoryOp]) -> dict[int, MemoryEntry]:
    """What an engine does: add the new entry, then apply the ops in order (pooled entries take the place)."""
    shadow = {**shadow, new.entry_id: new}
    for op in ops:
        if isinstance(op, Evict):
            shadow = {i: e for i, e in shadow.items() if i not in op.entry_ids}
        elif isinstance(op, Prune):
            shadow[op.entry_id] = shadow[op.entry_id].select(op.keep)
        else:
            ids = list(shadow)
            at = min(ids.index(i) for i in op.source_ids)
            ids = [i for i in ids if i not in op.source_ids]
            ids.insert(at, op.entry.entry_id)
            shadow = {i: op.entry if i == op.entry.entry_id else shadow[i] for i in ids}
    return shadow


def assert_mirrors(shadow: dict[int, MemoryEntry], memory: VisualMemory) -> None:
    assert list(shadow) == [e.entry_id for e in memory.entries]
    for e in memory.entries:
        s = shadow[e.entry_id]
        assert torch.equal(s.token_indices, e.token_indices) and torch.equal(s.positions, e.positions)
        assert torch.equal(s.embeddings, e.embeddings)


# --- entries --------------------------------------------------------------------------------------


def test_entry_properties_and_select() -> None:
    e = make_entry(3, [1, 5, 9], dim=2, value=1.0)
    assert e.num_tokens == 3 and e.vectors is e.embeddings
    assert e.nbytes == 3 * 8 + 9 * 8 + 6 * 4
    shared = MemoryEntry(0, 0, 0.0, 1.0, e.token_indices, e.positions, embeddings=e.embeddings, features=e.embeddings)
    assert shared.nbytes == e.nbytes  # one tensor used twice counts once
    by_mask = e.select(torch.tensor([True, False, True]))
    by_index = e.select(torch.tensor([0, 2]))
    assert by_mask.token_indices.tolist() == by_index.token_indices.tolist() == [1, 9]
    assert by_mask.positions.tolist() == [[3, 3], [0, 1], [1, 1]] and by_mask.entry_id == e.entry_id
    assert e.num_tokens == 3  # select leaves the original as it was
    feat = MemoryEntry(0, 0, 0.0, 1.0, torch.arange(2), torch.zeros(3, 2, dtype=torch.int32), features=torch.ones(2, 5))
    assert feat.vectors.shape == (2, 5) and feat.positions.dtype == torch.long


def test_entry_validation() -> None:
    idx2 = torch.arange(2)
    with pytest.raises(ValueError, match=r"positions must be \[3, 2\]"):
        MemoryEntry(-1, 0, 0.0, 1.0, idx2, torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"embeddings must be \[2, D\]"):
        MemoryEntry(-1, 0, 0.0, 1.0, idx2, torch.zeros(3, 2, dtype=torch.long), embeddings=torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"features must be \[2, D\]"):
        MemoryEntry(-1, 0, 0.0, 1.0, idx2, torch.zeros(3, 2, dtype=torch.long), features=torch.zeros(2))
    with pytest.raises(ValueError, match=r"token_indices must be \[K\]"):
        MemoryEntry(-1, 0, 0.0, 1.0, torch.zeros(2, 2, dtype=torch.long), torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="token_indices must hold integers"):
        MemoryEntry(-1, 0, 0.0, 1.0, torch.zeros(2), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="t_end"):
        MemoryEntry(-1, 0, 2.0, 1.0, idx2, torch.zeros(3, 2, dtype=torch.long))
    e = make_entry(0, [0, 1, 2])
    with pytest.raises(ValueError, match=r"keep mask must be \[3\]"):
        e.select(torch.tensor([True, False]))
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        e.select(torch.tensor([0, 3]))


# --- the budget, and mirroring --------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "redundancy" else n for n in POLICY_NAMES]
)
def test_budget_holds_after_every_add_and_ops_mirror_the_memory(name: str) -> None:
    budget = 300
    gen = torch.Generator().manual_seed(0)
    archive = InMemoryArchive(max_entries=100_000, max_bytes=1 << 40)
    memory = VisualMemory(budget, make_policy(name), archive)
    shadow: dict[int, MemoryEntry] = {}
    kinds: set[type] = set()
    for step in range(2000):
        if step % 250 == 249:
            memory.begin_round()
        n = int(torch.randint(0, 60, (1,), generator=gen))
        cells = torch.randperm(GW * GW, generator=gen)[:n].sort().values.tolist()
        new = make_entry(step, cells, round_=memory.round)
        ops = memory.add(new)
        assert memory.tokens_held <= budget, step
        assert memory.tokens_held == sum(e.num_tokens for e in memory.entries)
        ids = [e.entry_id for e in memory.entries]
        assert ids == sorted(ids) or name == "round_pool"  # pooled entries take their sources' place
        kinds |= {type(op) for op in ops}
        for op in ops:
            if isinstance(op, Prune):
                assert op.keep.numel() > 0 and bool((op.keep[1:] > op.keep[:-1]).all())
        shadow = replay(shadow, new, ops)
    assert_mirrors(shadow, memory)
    expected = {"sink_window": {Evict}, "redundancy": {Evict, Prune}, "round_pool": {Evict, Pool}}[name]
    assert kinds == expected
    stats = memory.stats
    assert stats.tokens_added == stats.tokens_held + stats.tokens_evicted + stats.tokens_pruned + stats.tokens_pooled
    assert stats.entries == len(memory.entries) and stats.budget == budget and stats.compactions > 0
    assert stats.bytes_held == sum(e.nbytes for e in memory.entries)
    # starts are in time order (pooled entries take their sources' place)
    starts = [e.t_start for e in memory.entries]
    assert starts == sorted(starts)


def test_exact_stats_after_a_scripted_sequence() -> None:
    memory = VisualMemory(30, SinkWindowPolicy(sink_entries=1, target=0.5))
    for step in range(4):
        assert memory.add(make_entry(step, range(10))) == ([Evict((1, 2))] if step == 3 else [])
    assert [e.entry_id for e in memory.entries] == [0, 3]
    stats = memory.stats
    assert (stats.tokens_held, stats.entries, stats.tokens_added, stats.tokens_evicted) == (20, 2, 40, 20)
    assert (stats.entries_evicted, stats.entries_archived, stats.compactions, stats.tokens_pruned) == (
        2,
        0,
        1,
        0,
    )


class _LazyPolicy:
    """A policy that does nothing (the memory must still keep its budget)."""

    name = "lazy"
    sink_entries = 1

    def make_room(self, entries: Sequence[MemoryEntry], budget: int, next_id: Callable[[], int]) -> list[MemoryOp]:
        return []


class _BrokenPolicy:
    """A policy that returns what it is given to return."""

    name = "broken"

    def __init__(self, ops: list[MemoryOp] | Exception) -> None:
        self.ops = ops

    def make_room(self, entries: Sequence[MemoryEntry], budget: int, next_id: Callable[[], int]) -> list[MemoryOp]:
        if isinstance(self.ops, Exception):
            raise self.ops
        return self.ops


def test_short_policy_falls_back_to_evicting_oldest_non_sink() -> None:
    memory = VisualMemory(25, _LazyPolicy())
    for step in range(3):
        memory.add(make_entry(step, range(8)))
    ops = memory.add(make_entry(3, range(8)))  # 32 > 25: evict entry 1 (entry 0 is the sink)
    assert ops == [Evict((1,))] and [e.entry_id for e in memory.entries] == [0, 2, 3]
    ops = memory.add(make_entry(4, range(20)))  # 44 > 25: 2 and 3 go, then the sink too
    assert ops == [Evict((2, 3, 0))] and memory.tokens_held == 20


def test_failing_policy_leaves_memory_unchanged() -> None:
    for ops, error in (
        (ValueError("policy failed"), "policy failed"),
        ([Evict((42,))], r"Evict names entries not in memory: \[42\]"),
        ([Prune(0, torch.tensor([3, 1]))], "strictly ascending"),
        ([Prune(0, torch.tensor([], dtype=torch.long))], "use Evict"),
        ([Evict((0, 0))], "names an entry twice"),
        ([Pool((0, 1), make_entry(9, [0]))], "fresh id"),
    ):
        memory = VisualMemory(10, _BrokenPolicy(ops))
        memory.add(make_entry(0, range(5)))
        memory.add(make_entry(1, range(5)))
        before = memory.stats
        new = make_entry(2, range(4))
        with pytest.raises(ValueError, match=error):
            memory.add(new)
        assert memory.stats == before and [e.entry_id for e in memory.entries] == [0, 1]
        assert new.entry_id == -1
        memory.policy = SinkWindowPolicy(sink_entries=0)
        assert memory.add(new) == [Evict((0,))] and new.entry_id == 2  # no id was used up


def test_ids_rounds_and_clear() -> None:
    memory = VisualMemory(100, SinkWindowPolicy())
    memory.add(make_entry(0, [0]))
    given = make_entry(1, [1])
    given.entry_id = 10
    memory.add(given)
    memory.add(make_entry(2, [2]))
    assert [e.entry_id for e in memory.entries] == [0, 10, 11]
    stale = make_entry(3, [3])
    stale.entry_id = 5
    with pytest.raises(ValueError, match="ids must increase"):
        memory.add(stale)
    assert memory.round == 0 and memory.begin_round() == 1 and memory.begin_round() == 2 and memory.round == 2
    memory.clear()
    assert memory.entries == () and memory.tokens_held == 0 and memory.stats.tokens_added == 3
    assert memory.add(make_entry(4, [4])) == [] and memory.entries[0].entry_id == 12 and memory.round == 2


# --- the archive hand-off ---------------------------------------------------------------------------


def test_evicted_entries_go_to_the_archive() -> None:
    archive = InMemoryArchive()
    memory = VisualMemory(20, SinkWindowPolicy(sink_entries=0, target=1.0), archive)
    for step in range(4):
        memory.add(make_entry(step, range(10)))
    assert len(archive) == 2 and memory.stats.entries_archived == 2
    assert torch.equal(archive.get(0).embeddings, make_entry(0, range(10)).embeddings)
    assert archive.get(2) is None


def test_pruned_tokens_are_archived_and_merged_on_eviction() -> None:
    archive = InMemoryArchive()
    memory = VisualMemory(12, RedundancyPrunePolicy(target=1.0, recent_fraction=0.5, norm_share=1.0), archive)
    first = make_entry(0, range(6), value=1.0)
    first.embeddings[2] *= 10  # the highest norms survive pruning
    first.embeddings[4] *= 5
    memory.add(first)
    memory.add(make_entry(1, range(4), value=1.0))
    memory.add(make_entry(2, range(6), value=1.0))  # 16 > 12: reference 10 tokens, entry 0 keeps 2
    assert memory.get(0).token_indices.tolist() == [2, 4]
    assert archive.get(0).token_indices.tolist() == [0, 1, 3, 5] and memory.stats.entries_archived == 1
    # the reference takes the whole budget: entries 0 and 1 are evicted
    memory.add(make_entry(3, range(6), value=1.0))
    assert [e.entry_id for e in memory.entries] == [2, 3]
    whole = archive.get(0)
    assert whole.token_indices.tolist() == list(range(6)) and torch.equal(whole.embeddings, first.embeddings)
    assert archive.get(1).num_tokens == 4 and memory.stats.entries_archived == 2


def test_pooled_sources_are_not_archived() -> None:
    archive = InMemoryArchive()
    memory = VisualMemory(8, make_policy("round_pool", target=1.0), archive)
    memory.add(make_entry(0, range(4)))
    memory.add(make_entry(1, range(4)))
    ops = memory.add(make_entry(2, range(4)))
    assert [type(op) for op in ops] == [Pool] and len(archive) == 0 and memory.stats.entries_archived == 0


# --- bad input ------------------------------------------------------------------------------------


def test_bad_input() -> None:
    memory = VisualMemory(5, SinkWindowPolicy())
    memory.add(make_entry(0, [0, 1]))
    with pytest.raises(ValueError, match=r"6 kept tokens .* budget is 5 .* raise the budget or lower the resolution"):
        memory.add(make_entry(1, range(6)))
    assert memory.tokens_held == 2 and len(memory.entries) == 1
    with pytest.raises(KeyError, match="no entry 42 in memory"):
        memory.get(42)
    with pytest.raises(ValueError, match="budget_tokens must be an integer >= 1"):
        VisualMemory(0, SinkWindowPolicy())
    with pytest.raises(TypeError, match="make_room"):
        VisualMemory(10, object())  # type: ignore[arg-type]


# --- the context budget: the memory bounds the engine's context too ------------------------------


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_context_budget_holds_with_many_small_entries(name: str) -> None:
    """Entries of a few tokens, each costing 7 more in the engine's prompt: the context bound, not the token
    budget, decides what is evicted, and the ops still mirror the memory."""
    budget, context = 400, ContextBudget(300, lambda entry: 7)
    gen = torch.Generator().manual_seed(1)
    archive = InMemoryArchive(max_entries=100_000, max_bytes=1 << 40)
    memory = VisualMemory(budget, make_policy(name), archive, context=context)
    shadow: dict[int, MemoryEntry] = {}
    most_tokens = 0
    for step in range(600):
        if step % 100 == 99:
            memory.begin_round()
        n = int(torch.randint(1, 4, (1,), generator=gen))
        cells = torch.randperm(GW * GW, generator=gen)[:n].sort().values.tolist()
        new = make_entry(step, cells, round_=memory.round)
        ops = memory.add(new)
        shadow = replay(shadow, new, ops)
        assert memory.context_tokens == sum(e.num_tokens + 7 for e in memory.entries)
        assert memory.context_tokens <= 300, step
        most_tokens = max(most_tokens, memory.tokens_held)
    assert_mirrors(shadow, memory)
    assert memory.stats.entries_evicted > 0 and most_tokens < budget // 2  # the context bound did the evicting
    assert memory.stats.entries_archived > 0


def test_context_budget_counts_prunes_and_pools() -> None:
    """A pruned entry costs its kept tokens plus its overhead again; a pooled one replaces its sources' costs."""
    policy = RedundancyPrunePolicy(target=1.0, recent_fraction=0.5, norm_share=1.0)
    memory = VisualMemory(12, policy, context=ContextBudget(100, lambda e: e.num_tokens))
    a, b = make_entry(0, range(8)), make_entry(1, range(8))
    memory.add(a)
    ops = memory.add(b)
    assert any(isinstance(op, Prune) for op in ops)
    assert memory.context_tokens == sum(2 * e.num_tokens for e in memory.entries)  # overhead = kept tokens
    pooled = VisualMemory(8, make_policy("round_pool", target=1.0), context=ContextBudget(100, lambda e: 3))
    pooled.add(make_entry(0, range(6)))
    ops = pooled.add(make_entry(1, range(6)))
    assert [type(op) for op in ops] == [Pool]
    assert pooled.context_tokens == pooled.tokens_held + 3 * len(pooled.entries) == 9


def test_context_budget_rejects_an_entry_that_cannot_fit() -> None:
    memory = VisualMemory(100, SinkWindowPolicy(), context=ContextBudget(20, lambda e: 10))
    with pytest.raises(ValueError, match="takes 22 tokens of the engine's context but the memory may fill only 20"):
        memory.add(make_entry(0, range(12)))
    assert memory.entries == () and memory.context_tokens == 0
    with pytest.raises(ValueError, match="at least 1 token"):
        ContextBudget(0, lambda e: 0)
