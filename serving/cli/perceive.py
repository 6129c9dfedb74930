"""``vigil perceive``: perception alone (sampling and differential token drop) over a video file, with a report."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from serving.cli.commands import Commands
from serving.cli.options import (
    CliError,
    add_model_args,
    add_perception_args,
    add_speed_arg,
    build_config,
    parse_speed,
)
from serving.runtime import load_model

log = logging.getLogger("vigil")


def register(commands: Commands) -> None:
    """Add ``vigil perceive``."""
    p = commands.add("perceive", help="run perception (sampling + token drop) over a video file and report")
    p.add_argument("video", help="video file")
    add_model_args(p, default=None)
    add_perception_args(p)
    add_speed_arg(p)
    p.add_argument("--jsonl", action="store_true", help="one JSON object per step, then a summary line")
    p.set_defaults(func=cmd_perceive)


def cmd_perceive(args: argparse.Namespace) -> int:
    """Run perception over ``args.video``; print each step (``--jsonl``) and a summary."""
    from tqdm import tqdm

    from assistant.perception import Perception
    from assistant.sources import SourceError, VideoFileSource

    speed = parse_speed(args.speed)
    config = build_config(args)
    adapter = load_model(config) if args.model else None
    try:
        perception = Perception.from_config(config, adapter)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        source = VideoFileSource(args.video, fps=config.perception.fps, pace=speed)
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
    end = source.end
    if end is not None and end.reason not in ("eof", "closed"):
        log.warning("video ended early (%s): %s", end.reason, end.message)
    summary = perceive_summary(args.video, config, perception, time.perf_counter() - started, with_model=bool(adapter))
    summary["end"] = end.reason if end else None
    if args.jsonl:
        print(json.dumps({"summary": summary}), flush=True)
    else:
        width = max(len(k) for k in summary)
        for key, value in summary.items():
            print(f"{key:<{width}}  {value}")
    return 0


def perceive_summary(video: str, config: Any, perception: Any, seconds: float, *, with_model: bool) -> dict[str, Any]:
    """The summary line of ``vigil perceive``: counts, drop ratios, throughput and stage times."""
    stats = perception.stats
    fps = config.perception.fps
    return {
        "video": video,
        "model": config.model.name if with_model else None,
        "drop_mode": config.perception.drop.mode,
        "frames": stats.frames,
        "steps": stats.steps,
        "tokens": stats.tokens,
        "kept": stats.kept,
        "weighted_drop_ratio": round(stats.weighted_drop_ratio, 4),
        "mean_drop_ratio": round(stats.mean_drop_ratio, 4),
        "seconds": round(seconds, 3),
        "fps": round(stats.frames / seconds, 2) if seconds > 0 else None,
        "realtime_factor": round(stats.frames / seconds / fps, 2) if seconds > 0 else None,
        "stage_seconds": {k: round(v, 4) for k, v in stats.stage_seconds.items()},
        "frame_size": list(perception.size) if perception.size else None,
        "grid": list(perception.grid) if perception.grid else None,
    }
