"""The bounded memory: the budget always holds, and its ops let an engine mirror it exactly."""

from __future__ import annotations

import pytest
import torch

from memory.archive import InMemoryArchive
from memory.policies import POLICY_NAMES, RedundancyPrunePolicy, RoundPoolPolicy, SinkWindowPolicy, make_policy
from memory.store import Evict, MemoryEntry, Pool, Prune, VisualMemory

GW = 8


def entry(
    step: int, cells: list[int], dim: int = 4, value: float | None = None, round_: int = 0, seed: int | None = None
) -> MemoryEntry:
    idx = torch.tensor(cells, dtype=torch.long)
    pos = torch.stack([torch.full_like(idx, step * 4), idx // GW, idx % GW])
    if value is not None:
        vec = torch.full((len(cells), dim), value)
    else:
        vec = torch.randn(len(cells), dim, generator=torch.Generator().manual_seed(seed if seed is not None else step))
    return MemoryEntry(-1, step, 2.0 * step, 2.0 * step + 2, idx, pos, embeddings=vec, round=round_)


def replay(shadow: dict[int, MemoryEntry], new: MemoryEntry, ops: list) -> None:
    """What an engine does with the ops: the mirror must end equal to the memory."""
    shadow[new.entry_id] = new
    for op in ops:
        if isinstance(op, Evict):
            for i in op.entry_ids:
                del shadow[i]
        elif isinstance(op, Prune):
            shadow[op.entry_id] = shadow[op.entry_id].select(op.keep)
        elif isinstance(op, Pool):
            for i in op.source_ids:
                del shadow[i]
            shadow[op.entry.entry_id] = op.entry


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_budget_holds_after_every_add_and_ops_mirror_the_memory(name: str) -> None:
    gen = torch.Generator().manual_seed(0)
    memory = VisualMemory(300, make_policy(name))
    shadow: dict[int, MemoryEntry] = {}
    for step in range(1500):
        n = int(torch.randint(1, 40, (1,), generator=gen))
        cells = torch.randperm(GW * GW, generator=gen)[:n].sort().values.tolist()
        e = entry(step, cells, round_=step // 200)
        ops = memory.add(e)
        replay(shadow, e, ops)
        assert memory.tokens_held <= 300
        assert memory.tokens_held == sum(x.num_tokens for x in memory.entries)
    assert {i: x.num_tokens for i, x in shadow.items()} == {x.entry_id: x.num_tokens for x in memory.entries}
    for x in memory.entries:
        assert torch.equal(shadow[x.entry_id].token_indices, x.token_indices)
    stats = memory.stats
    assert stats.tokens_added == stats.tokens_held + stats.tokens_evicted + stats.tokens_pruned + stats.tokens_pooled


def test_sink_window_keeps_sink_and_newest() -> None:
    memory = VisualMemory(40, SinkWindowPolicy(sink_entries=1, target=0.5))
    for step in range(5):
        memory.add(entry(step, list(range(10))))
    # 50 > 40 at the fifth add: evict oldest non-sink entries until <= 20
    assert [e.entry_id for e in memory.entries] == [0, 4]
    assert memory.stats.entries_evicted == 3


def test_redundancy_prunes_static_tokens_first() -> None:
    memory = VisualMemory(20, RedundancyPrunePolicy(target=1.0, recent_fraction=0.5, norm_share=0.0))
    ref_vec = torch.tensor([1.0, 0.0, 0.0, 0.0])
    old = entry(0, list(range(8)), value=0.0)
    old.embeddings[:4] = ref_vec  # static: same as the recent frame at the same positions
    old.embeddings[4:] = torch.tensor([0.0, 1.0, 0.0, 0.0])  # changed
    memory.add(old)
    memory.add(entry(1, list(range(8)), value=0.0))
    memory.entries[1].embeddings[:] = ref_vec
    ops = memory.add(entry(2, list(range(8)), value=0.0))
    # references: the newest half (2 entries, 16 tokens); old budget 4: its 4 changed tokens survive
    assert ops and isinstance(ops[0], Prune) and ops[0].keep.tolist() == [4, 5, 6, 7]
    assert memory.tokens_held == 20


def test_redundancy_norm_share_keeps_high_norm_tokens() -> None:
    memory = VisualMemory(16, RedundancyPrunePolicy(target=1.0, recent_fraction=0.5, norm_share=1.0))
    old = entry(0, list(range(6)), value=1.0)
    old.embeddings[2] *= 10
    old.embeddings[5] *= 5
    memory.add(old)
    memory.add(entry(1, list(range(6)), value=1.0))
    memory.add(entry(2, list(range(8)), value=1.0))
    assert memory.get(0).token_indices.tolist() == [2, 5]


def test_redundancy_needs_vectors() -> None:
    memory = VisualMemory(4, RedundancyPrunePolicy())
    bare = MemoryEntry(-1, 0, 0.0, 1.0, torch.arange(3), torch.zeros(3, 3, dtype=torch.long))
    memory.add(bare)
    with pytest.raises(ValueError, match="needs per-token vectors"):
        memory.add(MemoryEntry(-1, 1, 1.0, 2.0, torch.arange(3), torch.zeros(3, 3, dtype=torch.long)))


def test_round_pool_averages_oldest_round_first() -> None:
    memory = VisualMemory(14, RoundPoolPolicy(target=1.0))
    memory.add(entry(0, [0, 1, 2, 3], value=1.0, round_=0))
    memory.add(entry(1, [2, 3, 4, 5], value=3.0, round_=0))
    memory.add(entry(2, [0, 1, 2, 3], value=5.0, round_=1))
    ops = memory.add(entry(3, [0, 1, 2, 3], value=7.0, round_=1))
    assert len(ops) == 1 and isinstance(ops[0], Pool) and ops[0].source_ids == (0, 1)
    pooled = ops[0].entry
    assert pooled.token_indices.tolist() == [0, 1, 2, 3, 4, 5]
    assert pooled.embeddings[:, 0].tolist() == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
    assert pooled.positions[0].tolist() == [0] * 6 and pooled.t_start == 0.0 and pooled.t_end == 4.0
    assert pooled.pooled_from == (0, 1)
    assert [e.entry_id for e in memory.entries] == [pooled.entry_id, 2, 3]  # the pooled entry takes the old place
    assert memory.get(2).embeddings[0, 0] == 5.0  # the recent round is untouched


def test_round_pool_falls_back_to_eviction() -> None:
    memory = VisualMemory(8, RoundPoolPolicy(target=1.0))
    memory.add(entry(0, [0, 1, 2, 3]))
    memory.add(entry(1, [4, 5, 6, 7]))  # no shared positions: nothing to pool
    ops = memory.add(entry(2, [8, 9]))
    assert ops == [Evict((0,))]


def test_evicted_entries_go_to_the_archive() -> None:
    archive = InMemoryArchive()
    memory = VisualMemory(20, SinkWindowPolicy(sink_entries=0, target=1.0), archive)
    for step in range(4):
        memory.add(entry(step, list(range(10))))
    assert len(archive) == 2 and archive.get(0) is not None and memory.stats.entries_archived == 2


def test_bad_input() -> None:
    memory = VisualMemory(5, SinkWindowPolicy())
    with pytest.raises(ValueError, match="raise the budget or lower the frame resolution"):
        memory.add(entry(0, list(range(6))))
    assert memory.tokens_held == 0
    with pytest.raises(ValueError, match=r"positions must be \[3, 2\]"):
        MemoryEntry(-1, 0, 0.0, 1.0, torch.arange(2), torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"embeddings must be \[2, D\]"):
        MemoryEntry(-1, 0, 0.0, 1.0, torch.arange(2), torch.zeros(3, 2, dtype=torch.long), embeddings=torch.zeros(3, 4))
    with pytest.raises(KeyError, match="no entry 42"):
        memory.get(42)
    with pytest.raises(ValueError, match="unknown memory policy"):
        make_policy("lru")
    with pytest.raises(ValueError, match="target"):
        SinkWindowPolicy(target=0.0)
    with pytest.raises(ValueError, match="budget_tokens"):
        VisualMemory(0, SinkWindowPolicy())
