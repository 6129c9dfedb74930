"""Frame preprocessing for patch-based vision towers, without torchvision.

Frames are resized to multiples of the token size within a pixel budget, scaled to [0, 1], normalised with
the model's mean/std and cut into the flat patch layout the Qwen-VL family expects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_ASPECT_RATIO = 200


@dataclass(frozen=True, slots=True)
class VisualGeometry:
    """How a model cuts frames into visual tokens."""

    patch_size: int = 14
    """Side of one vision patch in pixels."""
    merge_size: int = 2
    """Patches merged per side into one language-model token (2 -> a 2x2 block)."""
    temporal_patch_size: int = 2
    """Frames stacked into one temporal grid step."""
    min_pixels: int = 56 * 56
    """Smallest resized frame area."""
    max_pixels: int = 28 * 28 * 1280
    """Largest resized frame area (the per-frame token budget times the token area)."""
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD

    def __post_init__(self) -> None:
        for name in ("patch_size", "merge_size", "temporal_patch_size", "min_pixels", "max_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"VisualGeometry.{name} must be >= 1, got {getattr(self, name)}")
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) must not exceed max_pixels ({self.max_pixels})")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need three channels, std > 0")

    @property
    def token_px(self) -> int:
        """Side in pixels of the square region one language-model token covers."""
        return self.patch_size * self.merge_size

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """Resized (height, width) for a frame of this size."""
        return smart_resize(height, width, self.token_px, self.min_pixels, self.max_pixels)

    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        """Language-model token grid (rows, cols) of a frame already resized to (height, width)."""
        return height // self.token_px, width // self.token_px


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Size divisible by ``factor``, area within [min_pixels, max_pixels], aspect ratio kept (Qwen-VL rule)."""
    if height < 1 or width < 1:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(f"aspect ratio of a {width}x{height} frame exceeds {MAX_ASPECT_RATIO}:1")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def to_unit_tensor(frames: list[np.ndarray] | np.ndarray | torch.Tensor) -> torch.Tensor:
    """Stack uint8 RGB frames [H, W, 3] into a float tensor [T, 3, H, W] in [0, 1]."""
    if isinstance(frames, list):
        if not frames:
            raise ValueError("no frames given")
        shapes = {f.shape for f in frames}
        if len(shapes) != 1:
            raise ValueError(f"frames of one step must share a size, got {sorted(shapes)}")
        frames = np.stack(frames)
    x = torch.as_tensor(frames)
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected RGB frames [T, H, W, 3], got shape {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2).float().div_(255.0)  # [T, 3, H, W]


def resize_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic, antialiased resize of [T, 3, H, W] frames in [0, 1] to ``size`` = (height, width)."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    out = F.interpolate(frames, size=size, mode="bicubic", antialias=True, align_corners=False)
    return out.clamp_(0.0, 1.0)  # [T, 3, h, w]


def normalize(frames: torch.Tensor, geometry: VisualGeometry) -> torch.Tensor:
    """Apply the model's per-channel mean/std to [T, 3, H, W] frames in [0, 1]."""
    mean = torch.tensor(geometry.mean, dtype=frames.dtype).view(1, 3, 1, 1)
    std = torch.tensor(geometry.std, dtype=frames.dtype).view(1, 3, 1, 1)
    return (frames - mean) / std


def pad_temporal(frames: torch.Tensor, temporal_patch_size: int) -> torch.Tensor:
    """Repeat the last frame so the frame count is a multiple of the temporal patch size."""
    remainder = frames.shape[0] % temporal_patch_size
    if remainder == 0:
        return frames
    pad = frames[-1:].expand(temporal_patch_size - remainder, *frames.shape[1:])
    return torch.cat([frames, pad], dim=0)


def patchify(frames: torch.Tensor, geometry: VisualGeometry) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Cut normalised frames into the flat patch layout of the vision tower.

    frames: [T, C, H, W] with H, W multiples of ``geometry.token_px``; T is padded to the temporal patch size.
    Returns patches [grid_t * grid_h * grid_w, C * temporal_patch * patch * patch] and the grid (t, h, w) in
    patches, ordered so that each merge_size x merge_size block of patches is contiguous.
    """
    p, m, tp = geometry.patch_size, geometry.merge_size, geometry.temporal_patch_size
    frames = pad_temporal(frames, tp)
    t, c, h, w = frames.shape
    if h % (p * m) or w % (p * m):
        raise ValueError(f"frame size {h}x{w} is not a multiple of the token size {p * m}")
    gt, gh, gw = t // tp, h // p, w // p
    x = frames.reshape(gt, tp, c, gh // m, m, p, gw // m, m, p)
    # -> [gt, gh/m, gw/m, m, m, c, tp, p, p]
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gt * gh * gw, c * tp * p * p).contiguous(), (gt, gh, gw)


def vision_positions(step: int, grid_h: int, grid_w: int, time_interval: float, start: int = 0) -> torch.Tensor:
    """Original M-RoPE (t, h, w) positions [3, grid_h * grid_w] of one temporal step's tokens.

    ``grid_h`` and ``grid_w`` count language-model tokens (after merging); ``time_interval`` is the temporal
    position spacing between steps. Same arithmetic as the stock Qwen-VL ``get_vision_position_ids``.
    """
    t = int((torch.tensor([step]) * time_interval).long().item()) + start
    hh, ww = torch.meshgrid(torch.arange(grid_h) + start, torch.arange(grid_w) + start, indexing="ij")
    tt = torch.full_like(hh, t)
    return torch.stack([tt, hh, ww]).reshape(3, -1)  # [3, gh * gw]
