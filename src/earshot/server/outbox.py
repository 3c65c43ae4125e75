"""A session's outgoing messages, sent by a task of their own.

Messages leave in order; a client that reads slowly delays only itself, and a
segments update that has not left yet is replaced by the newer one instead of
queueing behind it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol


class Sink(Protocol):
    async def send(self, message: str) -> None: ...


class Outbox:
    """Messages waiting for the sender, in order; segments updates coalesce."""

    def __init__(self) -> None:
        self._items: deque[tuple[str, str]] = deque()  # (kind, text)
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def put(self, text: str, kind: str = "control") -> None:
        if kind == "segments" and self._items and self._items[-1][0] == "segments":
            self._items[-1] = (kind, text)  # the newer snapshot replaces the unsent one
        else:
            self._items.append((kind, text))
        self._idle.clear()
        self._ready.set()

    async def run(self, ws: Sink) -> None:
        """Send until cancelled or the connection closes."""
        while True:
            await self._ready.wait()
            while self._items:
                _, text = self._items.popleft()
                await ws.send(text)
            self._ready.clear()
            self._idle.set()

    async def flushed(self) -> None:
        await self._idle.wait()
