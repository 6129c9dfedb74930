"""``vigil serve``: the HTTP API, and with ``--ui`` the browser app mounted at ``/ui``."""

from __future__ import annotations

import argparse

from serving.cli.commands import Commands
from serving.cli.options import (
    add_memory_args,
    add_model_args,
    add_perception_args,
    add_server_args,
    build_config,
    require_extra,
)
from serving.runtime import serve


def register(commands: Commands) -> None:
    """Add ``vigil serve``."""
    p = commands.add("serve", help="the HTTP API (and with --ui the browser app at /ui)")
    add_model_args(p)
    add_perception_args(p)
    add_memory_args(p)
    add_server_args(p)
    p.add_argument("--ui", action="store_true", help="mount the live-video chat app at /ui")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """Load the model and serve the API until interrupted."""
    require_extra("serve", "serve")
    if args.ui:
        require_extra("serve --ui", "demo")
    return serve(build_config(args))
