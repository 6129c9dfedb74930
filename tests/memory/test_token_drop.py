"""Differential token drop with exact values, in pixel and feature mode."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from memory.token_drop import (
    DEFAULT_FEATURE_THRESHOLD,
    DEFAULT_PIXEL_THRESHOLD,
    DifferentialTokenDropper,
    DropPolicy,
    DropResult,
    change_scores,
    pixel_token_values,
    select_keep,
)

PX = 28


def _frames(value: float, h: int = 56, w: int = 84, t: int = 2) -> torch.Tensor:
    return torch.full((t, 3, h, w), value)  # [T, 3, H, W]


def _square(row: int, col: int, h: int = 56, w: int = 84) -> torch.Tensor:
    """A white token-sized square on black at grid (row, col), both frames of the step."""
    x = _frames(0.0, h, w)
    x[:, :, PX * row : PX * (row + 1), PX * col : PX * (col + 1)] = 1.0
    return x


def _rotated(degrees: float, n: int = 6) -> torch.Tensor:
    """n copies of a unit 2-D embedding at the given angle."""
    a = math.radians(degrees)
    return torch.tensor([[math.cos(a), math.sin(a)]] * n)  # [n, 2]


def _kept_steps(dropper: DifferentialTokenDropper, steps: list[torch.Tensor]) -> list[int]:
    return [i for i, v in enumerate(steps) if dropper.step(v).num_kept]


# --- identical frames, hard cut, moving object ----------------------------------------------------------


@pytest.mark.parametrize("mode", ["pixel", "feature"])
@pytest.mark.parametrize("reference", ["last_kept", "previous"])
def test_identical_frames_drop_everything_after_the_first(mode: str, reference: str) -> None:
    d = DifferentialTokenDropper(DropPolicy(mode=mode, reference=reference))
    values = pixel_token_values(_frames(0.3), PX) if mode == "pixel" else torch.randn(6, 16)
    results = [d.step(values) for _ in range(4)]
    first = results[0]
    assert first.reset and first.num_kept == 6 and first.drop_ratio == 0.0 and first.changed_fraction == 1.0
    assert first.kept_indices.tolist() == [0, 1, 2, 3, 4, 5]
    assert [r.drop_ratio for r in results[1:]] == [1.0, 1.0, 1.0]
    assert [r.reset for r in results[1:]] == [False, False, False]
    assert results[1].kept_indices.tolist() == [] and results[1].changed_fraction == 0.0
    assert results[1].max_change == pytest.approx(0.0, abs=1e-6)  # float cosine: within 1 ulp of 1
    assert d.steps == 4


@pytest.mark.parametrize("mode", ["pixel", "feature"])
def test_hard_cut_keeps_everything(mode: str) -> None:
    d = DifferentialTokenDropper(DropPolicy(mode=mode))
    if mode == "pixel":
        a, b = pixel_token_values(_frames(0.0), PX), pixel_token_values(_frames(1.0), PX)
        expected = 1.0
    else:
        a = torch.eye(6, 8)
        b = -a  # cosine -1 everywhere
        expected = 2.0
    d.step(a)
    r = d.step(b)
    assert r.num_kept == 6 and r.num_dropped == 0 and r.drop_ratio == 0.0 and r.changed_fraction == 1.0
    assert r.change.tolist() == [expected] * 6
    assert r.mean_change == expected and r.max_change == expected and not r.reset


def test_moving_object_keeps_old_and_new_positions_pixel() -> None:
    # 2x3 grid; the square moves right along the bottom row (indices 3, 4, 5)
    steps = [pixel_token_values(_square(1, col), PX) for col in range(3)]
    d = DifferentialTokenDropper(DropPolicy(mode="pixel"))
    assert d.step(steps[0]).kept_indices.tolist() == [0, 1, 2, 3, 4, 5]
    r = d.step(steps[1])
    assert r.kept_indices.tolist() == [3, 4]
    assert r.change.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    assert r.drop_ratio == 4 / 6 and r.changed_fraction == 2 / 6
    r = d.step(steps[2])
    assert r.kept_indices.tolist() == [4, 5]  # position 3 was kept black at the previous step: unchanged now
    assert r.change.tolist() == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]


def test_moving_object_keeps_old_and_new_positions_feature() -> None:
    background, obj = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])  # cosine 0 between them
    steps = []
    for col in range(3):
        x = background.repeat(6, 1)  # [6, 2]
        x[3 + col] = obj
        steps.append(x)
    d = DifferentialTokenDropper(DropPolicy(mode="feature"))
    d.step(steps[0])
    r = d.step(steps[1])
    assert r.kept_indices.tolist() == [3, 4] and r.change.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    assert d.step(steps[2]).kept_indices.tolist() == [4, 5]


# --- slow drift: previous vs last kept -------------------------------------------------------------------


def test_slow_brightness_ramp_pixel() -> None:
    ramp = [pixel_token_values(_frames(0.1 + 0.03 * k), PX) for k in range(12)]
    previous = DifferentialTokenDropper(DropPolicy(mode="pixel", threshold=0.08, reference="previous"))
    assert _kept_steps(previous, ramp) == [0]
    assert torch.equal(previous.reference, ramp[11])

    last_kept = DifferentialTokenDropper(DropPolicy(mode="pixel", threshold=0.08))
    changes, kept = [], []
    for k, values in enumerate(ramp):
        r = last_kept.step(values)
        changes.append(r.mean_change)
        if r.num_kept:
            assert r.num_kept == 6
            kept.append(k)
        if k in (3, 4, 5):
            # reset to step 3's value when it was kept, and held there while steps 4 and 5 are dropped
            assert torch.equal(last_kept.reference, ramp[3])
    # 0.03 per step accumulates against the last kept value: 0.03, 0.06, 0.09 >= 0.08 -> kept, then again
    assert kept == [0, 3, 6, 9]
    assert changes == pytest.approx([0.0, 0.03, 0.06, 0.09, 0.03, 0.06, 0.09, 0.03, 0.06, 0.09, 0.03, 0.06])
    assert torch.equal(last_kept.reference, ramp[9])


def test_slow_rotation_feature() -> None:
    # 20 degrees per step; tau = 0.6: cos 20 = 0.94 and cos 40 = 0.77 are dropped, cos 60 = 0.5 is kept
    steps = [_rotated(20.0 * k) for k in range(10)]
    previous = DifferentialTokenDropper(DropPolicy(mode="feature", threshold=0.6, reference="previous"))
    assert _kept_steps(previous, steps) == [0]
    last_kept = DifferentialTokenDropper(DropPolicy(mode="feature", threshold=0.6))
    assert _kept_steps(last_kept, steps) == [0, 3, 6, 9]
    assert torch.equal(last_kept.reference, steps[9])


def test_last_kept_updates_only_kept_positions() -> None:
    d = DifferentialTokenDropper(DropPolicy(mode="pixel", threshold=0.25))
    d.step(torch.zeros(3, 4))
    r = d.step(torch.tensor([[0.5] * 4, [0.125] * 4, [0.0] * 4]))
    assert r.keep.tolist() == [True, False, False]
    assert d.reference.tolist() == [[0.5] * 4, [0.0] * 4, [0.0] * 4]  # dropped positions hold the old value


# --- exact thresholds --------------------------------------------------------------------------------------


def test_feature_threshold_boundary() -> None:
    ref = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 5)
    new = torch.tensor(
        [
            [2.0, 0.0, 0.0, 0.0],  # cosine 1 (length does not matter)
            [3.0, 4.0, 0.0, 0.0],  # cosine 3/5 = 0.6 > 0.5: dropped
            [1.0, 1.0, 1.0, 1.0],  # cosine 1/2 exactly = tau: kept (only > tau drops)
            [0.0, 1.0, 0.0, 0.0],  # cosine 0
            [-1.0, 0.0, 0.0, 0.0],  # cosine -1
        ]
    )
    d = DifferentialTokenDropper(DropPolicy(mode="feature", threshold=0.5))
    d.step(ref)
    r = d.step(new)
    assert r.keep.tolist() == [False, False, True, True, True]
    assert r.change.tolist() == pytest.approx([0.0, 0.4, 0.5, 1.0, 2.0], abs=1e-7)
    assert r.change[[0, 2, 3, 4]].tolist() == [0.0, 0.5, 1.0, 2.0]  # exact where the cosine is exact
    assert r.changed_fraction == 3 / 5


def test_feature_threshold_boundary_below_half() -> None:
    # 16-D: e1 against all-ones has cosine 1/4 exactly; e1 against e1 + e2 has cosine 0.7071
    ref = torch.zeros(2, 16)
    ref[:, 0] = 1.0
    new = torch.ones(2, 16)
    new[1, 2:] = 0.0
    change = change_scores(new, ref, "feature")
    assert change[0].item() == 0.75
    assert select_keep(change, DropPolicy(threshold=0.25)).tolist() == [True, False]  # demo tau
    assert select_keep(change, DropPolicy(threshold=0.24)).tolist() == [False, False]
    assert select_keep(change, DropPolicy(threshold=0.71)).tolist() == [True, True]


def test_feature_extreme_thresholds() -> None:
    x = torch.randn(200, 32, generator=torch.Generator().manual_seed(0))
    same = change_scores(x, x.clone(), "feature")  # float cosine of a vector with itself can exceed 1
    assert same.min().item() >= 0.0
    assert select_keep(same, DropPolicy(threshold=1.0)).all()  # tau = 1: nothing is ever more similar than 1
    assert change_scores(x, -x, "feature").max().item() <= 2.0
    assert not select_keep(same, DropPolicy(threshold=-1.0)).any()
    opposite = change_scores(torch.eye(4), -torch.eye(4), "feature")  # exactly -1
    assert opposite.tolist() == [2.0] * 4
    assert select_keep(opposite, DropPolicy(threshold=-1.0)).all()  # similarity -1 is not > -1


def test_pixel_threshold_boundary() -> None:
    ref = pixel_token_values(_frames(0.5), PX)
    new = pixel_token_values(_frames(0.625), PX)  # difference 0.125 exactly everywhere
    new[0] = 0.5
    new[1] = 0.375  # darker counts the same as brighter
    change = change_scores(new, ref, "pixel")
    assert change.tolist() == [0.0, 0.125, 0.125, 0.125, 0.125, 0.125]
    assert select_keep(change, DropPolicy(mode="pixel", threshold=0.125)).tolist() == [False] + [True] * 5
    assert not select_keep(change, DropPolicy(mode="pixel", threshold=0.126)).any()
    assert select_keep(change, DropPolicy(mode="pixel", threshold=0.0)).all()  # tau = 0: never drops


def test_pixel_change_is_mean_over_region_and_frames() -> None:
    a, b = _frames(0.0, 28, 28), _frames(0.0, 28, 28)
    b[1, 0, :14, :] = 1.0  # half of one channel of the second frame: 392 of 4704 values
    change = change_scores(pixel_token_values(b, PX), pixel_token_values(a, PX), "pixel")
    assert change.tolist() == pytest.approx([392 / 4704], abs=1e-7)


def test_zero_vectors_do_not_produce_nan() -> None:
    zeros, ones = torch.zeros(2, 4), torch.ones(2, 4)
    assert change_scores(zeros, zeros, "feature").tolist() == [1.0, 1.0]  # similarity 0: no NaN
    assert change_scores(ones, zeros, "feature").tolist() == [1.0, 1.0]
    d = DifferentialTokenDropper(DropPolicy())
    d.step(zeros)
    r = d.step(zeros)
    assert not torch.isnan(r.change).any() and r.num_kept == 2


# --- budget mode ---------------------------------------------------------------------------------------


def test_budget_mode_drops_exactly_k_with_index_ties() -> None:
    change = torch.tensor([0.5, 0.1, 0.1, 0.9, 0.1])
    keep = select_keep(change, DropPolicy(mode="pixel", drop_ratio=0.5))  # k = floor(2.5) = 2
    assert keep.tolist() == [True, False, False, True, True]  # of the three 0.1 ties the lower indices go
    keep = select_keep(change, DropPolicy(mode="pixel", drop_ratio=0.8))  # k = 4
    assert keep.tolist() == [False, False, False, True, False]
    assert select_keep(change, DropPolicy(mode="pixel", drop_ratio=0.0)).all()
    assert select_keep(change, DropPolicy(mode="pixel", drop_ratio=0.19)).all()  # floor(0.95) = 0


def test_budget_mode_k_is_exact_despite_float_products() -> None:
    assert 100 * 0.29 < 29  # the float product is 28.999999999999996
    keep = select_keep(torch.arange(100.0), DropPolicy(drop_ratio=0.29))
    assert int((~keep).sum()) == 29 and keep.nonzero().flatten().tolist() == list(range(29, 100))
    assert int((~select_keep(torch.zeros(3), DropPolicy(drop_ratio=0.999999))).sum()) == 2
    assert select_keep(torch.zeros(0), DropPolicy(drop_ratio=0.5)).tolist() == []


def test_budget_mode_stream_is_reproducible() -> None:
    policy = DropPolicy(mode="feature", drop_ratio=0.75)
    torch.manual_seed(0)
    steps = [torch.randn(8, 4) for _ in range(5)]
    runs = []
    for _ in range(2):
        d = DifferentialTokenDropper(policy)
        runs.append([d.step(v).kept_indices.tolist() for v in steps])
    assert runs[0] == runs[1]
    assert runs[0][0] == list(range(8))
    assert [len(k) for k in runs[0][1:]] == [2, 2, 2, 2]  # floor(8 * 0.75) = 6 dropped


def test_budget_mode_identical_frames_drops_lowest_indices() -> None:
    d = DifferentialTokenDropper(DropPolicy(mode="pixel", drop_ratio=0.5))
    values = pixel_token_values(_frames(0.4), PX)
    d.step(values)
    r = d.step(values)
    assert r.kept_indices.tolist() == [3, 4, 5] and r.drop_ratio == 0.5
    assert r.changed_fraction == 0.0  # against the mode's default threshold, in budget mode too


def test_budget_changed_fraction_uses_default_threshold() -> None:
    d = DifferentialTokenDropper(DropPolicy(mode="pixel", drop_ratio=0.5))
    d.step(pixel_token_values(_frames(0.0), PX))
    r = d.step(pixel_token_values(_square(0, 0), PX))
    assert r.kept_indices.tolist() == [0, 4, 5]  # 3 most changed: token 0, then the last unchanged by index
    assert r.changed_fraction == 1 / 6


# --- state, dtypes, aliasing --------------------------------------------------------------------------------


def test_grid_size_change_resets() -> None:
    d = DifferentialTokenDropper(DropPolicy(mode="pixel"))
    d.step(pixel_token_values(_frames(0.2), PX))
    r = d.step(pixel_token_values(_frames(0.2, 84, 84), PX))
    assert r.reset and r.num_kept == 9 and r.change.tolist() == [0.0] * 9 and r.changed_fraction == 1.0
    assert d.reference.shape == (9, 2 * 3 * PX * PX)
    assert d.step(pixel_token_values(_frames(0.2, 84, 84), PX)).drop_ratio == 1.0


def test_channel_change_resets() -> None:
    d = DifferentialTokenDropper(DropPolicy(mode="feature"))
    d.step(torch.ones(6, 4))
    r = d.step(torch.ones(6, 8))
    assert r.reset and r.num_kept == 6 and d.reference.shape == (6, 8)


def test_reset_forgets_the_reference() -> None:
    d = DifferentialTokenDropper(DropPolicy(mode="feature"))
    assert d.reference is None and d.steps == 0
    values = torch.randn(6, 4)
    d.step(values)
    d.reset()
    assert d.reference is None
    r = d.step(values)
    assert r.reset and r.num_kept == 6 and d.steps == 2


def test_bf16_input_matches_float32() -> None:
    torch.manual_seed(1)
    a = torch.randn(32, 64).to(torch.bfloat16)
    b = (a.float() + 1.2 * torch.randn(32, 64)).to(torch.bfloat16)
    d16, d32 = DifferentialTokenDropper(DropPolicy()), DifferentialTokenDropper(DropPolicy())
    d16.step(a), d32.step(a.float())
    r16, r32 = d16.step(b), d32.step(b.float())
    assert r16.change.dtype == torch.float32 and d16.reference.dtype == torch.float32
    assert torch.equal(r16.change, r32.change) and torch.equal(r16.keep, r32.keep)
    assert 0 < r16.num_kept < 32


def test_bf16_frames_through_pixel_values() -> None:
    d = DifferentialTokenDropper(DropPolicy(mode="pixel"))
    d.step(pixel_token_values(_frames(0.0).to(torch.bfloat16), PX))
    r = d.step(pixel_token_values(_square(0, 2).to(torch.bfloat16), PX))
    assert r.kept_indices.tolist() == [2]


@pytest.mark.parametrize("reference", ["last_kept", "previous"])
def test_caller_tensors_are_not_modified(reference: str) -> None:
    d = DifferentialTokenDropper(DropPolicy(mode="pixel", reference=reference))
    a = torch.zeros(4, 3)
    b = torch.tensor([[1.0] * 3, [0.0] * 3, [1.0] * 3, [0.0] * 3])
    a_copy, b_copy = a.clone(), b.clone()
    assert d.step(a).reset
    assert d.step(b).kept_indices.tolist() == [0, 2]
    assert d.step(a).kept_indices.tolist() == [0, 2]
    assert torch.equal(a, a_copy) and torch.equal(b, b_copy)


@pytest.mark.parametrize("reference", ["last_kept", "previous"])
def test_reference_does_not_alias_caller_tensors(reference: str) -> None:
    d = DifferentialTokenDropper(DropPolicy(mode="pixel", reference=reference))
    a = torch.zeros(4, 3)
    b = torch.tensor([[1.0] * 3, [0.0] * 3, [1.0] * 3, [0.0] * 3])
    d.step(a)
    a.fill_(0.7)  # the caller reuses its buffer: the stored reference must not follow
    assert d.reference.tolist() == [[0.0] * 3] * 4
    d.step(b)
    expected = b.tolist()
    b.fill_(0.3)
    assert d.reference.tolist() == expected
    assert d.step(torch.tensor(expected)).drop_ratio == 1.0


def test_reference_property_cannot_corrupt_state() -> None:
    d = DifferentialTokenDropper(DropPolicy(mode="feature"))
    a = torch.randn(6, 16)
    d.step(a)
    snapshot = d.reference
    snapshot.zero_()
    assert torch.equal(d.reference, a)
    assert d.step(a).drop_ratio == 1.0


def test_step_does_not_track_gradients() -> None:
    d = DifferentialTokenDropper(DropPolicy())
    x = torch.randn(4, 8, requires_grad=True)
    d.step(x)
    r = d.step(x * 1.0)
    assert not r.change.requires_grad and not d.reference.requires_grad


def test_empty_grid() -> None:
    d = DifferentialTokenDropper(DropPolicy())
    first, second = d.step(torch.zeros(0, 4)), d.step(torch.zeros(0, 4))
    for r in (first, second):
        assert r.num_tokens == 0 and r.drop_ratio == 0.0 and r.changed_fraction == 0.0
        assert r.mean_change == 0.0 and r.max_change == 0.0 and r.kept_indices.tolist() == []
    assert first.reset and not second.reset


def test_drop_result_properties() -> None:
    r = DropResult(torch.tensor([True, False, True, False]), torch.tensor([0.75, 0.25, 1.0, 0.0]), False)
    assert (r.num_tokens, r.num_kept, r.num_dropped, r.drop_ratio) == (4, 2, 2, 0.5)
    assert r.kept_indices.dtype == torch.long and r.kept_indices.tolist() == [0, 2]
    assert (r.mean_change, r.max_change) == (0.5, 1.0)
    assert r.changed_fraction == 0.5  # default policy: feature, tau 0.5 -> change >= 0.5
    pixel = DropResult(r.keep, r.change, False, DropPolicy(mode="pixel", threshold=0.8))
    assert pixel.changed_fraction == 0.25


# --- pixel_token_values ------------------------------------------------------------------------------------


def test_pixel_token_values_row_major() -> None:
    x = torch.zeros(2, 3, 56, 84)  # 2 x 3 tokens
    for row in range(2):
        for col in range(3):
            x[:, :, PX * row : PX * (row + 1), PX * col : PX * (col + 1)] = (row * 3 + col) / 8
    x[1] += 0.0625  # the second frame is brighter: both frames are in every token
    x[:, 2] += 0.125  # blue brighter
    v = pixel_token_values(x, PX)
    assert v.shape == (6, 2 * 3 * PX * PX)
    assert v.mean(-1).tolist() == pytest.approx([k / 8 + 0.0625 / 2 + 0.125 / 3 for k in range(6)], abs=1e-6)
    # layout of one token: [T, 3, px, px] flattened
    token4 = v[4].reshape(2, 3, PX, PX)
    assert torch.equal(token4, x[:, :, 28:56, 28:56])
    assert token4[0, 0, 0, 0].item() == 4 / 8 and token4[1, 2, 0, 0].item() == 4 / 8 + 0.0625 + 0.125


def test_pixel_token_values_hand_built_small() -> None:
    # token_px 2 on a 4x6 frame: every pixel holds its own index, so the gathering order is visible
    x = torch.arange(3 * 4 * 6, dtype=torch.float32).reshape(1, 3, 4, 6)
    v = pixel_token_values(x, 2)
    assert v.shape == (6, 12)
    assert v[0, :4].tolist() == [0.0, 1.0, 6.0, 7.0]  # red of the top-left 2x2
    assert v[1, :4].tolist() == [2.0, 3.0, 8.0, 9.0]  # next token to the right
    assert v[3, :4].tolist() == [12.0, 13.0, 18.0, 19.0]  # first token of the second row
    assert v[0, 4:8].tolist() == [24.0, 25.0, 30.0, 31.0]  # green plane follows


@pytest.mark.parametrize(
    ("frames", "token_px", "message"),
    [
        (torch.zeros(3, 28, 28), 28, r"\[T, 3, H, W\].*\(3, 28, 28\)"),
        (torch.zeros(1, 1, 28, 28), 28, r"\[T, 3, H, W\].*\(1, 1, 28, 28\)"),
        (torch.zeros(1, 4, 28, 28), 28, r"\[T, 3, H, W\]"),
        ([[0.0]], 28, r"\[T, 3, H, W\].*list"),
        (torch.zeros(0, 3, 28, 28), 28, "at least one frame"),
        (torch.zeros(1, 3, 30, 28), 28, "30x28 must be a positive multiple of token_px=28"),
        (torch.zeros(1, 3, 28, 42), 28, "28x42 must be a positive multiple"),
        (torch.zeros(1, 3, 0, 28), 28, "0x28 must be a positive multiple"),
        (torch.zeros(1, 3, 28, 28, dtype=torch.uint8), 28, "floating point.*uint8.*255"),
        (torch.zeros(1, 3, 28, 28), 0, "token_px must be a positive int"),
        (torch.zeros(1, 3, 28, 28), 28.0, "token_px must be a positive int"),
        (torch.zeros(1, 3, 28, 28), True, "token_px must be a positive int"),
    ],
)
def test_pixel_token_values_errors(frames: object, token_px: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pixel_token_values(frames, token_px)


# --- validation --------------------------------------------------------------------------------------------


def test_policy_defaults() -> None:
    assert DEFAULT_FEATURE_THRESHOLD == 0.5 and DEFAULT_PIXEL_THRESHOLD == 0.08
    feature, pixel = DropPolicy(), DropPolicy(mode="pixel")
    assert (feature.mode, feature.reference, feature.threshold, feature.drop_ratio) == (
        "feature",
        "last_kept",
        None,
        None,
    )
    assert feature.effective_threshold == DEFAULT_FEATURE_THRESHOLD and not feature.budget_mode
    assert pixel.effective_threshold == DEFAULT_PIXEL_THRESHOLD
    assert DropPolicy(mode="pixel", threshold=0.2).effective_threshold == 0.2
    budget = DropPolicy(mode="pixel", drop_ratio=0.5)
    assert budget.budget_mode and budget.effective_threshold == DEFAULT_PIXEL_THRESHOLD
    assert DropPolicy(threshold=1) == DropPolicy(threshold=1.0)
    assert isinstance(DropPolicy(threshold=1).threshold, float)
    assert DropPolicy(drop_ratio=np.float32(0.25)).drop_ratio == 0.25  # numpy scalars are numbers too
    with pytest.raises(AttributeError):
        feature.threshold = 0.3  # frozen


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "depth"}, r"mode must be one of \('pixel', 'feature'\), got 'depth'"),
        ({"reference": "first"}, r"reference must be one of \('last_kept', 'previous'\), got 'first'"),
        ({"threshold": 0.5, "drop_ratio": 0.5}, "mutually exclusive, got threshold=0.5 and drop_ratio=0.5"),
        (
            {"mode": "feature", "threshold": 1.5},
            r"threshold must be in \[-1, 1\] for mode 'feature'.*got 1.5",
        ),
        ({"mode": "feature", "threshold": -1.01}, r"threshold must be in \[-1, 1\].*got -1.01"),
        ({"mode": "pixel", "threshold": -0.1}, r"threshold must be in \[0, 1\] for mode 'pixel'.*got -0.1"),
        ({"mode": "pixel", "threshold": 1.2}, r"threshold must be in \[0, 1\].*got 1.2"),
        ({"threshold": float("nan")}, r"threshold must be in \[-1, 1\].*got nan"),
        ({"threshold": "0.5"}, r"threshold must be a number or None, got '0.5' \(str\)"),
        ({"threshold": True}, r"threshold must be a number or None, got True"),
        ({"drop_ratio": 1.0}, r"drop_ratio must be in \[0, 1\), got 1.0"),
        ({"drop_ratio": -0.1}, r"drop_ratio must be in \[0, 1\), got -0.1"),
        ({"drop_ratio": float("nan")}, r"drop_ratio must be in \[0, 1\), got nan"),
        ({"drop_ratio": "half"}, r"drop_ratio must be a number or None, got 'half'"),
    ],
)
def test_policy_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DropPolicy(**kwargs)


def test_policy_accepts_the_range_ends() -> None:
    assert DropPolicy(threshold=-1.0).threshold == -1.0 and DropPolicy(threshold=1.0).threshold == 1.0
    assert DropPolicy(mode="pixel", threshold=0.0).threshold == 0.0
    assert DropPolicy(drop_ratio=0.0).drop_ratio == 0.0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (torch.zeros(4), r"\[N, C\] tensor of token values, got \(4,\)"),
        (torch.zeros(2, 3, 4), r"\[N, C\].*\(2, 3, 4\)"),
        ([[0.0]], r"\[N, C\].*list"),
        (torch.zeros(4, 3, dtype=torch.int64), "floating point.*int64"),
        (torch.zeros(4, 0), "at least one channel"),
        (torch.tensor([[0.0, float("nan")]]), "NaN or infinity"),
        (torch.tensor([[0.0, float("inf")]]), "NaN or infinity"),
    ],
)
def test_step_rejects_bad_values(values: object, message: str) -> None:
    d = DifferentialTokenDropper(DropPolicy())
    with pytest.raises(ValueError, match=message):
        d.step(values)
    assert d.steps == 0 and d.reference is None  # a rejected step leaves the state alone


def test_dropper_rejects_a_non_policy() -> None:
    with pytest.raises(ValueError, match="policy must be a DropPolicy, got dict"):
        DifferentialTokenDropper({"mode": "pixel"})


def test_pure_function_errors() -> None:
    with pytest.raises(ValueError, match=r"same shape, got \(4, 2\) and \(4, 3\)"):
        change_scores(torch.zeros(4, 2), torch.zeros(4, 3), "pixel")
    with pytest.raises(ValueError, match=r"same shape, got \(4,\) and \(4,\)"):
        change_scores(torch.zeros(4), torch.zeros(4), "pixel")
    with pytest.raises(ValueError, match="mode must be one of"):
        change_scores(torch.zeros(4, 2), torch.zeros(4, 2), "depth")
    with pytest.raises(ValueError, match=r"change must be \[N\], got shape \(2, 2\)"):
        select_keep(torch.zeros(2, 2), DropPolicy())
    with pytest.raises(ValueError, match=r"keep must be a \[N\] bool tensor, got torch.float32"):
        DropResult(torch.zeros(3), torch.zeros(3), False)
    with pytest.raises(ValueError, match=r"change must have the shape of keep \(3,\), got \(2,\)"):
        DropResult(torch.ones(3, dtype=torch.bool), torch.zeros(2), False)
