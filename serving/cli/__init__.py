"""The ``vigil`` command: a core that registers the serving commands and reads the ``vigil.commands`` entry points.

- ``serving.cli.core``: the core (parser, entry points, one-line errors); imported by nobody.
- ``serving.cli.commands``: ``Commands``, what a ``register(commands)`` entry point is given.
- ``serving.cli.options``: the shared argument builders and ``build_config`` that registrants may use.
- one module per command group: ``perceive``, ``watch``, ``serve``, ``bench`` (``bench engine``), ``make``.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``vigil`` with ``argv`` (default the process arguments); returns the exit code."""
    from serving.cli.core import main as run

    return run(argv)
