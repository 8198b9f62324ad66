"""Admission control: a few runs at once, a bounded queue behind them, and 429 beyond it."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque


class QueueFull(Exception):
    """More requests than the running slots and the queue hold; ``retry_after`` is in seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the server is busy; retry in {retry_after} s")
        self.retry_after = retry_after


class Gate:
    """``slots`` runs at once and ``queue_size`` waiting; every method runs on the event loop.

    Example::

        gate = Gate(slots=1, queue_size=4)
        await gate.enter()        # waits for a slot, or raises QueueFull
        try: ...
        finally: gate.leave(started)
    """

    def __init__(self, slots: int, queue_size: int) -> None:
        self.slots = slots
        self.queue_size = queue_size
        self.running = 0
        self.waiting = 0
        self._free = asyncio.Semaphore(slots)
        self._durations: deque[float] = deque(maxlen=20)

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the recent mean run time, times the queue's depth."""
        mean = sum(self._durations) / len(self._durations) if self._durations else 1.0
        return max(1, math.ceil(mean * (1 + self.waiting) / self.slots))

    async def enter(self) -> float:
        """Wait for a slot (``QueueFull`` when the queue is full too); returns the start time."""
        if self.running + self.waiting >= self.slots + self.queue_size:
            raise QueueFull(self.retry_after())
        self.waiting += 1
        try:
            await self._free.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        return time.monotonic()

    def leave(self, started: float) -> None:
        """Give the slot back once the run has really finished."""
        self._durations.append(time.monotonic() - started)
        self.running -= 1
        self._free.release()
