"""A minimum interval between connection attempts, with an injectable clock."""

from __future__ import annotations

import time
from collections.abc import Callable


class Throttle:
    def __init__(self, min_interval: float = 0.0, clock: Callable[[], float] = time.monotonic):
        if min_interval < 0:
            raise ValueError("min_interval must not be negative")
        self.min_interval = min_interval
        self.clock = clock
        self._last: float | None = None

    def reserve(self) -> float:
        """Book the next attempt; return how many seconds to wait before making it."""
        now = self.clock()
        start = now if self._last is None else max(now, self._last + self.min_interval)
        self._last = start
        return start - now

    def started(self) -> None:
        """The booked attempt starts now. An attempt that starts late (a loaded
        machine wakes it after its slot) moves the next slot with it, so
        attempts, not just bookings, stay ``min_interval`` apart."""
        now = self.clock()
        self._last = now if self._last is None else max(self._last, now)
