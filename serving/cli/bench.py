"""``vigil bench engine``: reaction-engine throughput; the rest of ``vigil bench`` is registered by ``evaluation``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from serving.cli.commands import Commands
from serving.cli.options import CliError, add_bench_model_args

BENCH_HELP = "efficiency benchmarks"


def register(commands: Commands) -> None:
    """Add ``vigil bench engine`` to the ``bench`` group."""
    p = commands.group("bench", help=BENCH_HELP).add_parser(
        "engine", help="reaction-engine TTFT vs stream length, concurrent sessions, tokens/s"
    )
    p.add_argument("--engine", default="hf", choices=["hf", "vllm", "remote"])
    add_bench_model_args(p, arch=True)
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


def engine_bench_config(args: argparse.Namespace) -> Any:
    """The ``EngineBenchConfig`` the options describe (CliError when they are unusable)."""
    from serving.bench_engine import EngineBenchConfig

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
        raise CliError(f"invalid benchmark options: {exc}") from None
    if len(cfg.grid) != 2 or min(cfg.minutes) <= 0 or min(cfg.sessions) < 1 or not 0 < cfg.keep_ratio <= 1:
        raise CliError("--grid is ROWSxCOLS, --minutes positive, --sessions >= 1, --keep-ratio in (0, 1]")
    if cfg.questions < 1 or cfg.max_new_tokens < 1:
        raise CliError("--questions and --max-new-tokens must be at least 1")
    return cfg


def cmd_bench_engine(args: argparse.Namespace) -> int:
    """Run the benchmark and write ``engine-<kind>.json`` / ``.md`` to ``--out``."""
    from pydantic import ValidationError

    from assistant.config import EngineConfig, format_validation_error
    from serving.bench_engine import bench_vigil_config, format_engine_table, run_engine_bench, vllm_loadable
    from serving.bench_tools import write_report
    from serving.runtime import bench_model, make_engine

    cfg = engine_bench_config(args)
    try:
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
    except ValidationError as exc:
        raise CliError(f"invalid options: {format_validation_error(exc)}") from None
    adapter = bench_model(args.model, arch=args.arch, device=args.device, dtype=args.dtype)
    if args.engine == "vllm":
        adapter = vllm_loadable(adapter)
    config = bench_vigil_config(cfg, engine_config)
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
