"""Causal probes: memory changes after a probe's stream time wait until that probe has been answered.

A probe at stream time s must be answered on the memory up to s, never on later frames. Perception does not wait:
the session keeps perceiving and remembering, and the changes of steps with a frame after the earliest open probe
are held here, in order, and handed to the engine once the probes before them are done.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from collections.abc import Callable, Sequence

from assistant.reaction import MemoryChange


class CausalOutbox:
    """Memory changes on their way to the engine, held back behind open probe times (thread-safe)."""

    def __init__(self, deliver: Callable[[Sequence[MemoryChange]], None]) -> None:
        """``deliver`` hands changes to the engine (``engine.apply`` of the session)."""
        self._deliver = deliver
        self._lock = threading.Lock()
        self._holds: list[float] = []  # sorted stream times of open probes
        self._held: deque[tuple[float, Sequence[MemoryChange]]] = deque()

    def send(self, changes: Sequence[MemoryChange], t: float) -> None:
        """Changes of a step whose last frame is at stream time ``t``: to the engine now, or held in order."""
        with self._lock:
            if self._held or (self._holds and t > self._holds[0]):
                self._held.append((t, changes))
            else:
                self._deliver(changes)

    def hold(self, t: float) -> None:
        """A probe at stream time ``t`` is open: changes of later frames wait for it."""
        with self._lock:
            bisect.insort(self._holds, t)

    def release(self, t: float) -> None:
        """The probe at ``t`` is done (answered, failed or cancelled): deliver what no open probe holds back."""
        with self._lock:
            i = bisect.bisect_left(self._holds, t)
            if i < len(self._holds) and self._holds[i] == t:
                del self._holds[i]
            while self._held and (not self._holds or self._held[0][0] <= self._holds[0]):
                self._deliver(self._held.popleft()[1])

    @property
    def held_steps(self) -> int:
        """Steps whose changes are waiting."""
        return len(self._held)

    @property
    def open_probes(self) -> int:
        return len(self._holds)
