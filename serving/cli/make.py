"""``vigil make-tiny-model``: write the tiny random-weight test model."""

from __future__ import annotations

import argparse

from serving.cli.commands import Commands


def register(commands: Commands) -> None:
    """Add ``vigil make-tiny-model``."""
    p = commands.add("make-tiny-model", help="write the tiny random-weight test model to a directory")
    p.add_argument("directory")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_make_tiny_model)


def cmd_make_tiny_model(args: argparse.Namespace) -> int:
    """Build the tiny model into ``args.directory`` and print its path."""
    from assistant.models.tiny import build_tiny_model

    print(build_tiny_model(args.directory, seed=args.seed))
    return 0
