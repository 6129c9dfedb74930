"""Differential token drop: keep the visual tokens of a temporal step that changed since they were last kept.

A temporal step is a grid of N tokens (row-major over the merged grid). Each token is compared with a
reference value at the same position. Feature mode uses the cosine similarity of visual embeddings (drop when
similarity > threshold); pixel mode the mean absolute RGB difference over the token's region, pixels in [0, 1]
(drop when difference < threshold). The reference is the *last kept* value at each position, so slow drift
accumulates until the token is kept again, or (as in TimeChat-Online) the previous step. A budget mode drops a
fixed share of every step instead. The first step, and a step whose grid differs from the reference, is kept
whole.
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

DEFAULT_FEATURE_THRESHOLD = 0.5
"""Feature mode: drop a token when its cosine similarity to the reference exceeds this (TimeChat-Online)."""
DEFAULT_PIXEL_THRESHOLD = 0.08
"""Pixel mode: drop a token when its mean absolute difference (pixels in [0, 1]) is below this."""
COSINE_EPS = 1e-8
"""Norm floor of the cosine similarity: a zero vector has similarity 0 to anything (no NaN)."""
BUDGET_EPS = 1e-9
"""Slack on N * drop_ratio before flooring, so that e.g. 100 * 0.29 drops 29 tokens and not 28."""

DropMode = Literal["pixel", "feature"]
Reference = Literal["last_kept", "previous"]
DROP_MODES: tuple[str, ...] = ("pixel", "feature")
REFERENCES: tuple[str, ...] = ("last_kept", "previous")


def _as_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number or None, got {value!r} ({type(value).__name__})")
    return float(value)


@dataclass(frozen=True, slots=True)
class DropPolicy:
    """How tokens are compared with their reference and which are dropped."""

    mode: DropMode = "feature"
    """'feature': cosine similarity of embeddings; 'pixel': mean absolute difference of pixels in [0, 1]."""
    threshold: float | None = None
    """Feature: drop when similarity > threshold, in [-1, 1] (default 0.5); pixel: drop when difference <
    threshold, in [0, 1] (default 0.08). Exclusive with drop_ratio."""
    drop_ratio: float | None = None
    """Budget mode: drop the floor(N * drop_ratio) least changed tokens of every step, in [0, 1)."""
    reference: Reference = "last_kept"
    """'last_kept': compare with the last kept value at each position; 'previous': with the previous step."""

    def __post_init__(self) -> None:
        if self.mode not in DROP_MODES:
            raise ValueError(f"mode must be one of {DROP_MODES}, got {self.mode!r}")
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {self.reference!r}")
        if self.threshold is not None and self.drop_ratio is not None:
            raise ValueError(
                f"threshold and drop_ratio are mutually exclusive, got threshold={self.threshold!r} and "
                f"drop_ratio={self.drop_ratio!r}: set threshold to drop by change, or drop_ratio for a fixed "
                "budget"
            )
        if self.threshold is not None:
            threshold = _as_float("threshold", self.threshold)
            low = -1.0 if self.mode == "feature" else 0.0
            if not low <= threshold <= 1.0:  # also rejects NaN
                meaning = "cosine similarity" if self.mode == "feature" else "mean absolute pixel difference"
                allowed = f"[{low:g}, 1] for mode {self.mode!r} ({meaning})"
                raise ValueError(f"threshold must be in {allowed}, got {self.threshold!r}")
            object.__setattr__(self, "threshold", threshold)
        if self.drop_ratio is not None:
            ratio = _as_float("drop_ratio", self.drop_ratio)
            if not 0.0 <= ratio < 1.0:  # also rejects NaN
                raise ValueError(f"drop_ratio must be in [0, 1), got {self.drop_ratio!r}")
            object.__setattr__(self, "drop_ratio", ratio)

    @property
    def budget_mode(self) -> bool:
        """Drop a fixed share of every step (drop_ratio set) instead of thresholding the change."""
        return self.drop_ratio is not None

    @property
    def effective_threshold(self) -> float:
        """The threshold in use (budget mode: the one changed_fraction uses); the mode's default if unset."""
        if self.threshold is not None:
            return self.threshold
        return DEFAULT_FEATURE_THRESHOLD if self.mode == "feature" else DEFAULT_PIXEL_THRESHOLD


def changed_mask(change: torch.Tensor, mode: DropMode, threshold: float) -> torch.Tensor:
    """Tokens [N] bool whose change [N] crosses the threshold; threshold mode drops the others.

    Feature: similarity (1 - change) <= threshold; pixel: change >= threshold.
    """
    if mode == "feature":
        # drop when similarity > tau  <=>  keep when similarity <= tau; 1 - change gives back the float32
        # similarity exactly for similarities in [0.5, 1], within 1.2e-7 below
        return (1.0 - change) <= threshold
    return change >= threshold


def change_scores(values: torch.Tensor, reference: torch.Tensor, mode: DropMode) -> torch.Tensor:
    """Per-token change [N] float32 of values [N, C] against reference [N, C].

    Pixel: mean absolute difference; feature: 1 - cosine similarity (in [0, 2], 0 = same direction).
    """
    if mode not in DROP_MODES:
        raise ValueError(f"mode must be one of {DROP_MODES}, got {mode!r}")
    if values.ndim != 2 or values.shape != reference.shape:
        raise ValueError(
            f"values and reference must both be [N, C] with the same shape, got {tuple(values.shape)} "
            f"and {tuple(reference.shape)}"
        )
    v, r = values.float(), reference.float().to(values.device)  # [N, C]
    if mode == "pixel":
        return (v - r).abs().mean(dim=-1)  # [N]
    similarity = F.cosine_similarity(v, r, dim=-1, eps=COSINE_EPS).clamp(-1.0, 1.0)  # [N]
    return 1.0 - similarity


def select_keep(change: torch.Tensor, policy: DropPolicy) -> torch.Tensor:
    """Keep mask [N] bool from change scores [N] (higher = more changed).

    Threshold mode keeps the tokens that changed (see changed_mask). Budget mode drops exactly
    k = floor(N * drop_ratio) tokens, least changed first, ties broken by dropping the lower index first.
    """
    if change.ndim != 1:
        raise ValueError(f"change must be [N], got shape {tuple(change.shape)}")
    if not policy.budget_mode:
        return changed_mask(change, policy.mode, policy.effective_threshold)
    n = change.numel()
    k = min(math.floor(n * policy.drop_ratio + BUDGET_EPS), max(n - 1, 0))
    keep = torch.ones(n, dtype=torch.bool, device=change.device)  # [N]
    if k:
        order = torch.argsort(change, stable=True)  # [N] least changed first, equal changes by index
        keep[order[:k]] = False
    return keep


@dataclass(frozen=True, slots=True)
class DropResult:
    """Which tokens of one step are kept, and how much each changed."""

    keep: torch.Tensor
    """[N] bool."""
    change: torch.Tensor
    """[N] float32: pixel = mean absolute difference to the reference; feature = 1 - cosine similarity
    (0 = same). All zeros on a reset (nothing was compared)."""
    reset: bool
    """The reference was (re)initialised (first step, after reset(), or N / C changed): everything kept."""
    policy: DropPolicy = field(default_factory=DropPolicy)
    """The policy that produced this result; its effective threshold defines changed_fraction."""

    def __post_init__(self) -> None:
        if self.keep.ndim != 1 or self.keep.dtype != torch.bool:
            got = f"{self.keep.dtype} {tuple(self.keep.shape)}"
            raise ValueError(f"keep must be a [N] bool tensor, got {got}")
        if self.change.shape != self.keep.shape:
            raise ValueError(
                f"change must have the shape of keep {tuple(self.keep.shape)}, got {tuple(self.change.shape)}"
            )

    @property
    def num_tokens(self) -> int:
        return int(self.keep.numel())

    @property
    def num_kept(self) -> int:
        return int(self.keep.sum())

    @property
    def num_dropped(self) -> int:
        return self.num_tokens - self.num_kept

    @property
    def drop_ratio(self) -> float:
        """num_dropped / num_tokens (0.0 for an empty step)."""
        return self.num_dropped / self.num_tokens if self.num_tokens else 0.0

    @property
    def kept_indices(self) -> torch.Tensor:
        """[K] long, ascending."""
        return self.keep.nonzero().flatten()

    @property
    def mean_change(self) -> float:
        """Mean change over the step's tokens (0.0 for an empty step or a reset)."""
        return float(self.change.float().mean()) if self.num_tokens else 0.0

    @property
    def max_change(self) -> float:
        """Largest change of the step (0.0 for an empty step or a reset)."""
        return float(self.change.max()) if self.num_tokens else 0.0

    @property
    def changed_fraction(self) -> float:
        """Share of tokens whose change crosses the policy's effective threshold, in budget mode too (a
        scene-change signal independent of the budget). 1.0 on a reset (everything is new), 0.0 if empty."""
        if not self.num_tokens:
            return 0.0
        if self.reset:
            return 1.0
        changed = changed_mask(self.change, self.policy.mode, self.policy.effective_threshold)  # [N]
        return int(changed.sum()) / self.num_tokens


class DifferentialTokenDropper:
    """Stateful per-stream dropper: compares each step with the last kept value at each position."""

    def __init__(self, policy: DropPolicy) -> None:
        if not isinstance(policy, DropPolicy):
            raise ValueError(f"policy must be a DropPolicy, got {type(policy).__name__}")
        self._policy = policy
        self._reference: torch.Tensor | None = None  # [N, C] float32, owned (never aliases a caller's tensor)
        self._steps = 0

    @property
    def policy(self) -> DropPolicy:
        return self._policy

    @property
    def reference(self) -> torch.Tensor | None:
        """A copy of the current reference [N, C] float32 (None before the first step and after reset())."""
        return None if self._reference is None else self._reference.clone()

    @property
    def steps(self) -> int:
        """Steps processed since construction (reset() does not clear it)."""
        return self._steps

    def reset(self) -> None:
        """Forget the reference: the next step is kept whole."""
        self._reference = None

    def step(self, values: torch.Tensor) -> DropResult:
        """Decide for one step; values: [N, C] (pixel: token regions in [0, 1], feature: embeddings)."""
        if not isinstance(values, torch.Tensor) or values.ndim != 2:
            shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
            raise ValueError(f"values must be a [N, C] tensor of token values, got {shape}")
        if not values.is_floating_point():
            raise ValueError(f"values must be floating point (pixels or embeddings), got {values.dtype}")
        if values.shape[1] == 0:
            raise ValueError(f"values need at least one channel per token, got shape {tuple(values.shape)}")
        if not bool(torch.isfinite(values).all()):
            raise ValueError("values contain NaN or infinity; check the frames or the vision encoder output")
        current = values.detach().float()  # [N, C], may alias the caller's tensor: never written to
        self._steps += 1
        reference = self._reference
        if reference is None or reference.shape != current.shape:
            if reference is not None:
                logger.debug("token grid %s -> %s: reference reset", reference.shape, current.shape)
            self._reference = current.clone()
            n = current.shape[0]
            keep = torch.ones(n, dtype=torch.bool, device=current.device)
            return DropResult(keep, torch.zeros(n, device=current.device), True, self._policy)
        if reference.device != current.device:
            reference = self._reference = reference.to(current.device)
        change = change_scores(current, reference, self._policy.mode)  # [N]
        keep = select_keep(change, self._policy)  # [N]
        if self._policy.reference == "last_kept":
            reference[keep] = current[keep]  # dropped positions keep their older value: drift accumulates
        else:
            self._reference = current.clone()
        return DropResult(keep, change, False, self._policy)


def pixel_token_values(frames: torch.Tensor, token_px: int) -> torch.Tensor:
    """Per-token pixel values [N, T*3*token_px*token_px] of frames [T, 3, H, W] in [0, 1].

    N = (H / token_px) * (W / token_px), row-major over the token grid; mean(|a - b|, dim=-1) of two results
    is the mean absolute RGB difference over each token's region across all T frames.
    """
    if isinstance(token_px, bool) or not isinstance(token_px, int) or token_px < 1:
        raise ValueError(f"token_px must be a positive int (28 for Qwen2.5-VL), got {token_px!r}")
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"frames must be [T, 3, H, W] (RGB), got {shape}")
    if not frames.is_floating_point():
        raise ValueError(f"frames must be floating point in [0, 1], got {frames.dtype}; divide uint8 by 255")
    t, c, h, w = frames.shape
    if t == 0:
        raise ValueError("frames must hold at least one frame, got T = 0")
    if h == 0 or w == 0 or h % token_px or w % token_px:
        size = f"frame size {h}x{w}"
        raise ValueError(f"{size} must be a positive multiple of token_px={token_px}; resize or crop it")
    gh, gw = h // token_px, w // token_px
    x = frames.reshape(t, c, gh, token_px, gw, token_px).permute(2, 4, 0, 1, 3, 5)  # [gh, gw, T, 3, px, px]
    return x.reshape(gh * gw, t * c * token_px * token_px)  # [N, T*3*px*px]
