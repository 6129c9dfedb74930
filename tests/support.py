"""Helpers shared by the test packages: waiting for a condition, and collecting a streamed answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 30.0, every: float = 0.05, what: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy (returned); AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what or 'condition'} not met within {timeout:g} s"
        time.sleep(every)


async def await_until(predicate: Callable[[], T], timeout: float = 30.0, every: float = 0.02, what: str = "") -> T:
    """``wait_until`` on the event loop (sleeps without blocking it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what or 'condition'} not met within {timeout:g} s"
        await asyncio.sleep(every)


async def collect_answer(stream: AsyncIterator[Any]) -> tuple[list[Any], Any]:
    """Every AnswerDelta of an engine's answer stream and its AnswerDone (AssertionError when none came)."""
    from assistant.reaction import AnswerDelta, AnswerDone

    deltas, done = [], None
    async for event in stream:
        if isinstance(event, AnswerDelta):
            deltas.append(event)
        elif isinstance(event, AnswerDone):
            done = event
    assert done is not None, "the answer stream ended without AnswerDone"
    return deltas, done
