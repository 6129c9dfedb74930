"""``vigil bench engine``: reaction-engine throughput (TTFT vs stream length, concurrent sessions, tokens/s)."""

from __future__ import annotations

import argparse


def register(bench: argparse._SubParsersAction) -> None:
    """Add ``vigil bench engine`` to the ``bench`` subcommands."""
