"""``vigil make-tiny-model``: write the tiny random-weight test model."""

from __future__ import annotations

import argparse

from serving.cli.commands import Commands

TINY_FAMILIES = ("qwen2.5-vl", "qwen3-vl", "qwen3-vl-moe")
"""``assistant.models.tiny.TINY_FAMILIES`` (not imported here: the CLI starts without torch)."""


def register(commands: Commands) -> None:
    """Add ``vigil make-tiny-model``."""
    p = commands.add("make-tiny-model", help="write the tiny random-weight test model to a directory")
    p.add_argument("directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--family",
        choices=TINY_FAMILIES,
        default=TINY_FAMILIES[0],
        help="model family: Qwen2.5-VL (the default test model), Qwen3-VL, or Qwen3-VL-MoE",
    )
    p.set_defaults(func=cmd_make_tiny_model)


def cmd_make_tiny_model(args: argparse.Namespace) -> int:
    """Build the tiny model into ``args.directory`` and print its path."""
    from assistant.models.tiny import build_tiny_model

    print(build_tiny_model(args.directory, seed=args.seed, family=args.family))
    return 0
