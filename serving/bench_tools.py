"""What the efficiency benchmarks share: nearest-rank percentiles, JSON + markdown reports, a synthetic stream.

The synthetic stream stands in for perception: random visual tokens at the share differential token drop keeps,
with honest grid positions, so a benchmark measures the memory and the engine alone.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from assistant.events import PerceptionUpdate


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def write_report(out_dir: str | os.PathLike, name: str, result: Any, table: str) -> list[Path]:
    """``name.json`` (the result) and ``name.md`` (the table) in ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.json", out / f"{name}.md"]
    paths[0].write_text(json.dumps(result, indent=2))
    paths[1].write_text(table + "\n")
    return paths


class StreamShape(Protocol):
    """The shape of a synthetic stream (``SyntheticStream``, or a benchmark config with these fields)."""

    @property
    def fps(self) -> float: ...
    @property
    def frames_per_step(self) -> int: ...
    @property
    def grid(self) -> tuple[int, int]: ...
    @property
    def keep_ratio(self) -> float: ...
    @property
    def seed(self) -> int: ...


@dataclass(frozen=True, slots=True)
class SyntheticStream:
    """A synthetic stream: sampled ``fps``, frames per temporal step, token grid, kept share, random seed."""

    fps: float = 1.0
    grid: tuple[int, int] = (8, 8)
    keep_ratio: float = 0.2
    seed: int = 0
    frames_per_step: int = 2


def synthetic_updates(cfg: StreamShape, hidden: int, steps: int, interval: float) -> Iterator[PerceptionUpdate]:
    """Perception updates with random kept tokens (the kept share of differential token drop)."""
    import torch

    from assistant.events import PerceptionUpdate
    from assistant.models.preprocess import vision_positions

    gen = torch.Generator().manual_seed(cfg.seed)
    gh, gw = cfg.grid
    n = gh * gw
    k = max(1, round(n * cfg.keep_ratio))
    seconds = cfg.frames_per_step / cfg.fps
    for step in range(steps):
        kept = n if step == 0 else k
        idx = torch.randperm(n, generator=gen)[:kept].sort().values
        emb = torch.randn(kept, hidden, generator=gen) * 0.02  # [kept, hidden]
        yield PerceptionUpdate(
            step=step,
            t_start=step * seconds,
            t_end=(step + 1) * seconds,
            frame_indices=tuple(range(step * cfg.frames_per_step, (step + 1) * cfg.frames_per_step)),
            grid=(gh, gw),
            kept_indices=idx,
            positions=vision_positions(step, gh, gw, interval)[:, idx],
            drop_ratio=1 - kept / n,
            mean_change=0.0,
            changed_fraction=kept / n,
            reset=step == 0,
            embeddings=emb,
            features=emb,
        )
