"""The core of the ``vigil`` command: the parser from every command group, and one-line errors.

Serving's own commands are registered here; commands of other packages (the benchmarks and the evaluation
harness, the browser app) come from the ``vigil.commands`` entry points, each a ``register(commands)``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from serving.cli import bench, make, perceive, serve, watch
from serving.cli.commands import Commands
from serving.runtime import COMMAND_ENTRY_POINTS, SetupError

log = logging.getLogger("vigil")


def installed_commands() -> list[Callable[[Commands], None]]:
    """The ``register`` functions of the ``vigil.commands`` entry points, by entry-point name."""
    registrants = []
    found = sorted(entry_points(group=COMMAND_ENTRY_POINTS), key=lambda ep: ep.name)
    if not found:  # run from a tree whose installed metadata predates the entry points
        print(
            "vigil: warning: no installed commands (demo, eval, bench latency, make-clip ...): "
            "reinstall Vigil (pip install -e .)",
            file=sys.stderr,
        )
    for ep in found:
        try:
            registrants.append(ep.load())
        except (ImportError, AttributeError) as exc:  # a broken or missing front end: its commands are absent
            print(f"vigil: warning: commands from {ep.value} are unavailable ({exc})", file=sys.stderr)
    return registrants


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vigil")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The ``vigil`` parser: perceive, watch, serve, the installed commands, bench engine, make-tiny-model."""
    parser = argparse.ArgumentParser(
        prog="vigil", description="A video-LLM that watches live video and talks about it."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"vigil {_version()}")
    commands = Commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    for register in (perceive.register, watch.register, serve.register, *installed_commands()):
        register(commands)
    bench.register(commands)
    make.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the command; a user's mistake prints ``vigil: error: ...`` and returns 2."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except SetupError as exc:
        print(f"vigil: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from serving.engines.remote import ReplicaUnavailableError

        if not isinstance(exc, ReplicaUnavailableError):
            raise
        print(f"vigil: error: the remote replicas failed: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
