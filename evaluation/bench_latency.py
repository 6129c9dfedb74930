"""Question latency and memory as a stream grows: Vigil's KV memory against re-prefilling the context.

A synthetic stream (random visual tokens with the kept share differential token drop leaves) is fed through a
real session (bounded memory + engine) for N minutes of stream time; then questions are asked. The baseline
engine re-prefills the whole visible context for every question, as TimeChat-Online does.
"""

from __future__ import annotations

import asyncio
import os
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from assistant.config import VigilConfig
from assistant.reaction import AnswerDone, EngineFactory
from assistant.session import Session
from serving.bench_tools import percentile, synthetic_updates, write_report

QUESTIONS = (
    "What is happening right now?",
    "What color was the car?",
    "How many people entered the room?",
    "Describe the scene in one sentence.",
    "Did anything change in the last minute?",
)


@dataclass(frozen=True, slots=True)
class LatencyBenchConfig:
    """What to measure."""

    minutes: tuple[float, ...] = (1.0, 10.0, 60.0)
    fps: float = 1.0
    frames_per_step: int = 2
    grid: tuple[int, int] = (8, 8)
    keep_ratio: float = 0.2
    questions: int = 5
    max_new_tokens: int = 16
    budget_tokens: int = 4096
    samples: int = 12
    seed: int = 0


@dataclass(slots=True)
class StreamRun:
    """One stream length under one engine mode."""

    minutes: float
    mode: str
    ttft_s: list[float] = field(default_factory=list)
    total_s: list[float] = field(default_factory=list)
    prompt_tokens: list[int] = field(default_factory=list)
    cached_tokens: list[int] = field(default_factory=list)
    timeline: list[dict[str, float]] = field(default_factory=list)
    ingest_seconds: float = 0.0
    steps: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "minutes": self.minutes,
            "mode": self.mode,
            "steps": self.steps,
            "ttft_p50_s": statistics.median(self.ttft_s),
            "ttft_p95_s": percentile(self.ttft_s, 0.95),
            "total_p50_s": statistics.median(self.total_s),
            "total_p95_s": percentile(self.total_s, 0.95),
            "prompt_tokens": statistics.median(self.prompt_tokens),
            "cached_tokens": statistics.median(self.cached_tokens),
            "ingest_seconds": self.ingest_seconds,
            "final_memory_tokens": self.timeline[-1]["memory_tokens"] if self.timeline else 0,
            "final_kv_bytes": self.timeline[-1]["kv_bytes"] if self.timeline else 0,
        }


def rss_bytes() -> int:
    """Resident set size of this process."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def run_stream(
    adapter: Any, make_engine: EngineFactory, cfg: LatencyBenchConfig, minutes: float, reuse_kv: bool
) -> StreamRun:
    """Feed ``minutes`` of synthetic stream through a session, then ask the questions."""
    config = VigilConfig(
        perception={"fps": cfg.fps, "frames_per_step": cfg.frames_per_step},
        memory={"budget_tokens": cfg.budget_tokens, "archive": "none"},
        engine={
            "max_new_tokens": cfg.max_new_tokens,
            "kv_cap_tokens": cfg.budget_tokens * 2 + 4096,
            "reuse_kv": reuse_kv,
            "text_window_tokens": 256,
        },
    )
    engine = make_engine(config.engine)
    session = Session(f"bench-{minutes}-{reuse_kv}", config, adapter, engine)
    await session.start()
    run = StreamRun(minutes, "vigil" if reuse_kv else "reprefill")
    steps = max(1, round(minutes * 60 * cfg.fps / cfg.frames_per_step))
    sample_every = max(1, steps // cfg.samples)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        interval = session.perception.time_interval
        for update in synthetic_updates(cfg, adapter.hidden_size, steps, interval):
            session.remember(update)
            await engine.sync(session.session_id)  # the engine is idle between questions: prefill as frames arrive
            if update.step % sample_every == 0 or update.step == steps - 1:
                es = engine.session_stats(session.session_id)
                run.timeline.append(
                    {
                        "t_min": update.t_end / 60,
                        "memory_tokens": session.memory.tokens_held,
                        "kv_tokens": es.kv_tokens,
                        "kv_bytes": es.kv_bytes,
                        "rss": rss_bytes(),
                    }
                )
        run.ingest_seconds = loop.time() - started
        run.steps = steps
        t_end = steps * cfg.frames_per_step / cfg.fps
        for i in range(cfg.questions):
            stats = None
            async for event in session.ask(QUESTIONS[i % len(QUESTIONS)], t_end):
                if isinstance(event, AnswerDone):
                    stats = event.stats
            run.ttft_s.append(stats.ttft_s)
            run.total_s.append(stats.total_s)
            run.prompt_tokens.append(stats.prompt_tokens)
            run.cached_tokens.append(stats.cached_tokens)
    finally:
        await engine.shutdown()
    return run


def run_latency_bench(adapter: Any, make_engine: EngineFactory, cfg: LatencyBenchConfig) -> dict[str, Any]:
    """Every stream length under both modes; ratios computed within this one run."""
    runs = []
    for minutes in cfg.minutes:
        for reuse in (True, False):
            runs.append(asyncio.run(run_stream(adapter, make_engine, cfg, minutes, reuse)))
    by = {(r.minutes, r.mode): r.summary() for r in runs}
    lo, hi = min(cfg.minutes), max(cfg.minutes)
    mid = 10.0 if 10.0 in cfg.minutes else hi
    ratios = {
        f"vigil_ttft_{hi:g}min_over_{lo:g}min": by[(hi, "vigil")]["ttft_p50_s"] / by[(lo, "vigil")]["ttft_p50_s"],
        f"reprefill_over_vigil_ttft_{mid:g}min": by[(mid, "reprefill")]["ttft_p50_s"]
        / by[(mid, "vigil")]["ttft_p50_s"],
    }
    longest = next(r for r in runs if r.minutes == hi and r.mode == "vigil")
    at10 = [p for p in longest.timeline if p["t_min"] >= 10.0]
    if at10 and hi > 10.0:
        ratios[f"rss_growth_{at10[0]['t_min']:.0f}min_to_{hi:g}min"] = longest.timeline[-1]["rss"] / at10[0]["rss"] - 1
    return {
        "config": asdict(cfg),
        "model": getattr(adapter, "name", "?"),
        "device": str(adapter.device),
        "dtype": str(adapter.dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "runs": [r.summary() for r in runs],
        "timelines": {f"{r.mode}@{r.minutes:g}min": r.timeline for r in runs},
        "ratios": ratios,
    }


def format_table(result: dict[str, Any]) -> str:
    """A markdown table of the runs and the ratios."""
    lines = [
        f"model {result['model']} on {result['device']} ({result['dtype']}), torch {result['torch']}",
        "",
        "| stream | mode | TTFT p50 (ms) | TTFT p95 (ms) | total p50 (ms) | prefilled/question | reused tokens "
        "| memory tokens | KV MiB | ingest (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['minutes']:g} min | {r['mode']} | {r['ttft_p50_s'] * 1000:.1f} | {r['ttft_p95_s'] * 1000:.1f} "
            f"| {r['total_p50_s'] * 1000:.1f} | {r['prompt_tokens']:.0f} | {r['cached_tokens']:.0f} "
            f"| {r['final_memory_tokens']} | {r['final_kv_bytes'] / 2**20:.1f} | {r['ingest_seconds']:.1f} |"
        )
    lines.append("")
    lines += [f"- {name}: {value:.3f}" for name, value in result["ratios"].items()]
    return "\n".join(lines)


def write_outputs(result: dict[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """latency.json, latency.md and latency.png (when matplotlib is installed) in ``out_dir``."""
    paths = write_report(out_dir, "latency", result, format_table(result))
    out = Path(out_dir)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return paths
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for mode in ("vigil", "reprefill"):
        rows = [r for r in result["runs"] if r["mode"] == mode]
        ax1.plot([r["minutes"] for r in rows], [r["ttft_p50_s"] * 1000 for r in rows], marker="o", label=mode)
    ax1.set(xlabel="stream length (min)", ylabel="TTFT p50 (ms)", title="Time to first token")
    ax1.set_xlim(left=0)
    ax1.set_ylim(bottom=0)
    ax1.legend()
    for name, timeline in result["timelines"].items():
        if name.startswith("vigil"):
            ax2.plot([p["t_min"] for p in timeline], [p["rss"] / 2**20 for p in timeline], label=f"RSS {name}")
    ax2.set(xlabel="stream time (min)", ylabel="resident memory (MiB)", title="Process memory")
    ax2.set_xlim(left=0)
    ax2.set_ylim(bottom=0)  # flat memory reads as flat, not as a climb magnified by the axis
    ax2.legend(fontsize=7)
    fig.tight_layout()
    png = out / "latency.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return [*paths, png]
