"""``vigil bench engine``: reaction-engine throughput (TTFT vs stream length, concurrent sessions, tokens/s).

Runs any engine (``--engine hf|vllm|remote``) on a checkpoint or on a real-size architecture with random
weights (``--arch``: the real compute cost, no download). The stream is synthetic (random kept tokens at the
drop's keep ratio, as ``vigil bench latency`` uses), so the figures are the engine's alone. With ``--arch`` and
the vLLM engine, the random model is saved to a directory first so that vLLM can load it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from assistant.config import EngineConfig, VigilConfig
from assistant.reaction import AnswerDone, AnswerRequest, ReactionEngine
from assistant.session import Session
from evaluation.report import percentile


@dataclass(frozen=True, slots=True)
class EngineBenchConfig:
    """What to measure."""

    minutes: tuple[float, ...] = (1.0, 5.0, 15.0)
    sessions: tuple[int, ...] = (1, 4, 8)
    fps: float = 1.0
    grid: tuple[int, int] = (16, 16)
    keep_ratio: float = 0.3
    budget_tokens: int = 8192
    questions: int = 4
    max_new_tokens: int = 64
    concurrent_minutes: float = 1.0
    seed: int = 0


@dataclass(slots=True)
class LengthRow:
    """Questions on one session after a stream of ``minutes``."""

    minutes: float
    context_tokens: int
    ttft_s: list[float] = field(default_factory=list)
    cached_tokens: list[int] = field(default_factory=list)
    prefilled_tokens: list[int] = field(default_factory=list)
    decode_tokens_per_s: list[float] = field(default_factory=list)


@dataclass(slots=True)
class ConcurrencyRow:
    """All sessions ask at once."""

    sessions: int
    ttft_s: list[float] = field(default_factory=list)
    generated_tokens: int = 0
    wall_s: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.wall_s if self.wall_s else 0.0


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _config(cfg: EngineBenchConfig, engine: EngineConfig) -> VigilConfig:
    return VigilConfig(
        perception={"fps": cfg.fps},
        memory={"budget_tokens": cfg.budget_tokens, "archive": "none"},
        engine=engine.model_copy(
            update={
                "max_new_tokens": cfg.max_new_tokens,
                "kv_cap_tokens": max(engine.kv_cap_tokens, cfg.budget_tokens * 2 + 2048),
            }
        ),
    )


def _updates(adapter: Any, cfg: EngineBenchConfig, minutes: float, seed: int) -> list[Any]:
    from evaluation.bench_latency import LatencyBenchConfig, synthetic_updates

    latency = LatencyBenchConfig(fps=cfg.fps, grid=cfg.grid, keep_ratio=cfg.keep_ratio, seed=seed)
    steps = max(1, round(minutes * 60 * cfg.fps / latency.frames_per_step))
    interval = adapter.time_interval(latency.frames_per_step / cfg.fps)
    return list(synthetic_updates(latency, adapter.hidden_size, steps, interval))


async def _ask(engine: ReactionEngine, sid: str, question: str, t: float) -> AnswerDone:
    done = None
    async for event in engine.answer(sid, AnswerRequest(question, t, remember=False)):
        if isinstance(event, AnswerDone):
            done = event
    assert done is not None
    return done


async def _feed(session: Session, engine: ReactionEngine, updates: list[Any], sync_every: int = 16) -> None:
    """Remember a stream, prefilling in the background every ``sync_every`` steps (as the orchestrator does)."""
    for i, update in enumerate(updates):
        session.remember(update)
        if i % sync_every == sync_every - 1:
            await engine.sync(session.session_id)


async def run_engine_bench(
    adapter: Any, engine: ReactionEngine, engine_config: EngineConfig, cfg: EngineBenchConfig
) -> dict[str, Any]:
    """Both measurements on one engine; returns a JSON-ready result."""
    config = _config(cfg, engine_config)
    lengths: list[LengthRow] = []
    for n, minutes in enumerate(cfg.minutes):
        sid = f"len{n}"
        session = Session(sid, config, adapter, engine)
        await session.start()
        updates = _updates(adapter, cfg, minutes, cfg.seed + n)
        await _feed(session, engine, updates[: -cfg.questions] or updates)
        row = LengthRow(minutes, 0)
        for q, update in enumerate(updates[-cfg.questions :]):  # a step arrives before each question
            session.remember(update)
            done = await _ask(engine, sid, f"question {q}: what happened before {update.t_end:.0f} s?", update.t_end)
            s = done.stats
            row.ttft_s.append(s.ttft_s)
            row.cached_tokens.append(s.cached_tokens)
            row.prefilled_tokens.append(s.synced_tokens + s.prompt_tokens)
            decode = s.total_s - s.ttft_s
            if s.generated_tokens > 1 and decode > 0:
                row.decode_tokens_per_s.append((s.generated_tokens - 1) / decode)
        row.context_tokens = engine.session_stats(sid).kv_tokens
        await session.close()
        lengths.append(row)
        print(f"  {minutes:g} min: ttft {_median(row.ttft_s) * 1000:.1f} ms", file=sys.stderr)

    concurrency: list[ConcurrencyRow] = []
    for count in cfg.sessions:
        sessions = [Session(f"c{count}-{i}", config, adapter, engine) for i in range(count)]
        for i, session in enumerate(sessions):
            await session.start()
            await _feed(session, engine, _updates(adapter, cfg, cfg.concurrent_minutes, cfg.seed + 100 + i))
            await engine.sync(session.session_id)
        row = ConcurrencyRow(count)
        started = time.perf_counter()
        t = cfg.concurrent_minutes * 60
        dones = await asyncio.gather(*(_ask(engine, s.session_id, "what is happening now?", t) for s in sessions))
        row.wall_s = time.perf_counter() - started
        row.ttft_s = [d.stats.ttft_s for d in dones]
        row.generated_tokens = sum(d.stats.generated_tokens for d in dones)
        for session in sessions:
            await session.close()
        concurrency.append(row)
        print(f"  {count} sessions: {row.tokens_per_s:.1f} tokens/s", file=sys.stderr)
    return {
        "config": asdict(cfg),
        "engine": engine_config.kind,
        "model": adapter.name,
        "lengths": [asdict(r) for r in lengths],
        "concurrency": [{**asdict(r), "tokens_per_s": r.tokens_per_s} for r in concurrency],
    }


def format_engine_table(result: dict[str, Any]) -> str:
    """Markdown tables of a result."""
    lines = [
        f"engine `{result['engine']}`, model `{result['model']}`",
        "",
        "| stream (min) | context tokens | TTFT median (ms) | cached tokens per question | decode tokens/s |",
        "|---:|---:|---:|---|---:|",
    ]
    for r in result["lengths"]:
        cached = ", ".join(str(c) for c in r["cached_tokens"])
        lines.append(
            f"| {r['minutes']:g} | {r['context_tokens']} | {_median(r['ttft_s']) * 1000:.1f} | {cached} | "
            f"{_median(r['decode_tokens_per_s']):.1f} |"
        )
    lines += [
        "",
        "| sessions | TTFT median (ms) | TTFT p95 (ms) | generated tokens/s (all sessions) |",
        "|---:|---:|---:|---:|",
    ]
    for r in result["concurrency"]:
        lines.append(
            f"| {r['sessions']} | {_median(r['ttft_s']) * 1000:.1f} | {percentile(r['ttft_s'], 0.95) * 1000:.1f} | "
            f"{r['tokens_per_s']:.1f} |"
        )
    return "\n".join(lines)


def _vllm_loadable(adapter: Any) -> Any:
    """A random-weight adapter saved to a directory (vLLM loads checkpoints from disk)."""
    import json
    from dataclasses import asdict as dc_asdict

    if not str(adapter.name).startswith("random:"):
        return adapter
    directory = tempfile.mkdtemp(prefix="vigil-arch-")
    adapter.model.save_pretrained(directory)
    adapter.tokenizer.save_pretrained(directory)
    geometry = dc_asdict(adapter.geometry)
    preprocessor = {
        "image_processor_type": "Qwen2VLImageProcessor",
        "patch_size": geometry["patch_size"],
        "merge_size": geometry["merge_size"],
        "temporal_patch_size": geometry["temporal_patch_size"],
        "min_pixels": geometry["min_pixels"],
        "max_pixels": geometry["max_pixels"],
        "image_mean": list(geometry["mean"]),
        "image_std": list(geometry["std"]),
    }
    with open(f"{directory}/preprocessor_config.json", "w", encoding="utf-8") as fh:
        json.dump(preprocessor, fh)
    adapter.name = directory
    return adapter


def _parse(args: argparse.Namespace) -> EngineBenchConfig:
    try:
        cfg = EngineBenchConfig(
            minutes=tuple(float(m) for m in args.minutes.split(",")),
            sessions=tuple(int(s) for s in args.sessions.split(",")),
            fps=args.fps,
            grid=tuple(int(g) for g in args.grid.lower().split("x")),
            keep_ratio=args.keep_ratio,
            budget_tokens=args.budget,
            questions=args.questions,
            max_new_tokens=args.max_new_tokens,
            concurrent_minutes=args.concurrent_minutes,
        )
    except ValueError as exc:
        raise ValueError(f"invalid benchmark options: {exc}") from None
    if len(cfg.grid) != 2 or min(cfg.minutes) <= 0 or min(cfg.sessions) < 1 or not 0 < cfg.keep_ratio <= 1:
        raise ValueError("--grid is ROWSxCOLS, --minutes positive, --sessions >= 1, --keep-ratio in (0, 1]")
    if cfg.questions < 1 or cfg.max_new_tokens < 1:
        raise ValueError("--questions and --max-new-tokens must be at least 1")
    return cfg


def cmd_bench_engine(args: argparse.Namespace) -> int:
    """Run the benchmark and write ``engine-<kind>.json`` / ``.md`` to ``--out``."""
    from evaluation.report import write_report
    from serving.runtime import SetupError, bench_model, make_engine

    try:
        cfg = _parse(args)
        engine_config = EngineConfig(
            kind=args.engine,
            vllm={
                "gpu_memory_utilization": args.gpu_memory_utilization,
                "max_model_len": args.max_model_len,
                "tensor_parallel_size": args.tensor_parallel_size,
                "visual_input": args.visual_input,
            },
            remote={"urls": tuple(args.remote_url or ()), "served_model": args.remote_model},
        )
    except ValueError as exc:
        raise SetupError(str(exc)) from None
    adapter = bench_model(args.model, arch=args.arch, device=args.device, dtype=args.dtype)
    if args.engine == "vllm":
        adapter = _vllm_loadable(adapter)
    config = _config(cfg, engine_config)
    engine = make_engine(config.engine, adapter)

    async def run() -> dict[str, Any]:
        try:
            return await run_engine_bench(adapter, engine, config.engine, cfg)
        finally:
            await engine.shutdown()

    result = asyncio.run(run())
    table = format_engine_table(result)
    print(table)
    name = f"engine-{args.engine}" + (f"-{args.visual_input}" if args.engine != "hf" else "")
    for path in write_report(args.out, name, result, table):
        print(f"wrote {path}", file=sys.stderr)
    return 0


def register(bench: argparse._SubParsersAction) -> None:
    """Add ``vigil bench engine`` to the ``bench`` subcommands."""
    p = bench.add_parser("engine", help="reaction-engine TTFT vs stream length, concurrent sessions, tokens/s")
    p.add_argument("--engine", default="hf", choices=["hf", "vllm", "remote"])
    p.add_argument("--model", default="tiny", help="checkpoint (ignored with --arch)")
    p.add_argument("--arch", default=None, help="real-size random-weight architecture: qwen2.5-vl-3b, qwen2.5-vl-7b")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--minutes", default="1,5,15", help="stream lengths in minutes (comma-separated)")
    p.add_argument("--sessions", default="1,4,8", help="concurrent session counts (comma-separated)")
    p.add_argument("--concurrent-minutes", type=float, default=1.0, help="stream length of each concurrent session")
    p.add_argument("--fps", type=float, default=1.0)
    p.add_argument("--grid", default="16x16", help="visual tokens per step before dropping, ROWSxCOLS")
    p.add_argument("--keep-ratio", type=float, default=0.3, help="share of tokens kept by the drop")
    p.add_argument("--budget", type=int, default=8192, help="memory budget in visual tokens")
    p.add_argument("--questions", type=int, default=4, help="questions per stream length")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85, help="vLLM's share of GPU memory")
    p.add_argument("--max-model-len", type=int, default=None, help="vLLM context length")
    p.add_argument("--tensor-parallel-size", type=int, default=1)
    p.add_argument(
        "--visual-input",
        default="kept",
        choices=["kept", "embeds", "frames"],
        help="vllm/remote: kept tokens only (default) or whole grids ('frames' needs frames the benchmark lacks)",
    )
    p.add_argument("--remote-url", action="append", default=None, help="replica base URL (repeatable)")
    p.add_argument("--remote-model", default=None, help="model name the replicas serve")
    p.add_argument("--out", default="out/bench-engine", help="output folder (JSON and markdown)")
    p.set_defaults(func=cmd_bench_engine)
