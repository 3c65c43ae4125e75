"""One proxied connection, and the pump that carries one direction of it.

In each direction one task reads and stamps chunks and another passes them,
one at a time, through that direction's chain of toxics and writes what comes
out. Between the two sits a bounded buffer: a slow or held direction stops the
reading, and the sender feels it as it would on a real link.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from earshot.testing.proxy.toxics import Chunk, Link, Toxic

CHUNK = 32 * 1024
# What one direction holds in user space while its toxics delay it. A real path
# holds a bounded amount too: once this is full the proxy stops reading that
# socket, the kernel's buffers fill and the sender's writes block, so a slow or
# held link pushes back on the sender instead of swallowing data into memory.
# Latency needs rate x latency in flight: 512 KiB carries 300 ms at ~1.7 MB/s,
# far above a speech stream (64 kB/s). asyncio's stream buffer (up to 128 KiB)
# and the kernel's socket buffers come on top, as they would on a real host.
BUFFER_BYTES = 512 * 1024


class Pipe:
    """One direction's stamped chunks, about BUFFER_BYTES at most; ``None`` ends it."""

    def __init__(self, limit: int = BUFFER_BYTES) -> None:
        self._items: deque[Chunk | None] = deque()
        self._size = 0
        self._limit = limit
        self._changed = asyncio.Condition()

    async def put(self, item: Chunk | None) -> None:
        """Add ``item`` once there is room; until then its reader reads no more."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._size < self._limit)
            self._items.append(item)
            self._size += len(item.data) if item else 0
            self._changed.notify_all()

    async def get(self) -> Chunk | None:
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._items))
            item = self._items.popleft()
            self._size -= len(item.data) if item else 0
            self._changed.notify_all()
            return item


@dataclass(eq=False)  # identity: connections live in a set
class Connection:
    """One client's connection, owned by the proxy from the instant it is accepted."""

    sock: socket.socket  # the client's; its transport owns it once ``client`` is set
    client: asyncio.StreamWriter | None = None
    server: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    def abort(self, reset: bool = False) -> None:
        """Cut both sides now and cancel the tasks (each then releases what it holds)."""
        for timer in self.timers:
            timer.cancel()
        if self.client is None:
            # A transport may be taking the socket over right now: closing it here
            # would free a descriptor that transport still uses. Cut the connection
            # (the client sees EOF at once); release() closes the socket later.
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
        for writer in (self.client, self.server):
            if writer is not None:
                _abort(writer, reset)
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:  # a task that aborts ends by itself
                task.cancel()

    def release(self) -> None:
        """Once the tasks ended: close the client socket if no transport took it."""
        if self.client is None:
            self.sock.close()


def _abort(writer: asyncio.StreamWriter, reset: bool) -> None:
    if reset:
        sock = writer.get_extra_info("socket")
        if sock is not None:  # linger 0: close() sends RST, not FIN
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, toxics: Callable[[], Toxic],
         link: Link, connection: Connection) -> list[asyncio.Task[None]]:
    """The two tasks of one direction; ``toxics()`` is the direction's chain as it is now."""
    pipe = Pipe()
    loop = asyncio.get_running_loop()
    return [loop.create_task(_read(reader, pipe)),
            loop.create_task(_write(pipe, writer, toxics, link, connection))]


async def _read(reader: asyncio.StreamReader, pipe: Pipe) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(CHUNK):
            await pipe.put(Chunk(data, due=time.monotonic()))  # waits while the pipe is full
    await pipe.put(None)  # end of stream


async def _write(pipe: Pipe, writer: asyncio.StreamWriter, toxics: Callable[[], Toxic],
                 link: Link, connection: Connection) -> None:
    async def send(chunk: Chunk) -> None:  # the end of every chain: the wire
        writer.write(chunk.data)
        await writer.drain()

    try:
        while (chunk := await pipe.get()) is not None:
            # The chain as it is when the chunk comes up: a toxic added later acts on
            # the chunks after it, one removed lets go of a chunk it holds.
            await toxics().pass_on(chunk, link, send)
        if writer.can_write_eof():
            writer.write_eof()
    except ConnectionError:
        connection.abort()
