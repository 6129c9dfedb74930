"""The ``vigil`` commands of the evaluation package (the ``vigil.commands`` entry point ``evaluation``).

``vigil bench latency|lag|scene|all|api`` (``evaluation.bench_cli``), ``vigil eval`` (``evaluation.cli``) and
``vigil make-clip``.
"""

from __future__ import annotations

import argparse
import json

from evaluation import bench_cli, cli
from serving.cli.commands import Commands
from serving.cli.options import CliError


def register(commands: Commands) -> None:
    """Add the benchmark, evaluation and test-clip commands."""
    bench_cli.register(commands)
    cli.register(commands)
    p = commands.add("make-clip", help="write a synthetic test video with hard cuts at known times")
    p.add_argument("output", help="output .mp4 path")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--fps", type=int, default=10)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--cuts", default="6,13", help="comma-separated cut times in seconds")
    p.set_defaults(func=cmd_make_clip)


def cmd_make_clip(args: argparse.Namespace) -> int:
    """Write the clip and print what it holds as one JSON line."""
    from evaluation.synthetic import write_clip

    try:
        cuts = tuple(float(c) for c in args.cuts.split(",") if c.strip()) if args.cuts else ()
    except ValueError:
        raise CliError(f"--cuts must be comma-separated seconds, like 6,13; got {args.cuts!r}") from None
    try:
        clip = write_clip(
            args.output, seconds=args.seconds, fps=args.fps, width=args.width, height=args.height, cut_times=cuts
        )
    except (ValueError, OSError) as exc:
        raise CliError(f"could not write {args.output}: {exc}") from None
    info = {
        "path": clip.path,
        "seconds": clip.seconds,
        "fps": clip.fps,
        "size": [clip.width, clip.height],
        "cut_times": list(clip.cut_times),
    }
    print(json.dumps(info))
    return 0
