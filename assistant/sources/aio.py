"""Blocking frame sources on asyncio: a worker thread iterates, the event loop consumes with bounded buffering."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterable

from assistant.sources.frame import Frame, FrameSource


class _Failure:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


async def aiter_frames(source: Iterable[Frame], max_buffered: int = 8) -> AsyncIterator[Frame]:
    """Iterate a blocking source in a worker thread and yield its frames on the event loop.

    At most ``max_buffered`` frames wait for the consumer. Errors from the source are raised here.
    Leaving the loop early closes a FrameSource so the worker thread stops (a plain iterable is left
    as it is; the worker stops at its next item).
    """
    loop = asyncio.get_running_loop()
    items: asyncio.Queue[object] = asyncio.Queue()
    room = threading.Semaphore(max_buffered)
    stop = threading.Event()

    def deliver(item: object) -> bool:
        while not room.acquire(timeout=0.1):
            if stop.is_set():
                return False
        try:
            loop.call_soon_threadsafe(items.put_nowait, item)
        except RuntimeError:  # the event loop is gone
            return False
        return True

    def produce() -> None:
        try:
            for frame in source:
                if stop.is_set() or not deliver(frame):
                    return
        except BaseException as exc:  # handed to the consumer
            deliver(_Failure(exc))
            return
        deliver(_DONE)

    threading.Thread(target=produce, name="frame-source", daemon=True).start()
    finished = False
    try:
        while True:
            item = await items.get()
            room.release()
            if item is _DONE:
                finished = True
                return
            if isinstance(item, _Failure):
                finished = True
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        if not finished and isinstance(source, FrameSource):
            source.close()
