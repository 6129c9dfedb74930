"""uvicorn's h11 protocol with a deadline for the request head: a client that opens a connection (or keeps one
alive) and then sends its request line and headers too slowly is disconnected (slowloris).

uvicorn bounds the size of a request head (``h11_max_incomplete_event_size``), the number of connections
(``limit_concurrency``) and idle kept-alive connections (``timeout_keep_alive``), but not the time a head may take.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


def guarded_h11(header_timeout_s: float) -> type[H11Protocol]:
    """An ``H11Protocol`` that closes a connection whose next request head is not complete in time."""

    class GuardedH11Protocol(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_deadline: asyncio.TimerHandle | None = None
            self._heads = 0  # request heads received on this connection

        def _arm(self) -> None:
            self._disarm()
            seen = self._heads
            self._head_deadline = self.loop.call_later(header_timeout_s, self._head_overdue, seen)

        def _disarm(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

        def _head_overdue(self, seen: int) -> None:
            upgraded = self.transport.get_protocol() is not self  # a WebSocket took the connection over
            if self._heads == seen and not upgraded and not self.transport.is_closing():
                self.transport.close()  # no complete request head since the deadline was set

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle or self.transport.get_protocol() is not self:  # a head was parsed in time
                self._heads += 1
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request on a kept-alive connection has the same deadline

    return GuardedH11Protocol
