"""Synthetic clips have their cuts where they say; the latency benchmark's stream and report are consistent."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from assistant.sources import VideoFileSource
from evaluation.bench_latency import LatencyBenchConfig, StreamRun, format_table, synthetic_updates
from evaluation.synthetic import write_clip


def test_cuts_are_where_the_clip_says(tmp_path) -> None:
    clip = write_clip(tmp_path / "c.mp4", seconds=6, fps=10, width=96, height=64, cut_times=(2.0, 4.5))
    frames = list(VideoFileSource(clip.path))
    assert len(frames) == 60
    diffs = [np.abs(b.image.astype(int) - a.image.astype(int)).mean() for a, b in itertools.pairwise(frames)]
    jumps = [frames[i + 1].t for i, d in enumerate(diffs) if d > 20]
    assert jumps == pytest.approx(list(clip.cut_times))


def test_bad_clip_arguments(tmp_path) -> None:
    with pytest.raises(ValueError, match="positive"):
        write_clip(tmp_path / "x.mp4", seconds=0)


def test_synthetic_updates_keep_the_configured_share() -> None:
    cfg = LatencyBenchConfig(grid=(4, 5), keep_ratio=0.25)
    updates = list(synthetic_updates(cfg, hidden=8, steps=4, interval=4.0))
    assert [u.num_kept for u in updates] == [20, 5, 5, 5]
    assert [u.t_start for u in updates] == [0.0, 2.0, 4.0, 6.0]
    assert updates[2].positions[0].unique().tolist() == [8]
    assert updates[1].embeddings.shape == (5, 8)


def test_table_lists_every_run() -> None:
    run = StreamRun(
        1.0,
        "vigil",
        ttft_s=[0.01, 0.03],
        total_s=[0.1, 0.2],
        prompt_tokens=[30, 30],
        cached_tokens=[900, 900],
        timeline=[{"memory_tokens": 500, "kv_bytes": 2**20}],
    )
    result = {
        "model": "m",
        "device": "cpu",
        "dtype": "float32",
        "torch": "x",
        "runs": [run.summary()],
        "ratios": {"r": 2.0},
    }
    table = format_table(result)
    assert "| 1 min | vigil | 20.0 | 30.0 |" in table and "- r: 2.000" in table
