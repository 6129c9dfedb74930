"""What a ``vigil.commands`` entry point is given: ``register(commands)`` adds its subcommands through it."""

from __future__ import annotations

import argparse
from collections.abc import Callable

Handler = Callable[[argparse.Namespace], int]
"""A command's handler (``parser.set_defaults(func=handler)``): parsed arguments in, exit code out."""


class Commands:
    """Adds ``vigil`` commands: top-level ones, and subcommands of shared groups such as ``bench``.

    A handler reports a user's mistake by raising ``serving.cli.options.CliError`` (or ``SetupError``): the
    command prints ``vigil: error: ...`` and exits with 2.
    """

    def __init__(self, subparsers: argparse._SubParsersAction) -> None:
        self._subparsers = subparsers
        self._groups: dict[str, argparse._SubParsersAction] = {}

    def add(self, name: str, help: str) -> argparse.ArgumentParser:
        """The parser of a new top-level command ``vigil NAME``; give it a handler with ``set_defaults(func=...)``."""
        return self._subparsers.add_parser(name, help=help)

    def group(self, name: str, help: str) -> argparse._SubParsersAction:
        """The subcommands of the group ``vigil NAME`` (created by the first caller, whose ``help`` it keeps)."""
        if name not in self._groups:
            parser = self._subparsers.add_parser(name, help=help)
            self._groups[name] = parser.add_subparsers(dest=name, required=True)
        return self._groups[name]
