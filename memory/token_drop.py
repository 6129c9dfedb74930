"""Differential token drop: keep the visual tokens of a temporal step that changed since they were last kept.

Each token of a step is compared with a reference value at the same grid position. Feature mode uses the cosine
similarity of visual embeddings (drop when similarity > threshold); pixel mode the mean absolute RGB difference
of the token's region in [0, 1] (drop when difference < threshold). The reference is the *last kept* value at
each position, so slow drift accumulates until the token is kept again (or, as in TimeChat-Online, the previous
step). A budget mode drops a fixed share of each step instead. The first step is always kept whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

DEFAULT_FEATURE_THRESHOLD = 0.5
"""Feature mode: drop a token when its cosine similarity to the reference exceeds this (TimeChat-Online's tau)."""
DEFAULT_PIXEL_THRESHOLD = 0.08
"""Pixel mode: drop a token when its mean absolute difference (values in [0, 1]) is below this."""
COSINE_EPS = 1e-8

DropMode = Literal["pixel", "feature"]
Reference = Literal["last_kept", "previous"]


@dataclass(frozen=True, slots=True)
class DropPolicy:
    """How tokens are compared and which are dropped."""

    mode: DropMode = "feature"
    threshold: float | None = None
    """Feature: drop when cosine similarity > threshold; pixel: drop when mean |diff| < threshold (None: default)."""
    drop_ratio: float | None = None
    """Budget mode: drop floor(N * drop_ratio) most similar tokens of every step (exclusive with threshold)."""
    reference: Reference = "last_kept"
    """Compare with the last kept value at each position, or with the previous step."""

    def __post_init__(self) -> None:
        if self.mode not in ("pixel", "feature"):
            raise ValueError(f"drop mode must be 'pixel' or 'feature', got {self.mode!r}")
        if self.reference not in ("last_kept", "previous"):
            raise ValueError(f"drop reference must be 'last_kept' or 'previous', got {self.reference!r}")
        if self.threshold is not None and self.drop_ratio is not None:
            raise ValueError("set either threshold or drop_ratio, not both")
        if self.threshold is not None:
            low = -1.0 if self.mode == "feature" else 0.0
            if not (low <= self.threshold <= 1.0) or math.isnan(self.threshold):
                raise ValueError(f"{self.mode} threshold must be in [{low:g}, 1], got {self.threshold}")
        if self.drop_ratio is not None and not (0.0 <= self.drop_ratio < 1.0):
            raise ValueError(f"drop_ratio must be in [0, 1), got {self.drop_ratio}")

    @property
    def budget_mode(self) -> bool:
        return self.drop_ratio is not None

    @property
    def effective_threshold(self) -> float:
        if self.threshold is not None:
            return self.threshold
        return DEFAULT_FEATURE_THRESHOLD if self.mode == "feature" else DEFAULT_PIXEL_THRESHOLD

    @property
    def change_threshold(self) -> float:
        """The threshold on the change score: a token changed when its change >= this."""
        t = self.effective_threshold
        return 1.0 - t if self.mode == "feature" else t


@dataclass(frozen=True, slots=True)
class DropResult:
    """Which tokens of one step are kept, and how much each changed."""

    keep: torch.Tensor
    """[N] bool."""
    change: torch.Tensor
    """[N] float32: pixel = mean |diff| to the reference; feature = 1 - cosine similarity (0 = identical)."""
    reset: bool
    """The reference was (re)initialised and everything kept."""
    change_threshold: float
    """Change at or above which a token counts as changed."""

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
        return self.num_dropped / self.num_tokens if self.num_tokens else 0.0

    @property
    def kept_indices(self) -> torch.Tensor:
        """[K] long, ascending."""
        return self.keep.nonzero().squeeze(1)

    @property
    def mean_change(self) -> float:
        return float(self.change.mean()) if self.num_tokens else 0.0

    @property
    def max_change(self) -> float:
        return float(self.change.max()) if self.num_tokens else 0.0

    @property
    def changed_fraction(self) -> float:
        """Share of tokens whose change crosses the threshold (1.0 on a reset)."""
        if not self.num_tokens:
            return 0.0
        if self.reset:
            return 1.0
        return float((self.change >= self.change_threshold).float().mean())


def change_scores(values: torch.Tensor, reference: torch.Tensor, mode: DropMode) -> torch.Tensor:
    """Per-token change [N] of values [N, C] against reference [N, C] (float32)."""
    v, r = values.float(), reference.float()
    if mode == "pixel":
        return (v - r).abs().mean(dim=-1)
    return 1.0 - F.cosine_similarity(v, r, dim=-1, eps=COSINE_EPS)


def select_keep(change: torch.Tensor, policy: DropPolicy) -> torch.Tensor:
    """Keep mask [N] from change scores [N]."""
    n = change.numel()
    if policy.budget_mode:
        k = math.floor(n * policy.drop_ratio)
        keep = torch.ones(n, dtype=torch.bool, device=change.device)
        if k:
            order = torch.argsort(change, stable=True)  # least changed first, ties by lower index
            keep[order[:k]] = False
        return keep
    if policy.mode == "feature":
        # drop when similarity > tau  <=>  keep when 1 - change <= tau
        return (1.0 - change) <= policy.effective_threshold
    return change >= policy.effective_threshold


class DifferentialTokenDropper:
    """Stateful per-stream dropper: compares each step with the last kept value at each position."""

    def __init__(self, policy: DropPolicy) -> None:
        self.policy = policy
        self._reference: torch.Tensor | None = None  # [N, C] float32
        self._steps = 0

    @property
    def reference(self) -> torch.Tensor | None:
        """A copy of the current reference [N, C]."""
        return None if self._reference is None else self._reference.clone()

    @property
    def steps(self) -> int:
        return self._steps

    def reset(self) -> None:
        """Forget the reference: the next step is kept whole."""
        self._reference = None

    def step(self, values: torch.Tensor) -> DropResult:
        """Decide for one step's tokens; values: [N, C] (pixels in [0, 1] or embeddings)."""
        if values.ndim != 2:
            raise ValueError(f"expected token values [N, C], got shape {tuple(values.shape)}")
        current = values.detach().float()
        self._steps += 1
        threshold = self.policy.change_threshold
        ref = self._reference
        if ref is None or ref.shape != current.shape or ref.device != current.device:
            self._reference = current.clone()
            n = current.shape[0]
            return DropResult(
                torch.ones(n, dtype=torch.bool, device=current.device),
                torch.zeros(n, device=current.device),
                True,
                threshold,
            )
        change = change_scores(current, ref, self.policy.mode)
        keep = select_keep(change, self.policy)
        if self.policy.reference == "last_kept":
            self._reference[keep] = current[keep]
        else:
            self._reference = current.clone()
        return DropResult(keep, change, False, threshold)


def pixel_token_values(frames: torch.Tensor, token_px: int) -> torch.Tensor:
    """Per-token pixel values [N, T*3*token_px*token_px] of frames [T, 3, H, W] in [0, 1], row-major tokens."""
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"expected frames [T, 3, H, W], got shape {tuple(frames.shape)}")
    t, c, h, w = frames.shape
    if token_px < 1 or h % token_px or w % token_px:
        raise ValueError(f"frame size {h}x{w} is not a multiple of the token size {token_px}")
    gh, gw = h // token_px, w // token_px
    x = frames.reshape(t, c, gh, token_px, gw, token_px).permute(2, 4, 0, 1, 3, 5)  # [gh, gw, T, 3, px, px]
    return x.reshape(gh * gw, t * c * token_px * token_px)
