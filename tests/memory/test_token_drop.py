"""Differential token drop with exact values, in pixel and feature mode."""

from __future__ import annotations

import pytest
import torch

from memory.token_drop import (
    DEFAULT_FEATURE_THRESHOLD,
    DEFAULT_PIXEL_THRESHOLD,
    DifferentialTokenDropper,
    DropPolicy,
    change_scores,
    pixel_token_values,
    select_keep,
)


def _frames(value: float = 0.0, h: int = 56, w: int = 84) -> torch.Tensor:
    return torch.full((2, 3, h, w), value)  # [T, 3, H, W]


def _square(col: int) -> torch.Tensor:
    x = _frames(0.0, 28, 28 * 5)
    x[:, :, :, 28 * col : 28 * (col + 1)] = 1.0
    return x


@pytest.mark.parametrize("mode", ["pixel", "feature"])
def test_identical_frames_drop_everything_after_the_first(mode: str) -> None:
    d = DifferentialTokenDropper(DropPolicy(mode=mode))
    values = pixel_token_values(_frames(0.3), 28) if mode == "pixel" else torch.randn(6, 16)
    results = [d.step(values) for _ in range(4)]
    assert results[0].reset and results[0].num_kept == 6 and results[0].drop_ratio == 0.0
    assert [r.drop_ratio for r in results[1:]] == [1.0, 1.0, 1.0]
    assert results[1].kept_indices.tolist() == []


@pytest.mark.parametrize("mode", ["pixel", "feature"])
def test_hard_cut_keeps_everything(mode: str) -> None:
    d = DifferentialTokenDropper(DropPolicy(mode=mode))
    if mode == "pixel":
        a, b = pixel_token_values(_frames(0.1), 28), pixel_token_values(_frames(0.9), 28)
    else:
        a = torch.eye(6, 8)
        b = -a  # cosine -1 everywhere
    d.step(a)
    r = d.step(b)
    assert r.num_kept == 6 and r.drop_ratio == 0.0 and r.changed_fraction == 1.0


def test_moving_object_keeps_old_and_new_positions() -> None:
    d = DifferentialTokenDropper(DropPolicy(mode="pixel"))
    d.step(pixel_token_values(_square(1), 28))
    r = d.step(pixel_token_values(_square(2), 28))
    assert r.kept_indices.tolist() == [1, 2]
    assert r.drop_ratio == pytest.approx(3 / 5)
    assert r.change.tolist() == pytest.approx([0.0, 1.0, 1.0, 0.0, 0.0])


def test_slow_ramp_is_caught_against_the_last_kept_value() -> None:
    ramp = [pixel_token_values(_frames(0.1 + 0.03 * k), 28) for k in range(8)]
    previous = DifferentialTokenDropper(DropPolicy(mode="pixel", threshold=0.08, reference="previous"))
    assert [previous.step(v).num_kept for v in ramp] == [6, 0, 0, 0, 0, 0, 0, 0]
    last_kept = DifferentialTokenDropper(DropPolicy(mode="pixel", threshold=0.08))
    kept = [last_kept.step(v).num_kept for v in ramp]
    # 0.03 per step: the accumulated change reaches 0.09 >= 0.08 at step 3, then again at step 6
    assert kept == [6, 0, 0, 6, 0, 0, 6, 0]
    assert torch.allclose(last_kept.reference, ramp[6])


def test_feature_threshold_boundary() -> None:
    ref = torch.tensor([[1.0, 0.0]] * 4)
    # cosines 1.0, 0.6, 0.5 (exactly tau: kept, since only > tau drops), 0.0
    new = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.5, 0.75**0.5], [0.0, 1.0]])
    d = DifferentialTokenDropper(DropPolicy(mode="feature", threshold=0.5))
    d.step(ref)
    r = d.step(new)
    assert r.keep.tolist() == [False, False, True, True]
    assert r.change.tolist() == pytest.approx([0.0, 0.4, 0.5, 1.0], abs=1e-6)


def test_budget_mode_drops_exactly_k_with_index_ties() -> None:
    change = torch.tensor([0.5, 0.1, 0.1, 0.9, 0.1])
    keep = select_keep(change, DropPolicy(mode="pixel", drop_ratio=0.5))  # k = floor(2.5) = 2
    assert keep.tolist() == [True, False, False, True, True]
    assert select_keep(change, DropPolicy(mode="pixel", drop_ratio=0.0)).all()


def test_budget_mode_stream() -> None:
    d = DifferentialTokenDropper(DropPolicy(mode="feature", drop_ratio=0.75))
    d.step(torch.randn(8, 4))
    r = d.step(torch.randn(8, 4))
    assert r.num_dropped == 6 and r.num_kept == 2


def test_grid_change_resets() -> None:
    d = DifferentialTokenDropper(DropPolicy(mode="feature"))
    d.step(torch.randn(6, 4))
    r = d.step(torch.randn(8, 4))
    assert r.reset and r.num_kept == 8


def test_bf16_input_and_caller_tensors_untouched() -> None:
    d = DifferentialTokenDropper(DropPolicy(mode="feature"))
    a = torch.randn(6, 16).to(torch.bfloat16)
    a_copy = a.clone()
    d.step(a)
    r = d.step(a.clone())
    assert torch.equal(a, a_copy) and r.drop_ratio == 1.0 and r.change.dtype == torch.float32
    snapshot = d.reference
    snapshot.zero_()
    assert d.step(a).drop_ratio == 1.0  # the copy handed out could not corrupt the state


def test_zero_vectors_do_not_produce_nan() -> None:
    change = change_scores(torch.zeros(3, 4), torch.zeros(3, 4), "feature")
    assert not torch.isnan(change).any()


def test_pixel_token_values_row_major() -> None:
    x = torch.zeros(1, 3, 56, 84)
    for row in range(2):
        for col in range(3):
            x[:, :, 28 * row : 28 * (row + 1), 28 * col : 28 * (col + 1)] = (row * 3 + col) / 10
    v = pixel_token_values(x, 28)
    assert v.shape == (6, 3 * 28 * 28)
    assert v.mean(-1).tolist() == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "depth"}, "drop mode"),
        ({"reference": "first"}, "drop reference"),
        ({"threshold": 0.5, "drop_ratio": 0.5}, "either threshold or drop_ratio"),
        ({"mode": "feature", "threshold": 1.5}, r"feature threshold must be in \[-1, 1\]"),
        ({"mode": "pixel", "threshold": -0.1}, r"pixel threshold must be in \[0, 1\]"),
        ({"drop_ratio": 1.0}, r"drop_ratio must be in \[0, 1\)"),
    ],
)
def test_policy_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DropPolicy(**kwargs)


def test_defaults_and_bad_shapes() -> None:
    assert DropPolicy(mode="feature").effective_threshold == DEFAULT_FEATURE_THRESHOLD
    assert DropPolicy(mode="pixel").effective_threshold == DEFAULT_PIXEL_THRESHOLD
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        DifferentialTokenDropper(DropPolicy()).step(torch.zeros(4))
    with pytest.raises(ValueError, match="multiple of the token size"):
        pixel_token_values(torch.zeros(1, 3, 30, 28), 28)
    with pytest.raises(ValueError, match=r"\[T, 3, H, W\]"):
        pixel_token_values(torch.zeros(3, 28, 28), 28)
