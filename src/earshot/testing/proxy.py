"""A TCP proxy that injects real network trouble, with toxics modelled on Toxiproxy's.

The kernel here has no netem and Toxiproxy cannot be installed, so this is the
way to real latency: a user-space proxy between client and server. It runs
its own event loop on its own thread, so sync and async tests alike can use
it, and toxics can be added and removed while traffic flows.

Each connection has two directions, ``upstream`` (client to server) and
``downstream`` (server to client). In each, one task reads and stamps chunks
and another writes them once every toxic of that direction lets them through,
so latency is pipelined (as in Toxiproxy) rather than serialised per chunk.
Between the two sits a bounded buffer: a slow or held direction stops the
reading, and the sender feels it as it would on a real link.

    with Proxy("127.0.0.1", server_port) as proxy:
        proxy.add(Latency(150, jitter_ms=50), direction="downstream")
        ... connect to proxy.port ...
        proxy.clear()
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

Direction = Literal["upstream", "downstream"]
DIRECTIONS: tuple[Direction, ...] = ("upstream", "downstream")
CHUNK = 32 * 1024
# What one direction holds in user space while its toxics delay it. A real path
# holds a bounded amount too: once this is full the proxy stops reading that
# socket, the kernel's buffers fill and the sender's writes block, so a slow or
# held link pushes back on the sender instead of swallowing data into memory.
# Latency needs rate x latency in flight: 512 KiB carries 300 ms at ~1.7 MB/s,
# far above a speech stream (64 kB/s). asyncio's stream buffer (up to 128 KiB)
# and the kernel's socket buffers come on top, as they would on a real host.
BUFFER_BYTES = 512 * 1024
ACCEPT_BACKLOG = 100  # also the most connections taken per wake-up, as asyncio's servers do
ACCEPT_RETRY_S = 0.1  # out of descriptors: pause accepting this long rather than spin


# -- toxics --------------------------------------------------------------------------


@dataclass(frozen=True)
class Toxic:
    """Base of all toxics; ``name`` identifies one for removal."""

    def describe(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in self.__dict__.items())
        return f"{type(self).__name__}({fields})"


@dataclass(frozen=True)
class Latency(Toxic):
    """Delay every chunk by ``latency_ms`` plus or minus up to ``jitter_ms``."""

    latency_ms: float
    jitter_ms: float = 0.0


@dataclass(frozen=True)
class Bandwidth(Toxic):
    """Limit the rate to ``rate_kbps`` kilobytes per second."""

    rate_kbps: float


@dataclass(frozen=True)
class Slicer(Toxic):
    """Cut chunks into pieces of about ``average_size`` bytes, ``delay_ms`` apart."""

    average_size: int
    size_variation: int = 0
    delay_ms: float = 0.0


@dataclass(frozen=True)
class Timeout(Toxic):
    """Hold all data (the sender stalls once the buffers are full); close the connection
    after ``timeout_ms`` (0: never close, and removing the toxic delivers what waited)."""

    timeout_ms: float


@dataclass(frozen=True)
class ResetPeer(Toxic):
    """Reset the connection (TCP RST) ``timeout_ms`` after data meets this toxic."""

    timeout_ms: float = 0.0


@dataclass(frozen=True)
class Blackhole(Toxic):
    """Let nothing through, as a dead route does: the connection stays open, the
    sender stalls once the buffers are full, and removing the toxic delivers what
    waited, in order (TCP retransmits; it never loses bytes mid-stream)."""


# Named conditions: one-way values, applied to each direction.
PROFILES: dict[str, list[Toxic]] = {
    "lan": [Latency(1, jitter_ms=0.5)],
    "wifi": [Latency(20, jitter_ms=10)],
    "cellular": [Latency(150, jitter_ms=50), Bandwidth(125)],  # 1 Mbit/s
    "intercontinental": [Latency(300, jitter_ms=30)],
}


# -- one proxied connection -----------------------------------------------------------

_Stamped = tuple[float, bytes]  # (when read, data)


class _Pipe:
    """One direction's stamped chunks, about BUFFER_BYTES at most; ``None`` ends it."""

    def __init__(self, limit: int = BUFFER_BYTES) -> None:
        self._items: deque[_Stamped | None] = deque()
        self._size = 0
        self._limit = limit
        self._changed = asyncio.Condition()

    async def put(self, item: _Stamped | None) -> None:
        """Add ``item`` once there is room; until then its reader reads no more."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._size < self._limit)
            self._items.append(item)
            self._size += len(item[1]) if item else 0
            self._changed.notify_all()

    async def get(self) -> _Stamped | None:
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._items))
            item = self._items.popleft()
            self._size -= len(item[1]) if item else 0
            self._changed.notify_all()
            return item


@dataclass
class _Clock:
    """One direction's timing across chunks."""

    due: float = 0.0  # when the previous chunk left: order is kept
    free: float = 0.0  # bandwidth: when the link is free again


@dataclass(eq=False)  # identity: connections live in a set
class _Connection:
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


# -- the proxy ---------------------------------------------------------------------


class Proxy:
    """Listens on 127.0.0.1 (a free port unless given) and forwards to one target."""

    def __init__(self, target_host: str, target_port: int, listen_port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = listen_port
        self._toxics: dict[Direction, list[Toxic]] = {d: [] for d in DIRECTIONS}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="earshot-proxy")
        self._listener: socket.socket | None = None
        self._connections: set[_Connection] = set()
        self._changed = asyncio.Event()  # set, and replaced, whenever the toxics change
        self._random = random.Random()
        self.connections_total = 0  # accepted, whether or not the target answered

    @property
    def ws_url(self) -> str:
        """The WebSocket URL to dial instead of the target's."""
        return f"ws://127.0.0.1:{self.port}"

    # lifecycle (called from any thread but the proxy's own)

    def start(self) -> Proxy:
        """Listen and serve. If listening fails, the thread and loop are gone when it raises."""
        self._thread.start()
        try:
            self._call(self._listen())
        except BaseException as exc:
            self._halt(5.0)
            if isinstance(exc, OSError):
                reason = os.strerror(exc.errno) if exc.errno else repr(exc)
                raise OSError(exc.errno, f"proxy cannot listen on 127.0.0.1:{self.port}: "
                                         f"{reason}") from exc
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection and the listener, stop the thread (bounded)."""
        if not self._thread.is_alive():
            return
        try:
            self._call(self._shutdown(), timeout)
        finally:
            self._halt(timeout)

    def _halt(self, timeout: float) -> None:
        """Stop the loop, join its thread, close the loop."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"proxy thread did not stop within {timeout:g} s")
        self._loop.close()

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def down(self) -> None:
        """Refuse new connections and cut every open one, those still being accepted
        included (Toxiproxy's enabled=false)."""
        self._call(self._shutdown())

    def up(self) -> None:
        """Listen again, on the same port."""
        self._call(self._listen())

    # toxics

    def add(self, toxic: Toxic, direction: Direction | Literal["both"] = "downstream") -> None:
        with self._lock:
            for d in DIRECTIONS if direction == "both" else (direction,):
                self._toxics[d].append(toxic)
        self._toxics_changed(rearm=False)

    def remove(self, toxic: Toxic) -> None:
        with self._lock:
            for d in DIRECTIONS:
                self._toxics[d] = [t for t in self._toxics[d] if t is not toxic]
        self._toxics_changed(rearm=True)

    def clear(self) -> None:
        with self._lock:
            for d in DIRECTIONS:
                self._toxics[d] = []
        self._toxics_changed(rearm=True)

    def apply_profile(self, name: str) -> list[Toxic]:
        """Replace the toxics with a named condition, both directions."""
        if name not in PROFILES:
            raise ValueError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}")
        self.clear()
        for toxic in PROFILES[name]:
            self.add(toxic, "both")
        return PROFILES[name]

    def toxics(self, direction: Direction) -> list[Toxic]:
        with self._lock:
            return list(self._toxics[direction])

    def describe(self) -> str:
        """The toxic state, for test reports."""
        parts = [f"{d}: {', '.join(t.describe() for t in self.toxics(d)) or 'none'}"
                 for d in DIRECTIONS]
        return f"proxy 127.0.0.1:{self.port} -> {self.target[0]}:{self.target[1]}; " + "; ".join(
            parts)

    @contextlib.contextmanager
    def toxic(self, toxic: Toxic, direction: Direction | Literal["both"] = "downstream"
              ) -> Iterator[Toxic]:
        """A toxic for the duration of a ``with`` block."""
        self.add(toxic, direction)
        try:
            yield toxic
        finally:
            self.remove(toxic)

    def _toxics_changed(self, rearm: bool) -> None:
        """Tell the loop, from any thread, that the toxics changed."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._on_toxics_changed, rearm)

    # plumbing (runs on the proxy's loop)

    def _call(self, coro: Any, timeout: float = 5.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _listen(self) -> None:
        """Listen, with an accept of our own: asyncio's servers take a connection off the
        listener a loop turn or more before handing it over, and down() cannot reach it
        in between (3.11 then drops it unclosed, until the garbage collector runs)."""
        if self._listener is not None:
            return
        listener = socket.create_server(("127.0.0.1", self.port), backlog=ACCEPT_BACKLOG)
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._resume_accepting(listener)

    def _resume_accepting(self, listener: socket.socket) -> None:
        if listener is self._listener:  # not closed by down() in the meantime
            self._loop.add_reader(listener, self._accept, listener)

    def _close_listener(self) -> None:
        """Accept no more; the kernel resets connections still queued on the listener."""
        listener, self._listener = self._listener, None
        if listener is not None:
            self._loop.remove_reader(listener)
            listener.close()

    def _accept(self, listener: socket.socket) -> None:
        """Take the queued connections; each is registered the instant it is taken, so
        down() reaches it however far its set-up has got."""
        for _ in range(ACCEPT_BACKLOG):
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return  # none left, or the client gave up first
            except OSError:  # out of descriptors: the listener stays ready, so do not spin
                self._loop.remove_reader(listener)
                self._loop.call_later(ACCEPT_RETRY_S, self._resume_accepting, listener)
                return
            sock.setblocking(False)
            connection = _Connection(sock)
            self._connections.add(connection)
            self.connections_total += 1
            connection.tasks.append(self._loop.create_task(self._serve(connection)))

    async def _shutdown(self) -> None:
        """Close the listener, cut every connection and wait for their tasks to end."""
        self._close_listener()
        connections = list(self._connections)
        for connection in connections:
            connection.abort()
        await asyncio.gather(*[t for c in connections for t in c.tasks], return_exceptions=True)
        for connection in connections:  # a task cancelled before it ran released nothing
            connection.release()
        self._connections.difference_update(connections)

    async def _serve(self, connection: _Connection) -> None:
        """Connect the client to the target, then pump both directions until both end."""
        try:
            client_r, connection.client = await asyncio.open_connection(sock=connection.sock)
            server_r, connection.server = await asyncio.open_connection(*self.target)
            self._arm(connection)
            pumps = [*self._pump("upstream", client_r, connection.server, connection),
                     *self._pump("downstream", server_r, connection.client, connection)]
            connection.tasks.extend(pumps)
            await asyncio.gather(*pumps, return_exceptions=True)
        except OSError:
            pass  # the client left or the target refused: nothing to forward
        finally:
            connection.abort()
            connection.release()
            self._connections.discard(connection)

    def _pump(self, direction: Direction, reader: asyncio.StreamReader,
              writer: asyncio.StreamWriter, connection: _Connection) -> list[asyncio.Task[None]]:
        pipe = _Pipe()
        return [self._loop.create_task(self._read(reader, pipe)),
                self._loop.create_task(self._write(direction, pipe, writer, connection))]

    async def _read(self, reader: asyncio.StreamReader, pipe: _Pipe) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(CHUNK):
                await pipe.put((time.monotonic(), data))  # waits while the pipe is full
        await pipe.put(None)  # end of stream

    async def _write(self, direction: Direction, pipe: _Pipe,
                     writer: asyncio.StreamWriter, connection: _Connection) -> None:
        clock = _Clock()
        try:
            while (item := await pipe.get()) is not None:
                stamp, data = item
                toxics = await self._passable(direction)
                pieces = self._plan(stamp, data, toxics, clock)
                await _sleep_until(clock.due)
                await self._send(pieces, toxics, writer, clock)
            if writer.can_write_eof():
                writer.write_eof()
        except ConnectionError:
            connection.abort()

    async def _passable(self, direction: Direction) -> list[Toxic]:
        """The direction's toxics once none holds data. While one does, the chunk in
        hand waits here, the pipe fills behind it and the sender stalls."""
        while True:
            changed = self._changed  # taken before the toxics are read: no change is missed
            toxics = self.toxics(direction)
            if not self._held(toxics):
                return toxics
            await changed.wait()

    @staticmethod
    def _held(toxics: list[Toxic]) -> bool:
        """True if a toxic stops the data (Blackhole and Timeout hold it)."""
        return any(isinstance(t, (Blackhole, Timeout)) for t in toxics)

    def _plan(self, stamp: float, data: bytes, toxics: list[Toxic], clock: _Clock
              ) -> list[bytes]:
        """Set when this chunk may leave (Latency) and cut it into pieces (Slicer)."""
        pieces = [data]
        for toxic in toxics:
            if isinstance(toxic, Latency):
                jitter = self._random.uniform(-toxic.jitter_ms, toxic.jitter_ms)
                clock.due = max(clock.due, stamp + max(0.0, toxic.latency_ms + jitter) / 1000)
            elif isinstance(toxic, Slicer):
                pieces = self._slice(pieces, toxic)
        return pieces

    @staticmethod
    async def _send(pieces: list[bytes], toxics: list[Toxic], writer: asyncio.StreamWriter,
                    clock: _Clock) -> None:
        for i, piece in enumerate(pieces):
            for toxic in toxics:
                if isinstance(toxic, Bandwidth):
                    clock.free = max(clock.free, time.monotonic()) + len(piece) / (
                        toxic.rate_kbps * 1000)
                    await _sleep_until(clock.free)
                elif isinstance(toxic, Slicer) and i and toxic.delay_ms:
                    await asyncio.sleep(toxic.delay_ms / 1000)  # the toxic's delay
            writer.write(piece)
            await writer.drain()

    def _on_toxics_changed(self, rearm: bool) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()  # held writers look at the toxics again
        if rearm:  # a removed Timeout or ResetPeer no longer closes anything
            for connection in self._connections:
                for timer in connection.timers:
                    timer.cancel()
                connection.timers.clear()
        for connection in list(self._connections):
            self._arm(connection)

    def _arm(self, connection: _Connection) -> None:
        """Start the close timers of Timeout and ResetPeer (once per connection)."""
        if connection.timers:
            return
        for toxic in self.toxics("upstream") + self.toxics("downstream"):
            if isinstance(toxic, ResetPeer):
                connection.timers.append(
                    self._loop.call_later(toxic.timeout_ms / 1000, connection.abort, True))
                return
            if isinstance(toxic, Timeout) and toxic.timeout_ms:
                connection.timers.append(
                    self._loop.call_later(toxic.timeout_ms / 1000, connection.abort))
                return

    def _slice(self, pieces: list[bytes], toxic: Slicer) -> list[bytes]:
        out = []
        for data in pieces:
            start = 0
            while start < len(data):
                size = toxic.average_size + self._random.randint(
                    -toxic.size_variation, toxic.size_variation)
                size = max(1, size)
                out.append(data[start:start + size])
                start += size
        return out


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)  # the toxic's delay: this is the injected latency
