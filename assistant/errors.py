"""Errors of live sessions that callers of the orchestrator handle."""

from __future__ import annotations


class SessionClosedError(RuntimeError):
    """The session no longer accepts frames or questions."""
