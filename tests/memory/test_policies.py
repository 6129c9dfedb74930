"""Memory policies: sink + window, redundancy pruning (InfiniPot-V), round pooling (StreamBridge)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import pytest
import torch

from memory.policies import (
    POLICY_NAMES,
    RedundancyPrunePolicy,
    RoundPoolPolicy,
    SinkWindowPolicy,
    make_policy,
    pool_entries,
)
from memory.store import Evict, MemoryEntry, Pool, Prune, VisualMemory

GW = 8


def make_entry(
    entry_id: int,
    cells: Sequence[int],
    vectors: torch.Tensor | None = None,
    round_: int = 0,
    features: torch.Tensor | None = None,
) -> MemoryEntry:
    idx = torch.tensor(list(cells), dtype=torch.long)
    pos = torch.stack([torch.full_like(idx, 2 * entry_id), idx // GW, idx % GW])
    return MemoryEntry(
        entry_id,
        entry_id,
        float(entry_id),
        entry_id + 1.0,
        idx,
        pos,
        vectors,
        features=features,
        round=round_,
    )


def ids_from(start: int):
    counter = itertools.count(start)
    return lambda: next(counter)


def unit(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# --- sink + window --------------------------------------------------------------------------------


def test_sink_window_keeps_sinks_and_newest_exact_ids() -> None:
    memory = VisualMemory(50, SinkWindowPolicy(sink_entries=2, target=0.6))
    log = []
    for step in range(9):
        ops = memory.add(make_entry(step, range(10)))
        log.append((step, ops))
    assert [e.entry_id for e in memory.entries] == [0, 1, 8]
    assert [(s, o) for s, o in log if o] == [(5, [Evict((2, 3, 4))]), (8, [Evict((5, 6, 7))])]


def test_sink_window_policy_directly() -> None:
    entries = [make_entry(i, range(n)) for i, n in enumerate([3, 5, 5, 5, 5])]
    assert SinkWindowPolicy(sink_entries=0, target=0.5).make_room(entries, 20, ids_from(9)) == [Evict((0, 1, 2))]
    assert SinkWindowPolicy(sink_entries=1, target=0.5).make_room(entries, 20, ids_from(9)) == [Evict((1, 2, 3))]
    # never the newest, even when the sinks and the newest exceed the target
    assert SinkWindowPolicy(sink_entries=4, target=0.5).make_room(entries, 20, ids_from(9)) == []
    assert SinkWindowPolicy().name == "sink_window" and SinkWindowPolicy().target == 0.9


# --- redundancy pruning ---------------------------------------------------------------------------


def _static_and_changing_scene() -> list[MemoryEntry]:
    """Two older entries of 8 tokens (cells 0..7): even cells repeat the reference, odd cells changed."""
    gen = torch.Generator().manual_seed(7)
    reference = torch.randn(8, 16, generator=gen)  # what the scene looks like now, per cell
    entries = []
    for i in range(2):
        old = torch.randn(8, 16, generator=gen)
        old[0::2] = reference[0::2] * (1.0 + i)  # static (cosine 1 whatever the scale)
        entries.append(make_entry(i, range(8), old))
    entries += [make_entry(2 + i, range(8), reference + 0.01 * i) for i in range(2)]
    return entries


def test_redundancy_prunes_static_tokens_first() -> None:
    policy = RedundancyPrunePolicy(target=1.0, recent_fraction=0.5, norm_share=0.0)
    # budget 24: 16 reference tokens, 8 left for the 16 older ones
    ops = policy.make_room(_static_and_changing_scene(), 24, ids_from(9))
    assert [type(op) for op in ops] == [Prune, Prune]
    assert [(op.entry_id, op.keep.tolist()) for op in ops] == [(0, [1, 3, 5, 7]), (1, [1, 3, 5, 7])]


def test_redundancy_evicts_entries_left_empty_and_uses_max_without_same_position() -> None:
    ref = make_entry(2, [0, 1], torch.stack([unit(1, 0, 0), unit(0, 1, 0)]))
    static = make_entry(0, [0, 1], torch.stack([unit(1, 0, 0), unit(0, 1, 0)]))
    # cells 9 and 10 have no reference token at their position: the best match over all of them counts
    moved = make_entry(1, [9, 10], torch.stack([unit(0, 2, 0), unit(0, 0, 3)]))
    ops = RedundancyPrunePolicy(target=1.0, recent_fraction=0.3, norm_share=0.0).make_room(
        [static, moved, ref], 3, ids_from(9)
    )
    assert [op.entry_id if isinstance(op, Prune) else op.entry_ids for op in ops] == [(0,), 1]
    assert ops[1].keep.tolist() == [1]  # cell 10 (orthogonal to all) stays, cell 9 (a copy of cell 1) goes


def test_redundancy_norm_share() -> None:
    degrees = [80.0, 60.0, 40.0, 20.0]  # angle of the changed tokens to the reference: low redundancy first
    changed = [0.5 * unit(math.cos(math.radians(d)), math.sin(math.radians(d)), 0) for d in degrees]
    static = [k * unit(1, 0, 0) for k in (1.0, 2.0, 3.0, 4.0)]
    old = make_entry(0, range(8), torch.stack(static + changed))
    refs = [make_entry(i, range(8), unit(1, 0, 0).expand(8, 3).clone()) for i in (1, 2)]
    kept = {}
    for share in (0.0, 0.5, 1.0):
        (op,) = RedundancyPrunePolicy(target=1.0, recent_fraction=0.5, norm_share=share).make_room(
            [old, *refs], 20, ids_from(9)
        )
        kept[share] = op.keep.tolist()
    assert kept == {0.0: [4, 5, 6, 7], 0.5: [2, 3, 4, 5], 1.0: [0, 1, 2, 3]}


def test_redundancy_compares_features_not_embeddings() -> None:
    same = torch.ones(4, 2)
    feats_old = torch.stack([unit(1, 0), unit(0, 1), unit(1, 0), unit(0, 1)])
    old = make_entry(0, range(4), same.clone(), features=feats_old)
    ref = make_entry(1, range(4), same.clone(), features=unit(1, 0).expand(4, 2).clone())
    (op,) = RedundancyPrunePolicy(target=1.0, recent_fraction=0.5, norm_share=0.0).make_room([old, ref], 6, ids_from(9))
    assert op.keep.tolist() == [1, 3]


def test_redundancy_reference_alone_over_budget_evicts_oldest() -> None:
    entries = [make_entry(i, range(n), torch.ones(n, 2)) for i, n in enumerate([4, 4, 10, 10])]
    ops = RedundancyPrunePolicy(target=1.0, recent_fraction=0.5).make_room(entries, 16, ids_from(9))
    assert ops == [Evict((0, 1, 2))]


def test_redundancy_needs_vectors() -> None:
    bare = [make_entry(i, range(3)) for i in range(3)]
    with pytest.raises(ValueError, match=r"entries \[0, 1, 2\] have neither features nor embeddings"):
        RedundancyPrunePolicy().make_room(bare, 5, ids_from(9))
    mixed = [make_entry(0, range(3), torch.ones(3, 2)), make_entry(1, range(3), torch.ones(3, 5))]
    with pytest.raises(ValueError, match=r"one vector size across entries, got sizes \[2, 5\]"):
        RedundancyPrunePolicy().make_room(mixed, 5, ids_from(9))
    memory = VisualMemory(4, RedundancyPrunePolicy())
    memory.add(make_entry(0, range(3)))
    with pytest.raises(ValueError, match="neither features nor embeddings"):
        memory.add(make_entry(1, range(3)))
    assert memory.tokens_held == 3


# --- round pooling --------------------------------------------------------------------------------


def test_round_pool_averages_oldest_round_and_leaves_recent_round() -> None:
    memory = VisualMemory(14, RoundPoolPolicy(target=1.0))
    a_emb = unit(1, 2, 3, 4)[:, None]
    b_emb = unit(10, 20, 30, 40)[:, None]
    memory.add(make_entry(0, [0, 1, 2, 3], a_emb, round_=0, features=-a_emb))
    memory.add(make_entry(1, [2, 3, 4, 5], b_emb, round_=0, features=-b_emb))
    recent = [make_entry(i, [0, 1, 2, 3], unit(5, 5, 5, 5)[:, None], round_=1) for i in (2, 3)]
    assert memory.add(recent[0]) == []
    ops = memory.add(recent[1])
    assert len(ops) == 1 and isinstance(ops[0], Pool) and ops[0].source_ids == (0, 1)
    pooled = ops[0].entry
    assert pooled.entry_id == 4 and pooled.pooled_from == (0, 1)
    assert pooled.token_indices.tolist() == [0, 1, 2, 3, 4, 5]
    assert pooled.embeddings[:, 0].tolist() == [1.0, 2.0, 6.5, 12.0, 30.0, 40.0]
    assert pooled.features[:, 0].tolist() == [-1.0, -2.0, -6.5, -12.0, -30.0, -40.0]
    assert pooled.positions.tolist() == [
        [0] * 6,
        [0] * 6,
        [0, 1, 2, 3, 4, 5],
    ]  # t of the first entry (step 0)
    assert (pooled.t_start, pooled.t_end, pooled.chunk_index, pooled.round) == (0.0, 2.0, 0, 0)
    assert [e.entry_id for e in memory.entries] == [4, 2, 3]
    assert memory.get(2) is recent[0] and memory.get(3) is recent[1]
    assert memory.tokens_held == 14 and memory.stats.tokens_pooled == 2


def test_round_pool_oldest_pairs_first_and_pools_again() -> None:
    entries = [make_entry(i, range(4), torch.full((4, 1), float(i + 1))) for i in range(4)]
    entries.append(make_entry(4, range(4), torch.full((4, 1), 9.0), round_=1))
    one = RoundPoolPolicy(target=1.0).make_room(entries, 17, ids_from(5))
    assert [op.source_ids for op in one] == [(0, 1)]
    two = RoundPoolPolicy(target=1.0).make_room(entries, 13, ids_from(5))
    assert [op.source_ids for op in two] == [(0, 1), (2, 3)]  # one pass: disjoint pairs, oldest first
    three = RoundPoolPolicy(target=1.0).make_room(entries, 9, ids_from(5))
    assert [op.source_ids for op in three] == [(0, 1), (2, 3), (5, 6)]
    final = three[-1].entry
    assert final.entry_id == 7 and final.pooled_from == (0, 1, 2, 3, 5, 6)
    assert final.embeddings[:, 0].tolist() == [2.5] * 4 and final.num_tokens == 4


def test_round_pool_moves_to_the_next_round_when_the_oldest_cannot_pool() -> None:
    entries = [
        make_entry(0, [0, 1], torch.ones(2, 1)),
        make_entry(1, [2, 3], torch.ones(2, 1)),  # no cell shared with entry 0: pooling saves nothing
        make_entry(2, [0, 1], torch.ones(2, 1), round_=1),
        make_entry(3, [0, 1], torch.ones(2, 1), round_=1),
    ]
    ops = RoundPoolPolicy(target=1.0).make_room(entries, 7, ids_from(4))
    assert [type(op) for op in ops] == [Pool] and ops[0].source_ids == (2, 3)


def test_round_pool_falls_back_to_evicting_oldest() -> None:
    memory = VisualMemory(8, RoundPoolPolicy(target=1.0))
    memory.add(make_entry(0, [0, 1, 2, 3]))
    memory.add(make_entry(1, [4, 5, 6, 7]))
    assert memory.add(make_entry(2, [8, 9])) == [Evict((0,))]
    entries = [make_entry(i, [i], torch.ones(1, 1), round_=i) for i in range(4)]  # every entry its own round
    assert RoundPoolPolicy(target=1.0).make_room(entries, 2, ids_from(4)) == [Evict((0,)), Evict((1,))]


def test_pool_entries_without_embeddings() -> None:
    pooled = pool_entries(make_entry(0, [3, 1]), make_entry(1, [1, 2]), 5)
    assert pooled.embeddings is None and pooled.token_indices.tolist() == [1, 2, 3]


# --- construction ---------------------------------------------------------------------------------


def test_make_policy_and_bad_options() -> None:
    assert POLICY_NAMES == ("sink_window", "redundancy", "round_pool")
    for name in POLICY_NAMES:
        assert make_policy(name).name == name
    assert make_policy("sink_window", sink_entries=3).sink_entries == 3
    names = "sink_window, redundancy, round_pool"
    with pytest.raises(ValueError, match=f"unknown memory policy 'lru'; choose one of {names}"):
        make_policy("lru")
    with pytest.raises(ValueError, match="bad options for memory policy 'round_pool'"):
        make_policy("round_pool", sink_entries=2)
    with pytest.raises(ValueError, match=r"target must be a fraction of the budget in \(0, 1\], got 0.0"):
        SinkWindowPolicy(target=0.0)
    with pytest.raises(ValueError, match="sink_entries must be >= 0"):
        SinkWindowPolicy(sink_entries=-1)
    with pytest.raises(ValueError, match="recent_fraction"):
        RedundancyPrunePolicy(recent_fraction=0.0)
    with pytest.raises(ValueError, match="norm_share"):
        RedundancyPrunePolicy(norm_share=1.5)
    with pytest.raises(ValueError, match="target"):
        RoundPoolPolicy(target=1.2)
