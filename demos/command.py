"""``vigil demo``: the live-video chat app in the browser, standalone (the ``vigil.commands`` entry point ``demo``)."""

from __future__ import annotations

import argparse

from serving.cli.commands import Commands
from serving.cli.options import add_memory_args, add_model_args, add_perception_args, build_config, require_extra


def register(commands: Commands) -> None:
    """Add ``vigil demo``."""
    p = commands.add("demo", help="the live-video chat app in the browser, standalone")
    add_model_args(p)
    add_perception_args(p)
    add_memory_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """Serve the app until interrupted."""
    require_extra("demo", "demo")
    config = build_config(args)
    from demos.gradio_app import run_demo  # gradio is imported only when the app runs

    return run_demo(config, host=args.host, port=args.port)
