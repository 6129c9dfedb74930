"""The figures at real size on one GPU, in one prepared run: perception throughput, real-time streams per GPU,
time to first token against stream length and re-prefill, KV bytes and peak GPU memory as sessions are added.

``vigil bench gpu`` runs a random-weight real-size architecture (default Qwen2.5-VL-7B, bf16, transformers
engine) and stops starting new parts when its deadline nears, so one call fits a short device lease. Without
CUDA the same code runs as a smoke test with the tiny model (``GpuBenchConfig.smoke``), which CI runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from assistant.config import VigilConfig
from assistant.perception import Perception
from assistant.reaction import EngineFactory
from assistant.session import Session
from assistant.sources import Frame
from evaluation.bench_lag import LagBenchConfig, run_lag
from evaluation.bench_latency import LatencyBenchConfig, rss_bytes, run_latency_bench, synthetic_updates
from evaluation.bench_latency import format_table as format_latency_table


@dataclass(frozen=True, slots=True)
class GpuBenchConfig:
    """What one prepared run measures (defaults: the real-size run on a GPU)."""

    arch: str | None = "qwen2.5-vl-7b"
    """Random-weight architecture preset; None: the tiny test model."""
    dtype: str = "bfloat16"
    fps: float = 2.0
    frame_size: tuple[int, int] = (448, 784)
    """(height, width) of the synthetic frames perception reads."""
    perception_frames: int = 64
    minutes: tuple[float, ...] = (1.0, 10.0, 30.0)
    latency_grid: tuple[int, int] = (16, 28)
    """Tokens per step before the drop in the latency runs (the memory is full within the first minute)."""
    budget_tokens: int = 4096
    sessions: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    capacity_seconds: float = 20.0
    capacity_frame_px: int = 448
    memory_sessions: tuple[int, ...] = (1, 2, 4, 8)
    deadline_s: float = 450.0
    """Parts not started by then are skipped (and listed as such)."""

    @classmethod
    def smoke(cls) -> GpuBenchConfig:
        """The CPU run with the tiny model: every part, small sizes."""
        return cls(
            arch=None,
            dtype="float32",
            frame_size=(112, 168),
            perception_frames=8,
            minutes=(0.1, 0.3),
            latency_grid=(4, 6),
            budget_tokens=256,
            sessions=(1, 2),
            capacity_seconds=4.0,
            capacity_frame_px=112,
            memory_sessions=(1, 2),
        )


def _frames(cfg: GpuBenchConfig) -> list[Frame]:
    """Synthetic frames of a slowly panning scene (56-px blocks) with a hard cut halfway."""
    h, w = cfg.frame_size
    rng = np.random.default_rng(0)
    blocks = [rng.integers(0, 256, (h // 56 + 1, w // 28 + 1, 3), np.uint8) for _ in range(2)]
    scenes = [b.repeat(56, axis=0).repeat(56, axis=1)[:h, : 2 * w] for b in blocks]
    out = []
    for i in range(cfg.perception_frames):
        scene = scenes[0 if i < cfg.perception_frames // 2 else 1]
        shift = (i * 4) % w
        out.append(Frame(i, i / cfg.fps, np.ascontiguousarray(scene[:, shift : shift + w]), i))
    return out


def perception_throughput(adapter: Any, cfg: GpuBenchConfig) -> dict[str, Any]:
    """Frames per second one stream's perception takes (feature-mode drop, the model's own encoder)."""
    perception = Perception.from_config(VigilConfig(perception={"fps": cfg.fps, "drop": {"mode": "feature"}}), adapter)
    frames = _frames(cfg)
    perception.push(frames[0])  # the first step fixes the frame size
    _sync()
    started = time.perf_counter()
    for frame in frames[1:]:
        perception.push(frame)
    _sync()
    seconds = time.perf_counter() - started
    s = perception.stats
    return {
        "frames": len(frames) - 1,
        "seconds": seconds,
        "frames_per_s": (len(frames) - 1) / seconds,
        "realtime_streams": (len(frames) - 1) / seconds / cfg.fps,
        "grid": list(perception.grid or ()),
        "weighted_drop_ratio": s.weighted_drop_ratio,
        "stage_seconds": dict(s.stage_seconds),
    }


def stream_capacity(adapter: Any, make_engine: EngineFactory, cfg: GpuBenchConfig, deadline: float) -> dict[str, Any]:
    """Real-time streams one device holds: the most sessions whose perception lag p95 stays within one frame."""
    interval = 1.0 / cfg.fps
    lag_cfg = LagBenchConfig(
        seconds=cfg.capacity_seconds, fps=cfg.fps, size=cfg.capacity_frame_px, answer_tokens=32, drop_mode="feature"
    )
    runs, held = [], 0
    for n in cfg.sessions:
        if time.monotonic() + cfg.capacity_seconds * 2 > deadline:
            break
        run = asyncio.run(run_lag(adapter, make_engine, n, lag_cfg))
        run["holds"] = run["lag_p95_s"] <= interval and run["frames_dropped"] == 0
        runs.append(run)
        if not run["holds"]:
            break
        held = n
    return {"frame_interval_s": interval, "max_realtime_sessions": held, "runs": runs}


async def _fill(adapter: Any, make_engine: EngineFactory, cfg: GpuBenchConfig, sessions: int) -> dict[str, Any]:
    """``sessions`` sessions on one engine, each memory filled to its budget and prefilled."""
    lat = _latency_config(cfg)
    config = VigilConfig(
        memory={"budget_tokens": cfg.budget_tokens, "archive": "none"},
        engine={"kv_cap_tokens": cfg.budget_tokens * 2 + 4096, "max_new_tokens": 8},
    )
    engine = make_engine(config.engine)
    steps = int(cfg.budget_tokens / (lat.grid[0] * lat.grid[1] * lat.keep_ratio)) + 2
    _reset_peak()
    kv = []
    try:
        for i in range(sessions):
            session = Session(f"mem-{sessions}-{i}", config, adapter, engine)
            await session.start()
            for update in synthetic_updates(lat, adapter.hidden_size, steps, session.perception.time_interval):
                session.remember(update)
            await engine.sync(session.session_id)
            kv.append(engine.session_stats(session.session_id).kv_bytes)
        return {"sessions": sessions, "kv_bytes_per_session": max(kv), "kv_bytes_total": sum(kv), **_memory()}
    finally:
        await engine.shutdown()


def _latency_config(cfg: GpuBenchConfig) -> LatencyBenchConfig:
    return LatencyBenchConfig(
        minutes=cfg.minutes, fps=cfg.fps, grid=cfg.latency_grid, budget_tokens=cfg.budget_tokens, questions=5
    )


def run_gpu_bench(adapter: Any, make_engine: EngineFactory, cfg: GpuBenchConfig) -> dict[str, Any]:
    """Every part that fits before the deadline; each part's figures are taken within this one run."""
    deadline = time.monotonic() + cfg.deadline_s
    result: dict[str, Any] = {"config": dataclasses.asdict(cfg), "device": _device(adapter), "skipped": []}
    parts = (
        ("perception", lambda: perception_throughput(adapter, cfg)),
        ("capacity", lambda: stream_capacity(adapter, make_engine, cfg, deadline)),
        ("latency", lambda: run_latency_bench(adapter, make_engine, _latency_config(cfg))),
        ("memory", lambda: [asyncio.run(_fill(adapter, make_engine, cfg, n)) for n in cfg.memory_sessions]),
    )
    for name, part in parts:
        if time.monotonic() > deadline:
            result["skipped"].append(name)
            continue
        started = time.monotonic()
        result[name] = part()
        result.setdefault("part_seconds", {})[name] = round(time.monotonic() - started, 2)
    return result


def format_gpu_tables(result: dict[str, Any]) -> str:
    """The run as markdown: device, then one table per part."""
    d = result["device"]
    lines = [f"{d['model']} on {d['name']} ({d['dtype']}), torch {d['torch']}", ""]
    if p := result.get("perception"):
        lines += [
            "| perception | frames/s | real-time 2-fps streams | grid | weighted drop |",
            "|---|---|---|---|---|",
            f"| feature mode | {p['frames_per_s']:.1f} | {p['realtime_streams']:.1f} | {p['grid']} "
            f"| {p['weighted_drop_ratio']:.3f} |",
            "",
        ]
    if c := result.get("capacity"):
        lines += ["| sessions | lag p50 (s) | lag p95 (s) | frames dropped | holds |", "|---|---|---|---|---|"]
        lines += [
            f"| {r['sessions']} | {r['lag_p50_s']:.3f} | {r['lag_p95_s']:.3f} | {r['frames_dropped']} | {r['holds']} |"
            for r in c["runs"]
        ]
        lines += [
            "",
            f"- real-time sessions held (lag p95 <= {c['frame_interval_s']:g} s): {c['max_realtime_sessions']}",
            "",
        ]
    if "latency" in result:
        lines += [format_latency_table(result["latency"]), ""]
    if m := result.get("memory"):
        lines += ["| sessions | KV MiB per session | KV MiB total | peak device MiB |", "|---|---|---|---|"]
        lines += [
            f"| {r['sessions']} | {r['kv_bytes_per_session'] / 2**20:.1f} | {r['kv_bytes_total'] / 2**20:.1f} "
            f"| {r['peak_bytes'] / 2**20:.0f} |"
            for r in m
        ]
    if result["skipped"]:
        lines += ["", f"- skipped at the deadline: {', '.join(result['skipped'])}"]
    return "\n".join(lines)


def _device(adapter: Any) -> dict[str, str]:
    cuda = adapter.device.type == "cuda"
    return {
        "model": getattr(adapter, "name", "?"),
        "name": torch.cuda.get_device_name(adapter.device) if cuda else "cpu",
        "dtype": str(adapter.dtype).replace("torch.", ""),
        "torch": torch.__version__,
    }


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _memory() -> dict[str, int]:
    """Peak device memory since the last reset (process RSS on CPU)."""
    if torch.cuda.is_available():
        return {"peak_bytes": int(torch.cuda.max_memory_allocated())}
    return {"peak_bytes": rss_bytes()}
