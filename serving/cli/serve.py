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
    server_section,
)
from serving.runtime import serve, validated_config


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
    if args.redis_url and args.archive == "memory":
        args.archive = "redis"
    config = build_config(args)
    config = validated_config(**{**config.model_dump(), "server": server_section(args)})
    return serve(config)
