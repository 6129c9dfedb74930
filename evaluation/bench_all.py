"""The whole efficiency protocol in one run: perception throughput, question latency against re-prefill,
memory over stream time, perception lag during generation, and scene-change timing."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

from assistant.config import PerceptionConfig
from assistant.perception import Perception
from assistant.reaction import EngineFactory
from assistant.sources import VideoFileSource
from evaluation.bench_lag import LagBenchConfig, format_lag_table, run_lag_bench
from evaluation.bench_latency import LatencyBenchConfig, format_table, run_latency_bench, write_outputs
from evaluation.bench_scene import format_scene_table, run_scene_bench
from evaluation.synthetic import write_clip
from serving.bench_tools import write_report


def perception_throughput(adapter: Any, video: str, fps: float = 2.0) -> list[dict[str, Any]]:
    """Frames per second, real-time factor and per-stage time of perception, pixel and feature mode."""
    rows = []
    for mode, model in (("pixel", None), ("feature", adapter)):
        perception = Perception(PerceptionConfig(fps=fps, drop={"mode": mode}), model)
        started = time.perf_counter()
        with VideoFileSource(video, fps=fps) as source:
            for _ in perception.run(source):
                pass
        seconds = time.perf_counter() - started
        s = perception.stats
        rows.append(
            {
                "mode": mode,
                "frames": s.frames,
                "seconds": seconds,
                "frames_per_s": s.frames / seconds,
                "realtime_factor": s.frames / seconds / fps,
                "grid": list(perception.grid or ()),
                "weighted_drop_ratio": s.weighted_drop_ratio,
                "mean_drop_ratio": s.mean_drop_ratio,
                "stage_seconds": s.stage_seconds,
            }
        )
    return rows


def format_perception_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| mode | frames | frames/s | real-time factor | weighted drop | mean drop | preprocess / encode / drop (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        st = r["stage_seconds"]
        lines.append(
            f"| {r['mode']} | {r['frames']} | {r['frames_per_s']:.1f} | {r['realtime_factor']:.1f}x "
            f"| {r['weighted_drop_ratio']:.3f} | {r['mean_drop_ratio']:.3f} "
            f"| {st.get('preprocess', 0):.2f} / {st.get('encode', 0):.2f} / {st.get('drop', 0):.2f} |"
        )
    return "\n".join(lines)


def run_all(adapter: Any, make_engine: EngineFactory, out_dir: str | Path, quick: bool = False) -> dict[str, Any]:
    """Run every benchmark; JSON, markdown tables and plots go to ``out_dir``; returns the combined result."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        clip = write_clip(Path(tmp) / "cuts.mp4", seconds=20 if quick else 60, cut_times=(7.0, 15.5, 24.0, 31.0, 47.0))
        perception = perception_throughput(adapter, clip.path)
        scene = run_scene_bench(clip.path, fps=4.0, frames_per_step=1, cut_times=clip.cut_times)
    latency_cfg = LatencyBenchConfig(minutes=(0.5, 2.0) if quick else (1.0, 10.0, 60.0), questions=3 if quick else 5)
    latency = run_latency_bench(adapter, make_engine, latency_cfg)
    write_outputs(latency, out)
    lag_cfg = LagBenchConfig(sessions=(1, 2) if quick else (1, 4, 8), seconds=5.0 if quick else 20.0)
    lag = run_lag_bench(adapter, make_engine, lag_cfg)
    result = {
        "model": getattr(adapter, "name", "?"),
        "device": str(adapter.device),
        "perception": perception,
        "latency": latency,
        "lag": lag,
        "scene": dataclasses.asdict(scene),
    }
    summary = "\n\n".join(
        [
            f"# Vigil efficiency suite\n\nmodel {result['model']} on {result['device']}",
            "## Perception\n\n" + format_perception_table(perception),
            "## Question latency and memory\n\n" + format_table(latency),
            "## Perception lag during generation\n\n" + format_lag_table(lag),
            "## Scene-change timing (synthetic hard cuts)\n\n" + format_scene_table(scene),
        ]
    )
    write_report(out, "summary", result, summary)
    return result
