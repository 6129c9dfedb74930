"""Perception: sampled frames -> temporal steps -> (encoder) -> differential token drop -> kept tokens."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from assistant.config import PerceptionConfig, VigilConfig
from assistant.events import STAGES, PerceptionUpdate
from assistant.models.base import VisionLanguageAdapter
from assistant.models.preprocess import (
    VisualGeometry,
    normalize,
    patchify,
    resize_frames,
    to_unit_tensor,
    vision_positions,
)
from assistant.sources import Frame
from memory.token_drop import DifferentialTokenDropper, pixel_token_values

DEFAULT_TOKENS_PER_SECOND = 2.0
"""Temporal position spacing per second when no model is loaded (Qwen2.5-VL's)."""
PIXEL_DESCRIPTOR_CELLS = 4
"""A token's pixel descriptor is its region average-pooled to CELLS x CELLS x RGB."""
COLOUR_BINS = 8
"""Bins per channel (Y, U, V) of a frame's colour histogram."""
COLOUR_SAMPLE_WIDTH = 64
"""A frame's colour histogram counts about this many pixels per row (a strided subsample)."""


@dataclass(frozen=True, slots=True)
class FrameSignal:
    """What one sampled frame says before it is merged into a temporal step."""

    index: int
    t: float
    colour_change: float | None
    """Half the L1 distance between its colour histogram and the previous frame's, in [0, 1] (the share of pixels
    that moved to another colour bin); None for the first frame of a stream."""


def colour_histogram(image: np.ndarray) -> np.ndarray:
    """Normalised joint YUV histogram [COLOUR_BINS**3] of an RGB frame [H, W, 3] uint8 (strided subsample)."""
    stride = max(1, image.shape[1] // COLOUR_SAMPLE_WIDTH)
    x = image[::stride, ::stride].reshape(-1, 3).astype(np.float32)  # [P, 3]
    y = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # [P] BT.601 luma
    u = (x[:, 2] - y) * 0.564 + 128.0
    v = (x[:, 0] - y) * 0.713 + 128.0
    bins = [np.clip((c * (COLOUR_BINS / 256.0)).astype(np.int64), 0, COLOUR_BINS - 1) for c in (y, u, v)]
    index = (bins[0] * COLOUR_BINS + bins[1]) * COLOUR_BINS + bins[2]  # [P]
    hist = np.bincount(index, minlength=COLOUR_BINS**3).astype(np.float64)
    return hist / hist.sum()


@dataclass(slots=True)
class PerceptionStats:
    """Running totals of a perception stream."""

    frames: int = 0
    steps: int = 0
    tokens: int = 0
    kept: int = 0
    drop_ratio_sum: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    @property
    def weighted_drop_ratio(self) -> float:
        """Dropped tokens over all tokens."""
        return 1.0 - self.kept / self.tokens if self.tokens else 0.0

    @property
    def mean_drop_ratio(self) -> float:
        """Mean of the per-step drop ratios."""
        return self.drop_ratio_sum / self.steps if self.steps else 0.0

    def add(self, update: PerceptionUpdate, frames: int) -> None:
        self.frames += frames
        self.steps += 1
        self.tokens += update.num_tokens
        self.kept += update.num_kept
        self.drop_ratio_sum += update.drop_ratio
        for stage, seconds in update.timings.items():
            self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds


def pixel_descriptors(frames: torch.Tensor, token_px: int, cells: int = PIXEL_DESCRIPTOR_CELLS) -> torch.Tensor:
    """Compact per-token pixel vectors [N, 3 * cells * cells] from frames [T, 3, H, W] in [0, 1]."""
    pooled = F.avg_pool2d(frames.mean(0, keepdim=True), token_px // cells)  # [1, 3, gh*cells, gw*cells]
    _, c, hh, ww = pooled.shape
    gh, gw = hh // cells, ww // cells
    x = pooled.reshape(c, gh, cells, gw, cells).permute(1, 3, 0, 2, 4)  # [gh, gw, 3, cells, cells]
    return x.reshape(gh * gw, c * cells * cells)


class Perception:
    """Turns a stream of sampled frames into PerceptionUpdates, one per temporal step."""

    def __init__(
        self,
        config: PerceptionConfig,
        adapter: VisionLanguageAdapter | None = None,
        *,
        geometry: VisualGeometry | None = None,
        need_embeddings: bool = False,
        keep_frames: bool = False,
    ) -> None:
        self.config = config
        self.keep_frames = keep_frames
        """Attach each step's resized frames to its update (engines that encode raw frames)."""
        self.adapter = adapter
        self.geometry = geometry or (adapter.geometry if adapter is not None else VisualGeometry())
        self.frames_per_step = config.frames_per_step or self.geometry.temporal_patch_size
        if self.frames_per_step > self.geometry.temporal_patch_size:
            raise ValueError(
                f"frames_per_step {self.frames_per_step} exceeds the model's temporal patch size "
                f"{self.geometry.temporal_patch_size}; use a value from 1 to {self.geometry.temporal_patch_size}"
            )
        self.seconds_per_step = self.frames_per_step / config.fps
        self.encodes = config.encode == "always" or (
            config.encode == "auto" and (config.drop.mode == "feature" or need_embeddings)
        )
        if self.encodes and adapter is None:
            raise ValueError(
                "the vision encoder is needed (feature-mode drop or an engine that takes embeddings) but no "
                "model was given; load one (e.g. --model tiny) or use pixel-mode drop"
            )
        if self.geometry.token_px % PIXEL_DESCRIPTOR_CELLS:
            raise ValueError(f"token size {self.geometry.token_px} px is not a multiple of {PIXEL_DESCRIPTOR_CELLS}")
        self.time_interval = (
            adapter.time_interval(self.seconds_per_step)
            if adapter is not None
            else DEFAULT_TOKENS_PER_SECOND * self.seconds_per_step
        )
        self.dropper = DifferentialTokenDropper(config.drop)
        self.stats = PerceptionStats()
        self.size: tuple[int, int] | None = None
        """Resized (height, width) of every frame, fixed by the first frame."""
        self._pending: list[Frame] = []
        self._histogram: np.ndarray | None = None
        self.frame_signal: FrameSignal | None = None
        """The signal of the newest pushed frame (read it after each ``push``)."""

    @classmethod
    def from_config(
        cls,
        config: VigilConfig,
        adapter: VisionLanguageAdapter | None = None,
        *,
        need_embeddings: bool = False,
        keep_frames: bool = False,
    ) -> Perception:
        """Build from the whole config tree, applying the model section's pixel limits."""
        base = adapter.geometry if adapter is not None else VisualGeometry()
        overrides = {
            k: v
            for k, v in (("max_pixels", config.model.max_pixels), ("min_pixels", config.model.min_pixels))
            if v is not None
        }
        geometry = dataclasses.replace(base, **overrides)
        return cls(
            config.perception, adapter, geometry=geometry, need_embeddings=need_embeddings, keep_frames=keep_frames
        )

    @property
    def grid(self) -> tuple[int, int] | None:
        """Token grid (rows, cols) once the first frame fixed the size."""
        return self.geometry.token_grid(*self.size) if self.size else None

    def push(self, frame: Frame) -> PerceptionUpdate | None:
        """Add one sampled frame; returns an update when it completes a temporal step."""
        self.frame_signal = self._signal(frame)
        self._pending.append(frame)
        if len(self._pending) < self.frames_per_step:
            return None
        return self._process_step()

    def flush(self) -> PerceptionUpdate | None:
        """Process a partial last step (its last frame repeated), if any."""
        return self._process_step() if self._pending else None

    def run(self, frames: Iterable[Frame]) -> Iterator[PerceptionUpdate]:
        """Updates for a whole frame stream, including the partial last step."""
        for frame in frames:
            update = self.push(frame)
            if update is not None:
                yield update
        last = self.flush()
        if last is not None:
            yield last

    def reset(self) -> None:
        """Forget the drop reference and buffered frames (the next step keeps everything)."""
        self.dropper.reset()
        self._pending.clear()
        self._histogram = None

    def _signal(self, frame: Frame) -> FrameSignal:
        histogram = colour_histogram(frame.image)
        change = None if self._histogram is None else 0.5 * float(np.abs(histogram - self._histogram).sum())
        self._histogram = histogram
        return FrameSignal(frame.index, frame.t, change)

    def _process_step(self) -> PerceptionUpdate:
        frames, self._pending = self._pending, []
        step = self.stats.steps
        timings = {}

        # 1. preprocess: RGB [0, 1], resized to the stream's fixed size
        t0 = time.perf_counter()
        if self.size is None:
            h, w = frames[0].image.shape[:2]
            self.size = self.geometry.target_size(h, w)
        x = torch.cat([resize_frames(to_unit_tensor(f.image), self.size) for f in frames])  # [T, 3, H, W]
        gh, gw = self.geometry.token_grid(*self.size)
        timings["preprocess"] = time.perf_counter() - t0

        # 2. encode: visual tokens [N, D]
        embeddings = None
        if self.encodes:
            t0 = time.perf_counter()
            patches, grid_thw = patchify(normalize(x, self.geometry), self.geometry)
            embeddings = self.adapter.encode(patches, grid_thw)  # [gh * gw, D]
            timings["encode"] = time.perf_counter() - t0

        # 3. drop against the last kept value at each position
        t0 = time.perf_counter()
        # values: [N, T*3*px*px] pixels or [N, D] embeddings (without Qwen3-VL's DeepStack levels)
        main = _main_embeddings(embeddings, getattr(self.adapter, "deepstack_levels", 0))
        values = pixel_token_values(x, self.geometry.token_px) if self.config.drop.mode == "pixel" else main
        result = self.dropper.step(values)
        kept = result.kept_indices
        positions = vision_positions(step, gh, gw, self.time_interval)[:, kept]  # [3, K]
        kept_embeddings = embeddings[kept] if embeddings is not None else None
        features = (
            _main_embeddings(kept_embeddings, getattr(self.adapter, "deepstack_levels", 0))
            if kept_embeddings is not None
            else pixel_descriptors(x, self.geometry.token_px)[kept]
        )
        timings["drop"] = time.perf_counter() - t0

        t_start = frames[0].t
        update = PerceptionUpdate(
            step=step,
            t_start=t_start,
            t_end=t_start + self.seconds_per_step,
            frame_indices=tuple(f.index for f in frames),
            grid=(gh, gw),
            kept_indices=kept,
            positions=positions,
            drop_ratio=result.drop_ratio,
            mean_change=result.mean_change,
            changed_fraction=result.changed_fraction,
            reset=result.reset,
            embeddings=kept_embeddings,
            features=features,
            frames=_as_uint8_frames(x) if self.keep_frames else None,
            timings=timings,
        )
        self.stats.add(update, len(frames))
        return update


def _as_uint8_frames(x: torch.Tensor) -> torch.Tensor:
    """[T, 3, H, W] in [0, 1] -> [T, H, W, 3] uint8."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _main_embeddings(embeddings: torch.Tensor | None, levels: int) -> torch.Tensor | None:
    """[N, D] the visual embeddings of rows [N, D * (1 + levels)] (a view; the rows themselves when levels = 0)."""
    if embeddings is None or levels == 0:
        return embeddings
    return embeddings[:, : embeddings.shape[1] // (1 + levels)]
