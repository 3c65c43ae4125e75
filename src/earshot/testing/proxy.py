"""A TCP proxy that injects real network trouble, with toxics modelled on Toxiproxy's.

The kernel here has no netem and Toxiproxy cannot be installed, so this is the
way to real latency: a user-space proxy between client and server. It runs
its own event loop on its own thread, so sync and async tests alike can use
it, and toxics can be added and removed while traffic flows.

Each connection has two directions, ``upstream`` (client to server) and
``downstream`` (server to client). In each, one task reads and stamps chunks
and another writes them once every toxic of that direction lets them through,
so latency is pipelined (as in Toxiproxy) rather than serialised per chunk.

    with Proxy("127.0.0.1", server_port) as proxy:
        proxy.add(Latency(150, jitter_ms=50), direction="downstream")
        ... connect to proxy.port ...
        proxy.clear()
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

Direction = Literal["upstream", "downstream"]
DIRECTIONS: tuple[Direction, ...] = ("upstream", "downstream")
CHUNK = 32 * 1024


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
    """Hold all data; close the connection after ``timeout_ms`` (0: never close)."""

    timeout_ms: float


@dataclass(frozen=True)
class ResetPeer(Toxic):
    """Reset the connection (TCP RST) ``timeout_ms`` after data meets this toxic."""

    timeout_ms: float = 0.0


@dataclass(frozen=True)
class Blackhole(Toxic):
    """Drop all data silently; the connection stays open."""


# Named conditions: one-way values, applied to each direction.
PROFILES: dict[str, list[Toxic]] = {
    "lan": [Latency(1, jitter_ms=0.5)],
    "wifi": [Latency(20, jitter_ms=10)],
    "cellular": [Latency(150, jitter_ms=50), Bandwidth(125)],  # 1 Mbit/s
    "intercontinental": [Latency(300, jitter_ms=30)],
}


# -- one proxied connection -----------------------------------------------------------


@dataclass(eq=False)  # identity: connections live in a set
class _Connection:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    def abort(self, reset: bool = False) -> None:
        for timer in self.timers:
            timer.cancel()
        for writer in (self.client, self.server):
            if reset:
                sock = writer.get_extra_info("socket")
                if sock is not None:  # linger 0: close() sends RST, not FIN
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
            writer.transport.abort()
        for task in self.tasks:
            task.cancel()


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
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._random = random.Random()
        self.connections_total = 0

    # lifecycle (called from any thread but the proxy's own)

    def start(self) -> Proxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection and the listener, stop the thread (bounded)."""
        if not self._thread.is_alive():
            return
        try:
            self._call(self._shutdown(), timeout)
        finally:
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
        """Refuse new connections and cut the open ones (Toxiproxy's enabled=false)."""
        self._call(self._shutdown())

    def up(self) -> None:
        """Listen again, on the same port."""
        self._call(self._listen())

    # toxics

    def add(self, toxic: Toxic, direction: Direction | Literal["both"] = "downstream") -> None:
        with self._lock:
            for d in DIRECTIONS if direction == "both" else (direction,):
                self._toxics[d].append(toxic)
        if isinstance(toxic, (Timeout, ResetPeer)) and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._arm_all)

    def remove(self, toxic: Toxic) -> None:
        with self._lock:
            for d in DIRECTIONS:
                self._toxics[d] = [t for t in self._toxics[d] if t is not toxic]
        self._rearm()

    def clear(self) -> None:
        with self._lock:
            for d in DIRECTIONS:
                self._toxics[d] = []
        self._rearm()

    def _rearm(self) -> None:
        """A removed Timeout or ResetPeer no longer closes anything."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._disarm_and_arm_all)

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

    # plumbing (runs on the proxy's loop)

    def _call(self, coro: Any, timeout: float = 5.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
            self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for connection in list(self._connections):
            connection.abort()
        tasks = [t for c in self._connections for t in c.tasks]
        await asyncio.gather(*tasks, return_exceptions=True)
        self._connections.clear()
        if server is not None:
            await server.wait_closed()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted just before down(): refuse it too
            client_w.transport.abort()
            return
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            return
        connection = _Connection(client_w, server_w)
        if self._server is None:
            connection.abort()
            return
        self._connections.add(connection)
        self.connections_total += 1
        self._arm(connection)
        for direction, reader, writer in (("upstream", client_r, server_w),
                                          ("downstream", server_r, client_w)):
            queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
            connection.tasks.append(asyncio.create_task(self._read(reader, queue)))
            connection.tasks.append(asyncio.create_task(
                self._write(direction, queue, writer, connection)))
        await asyncio.gather(*connection.tasks, return_exceptions=True)
        connection.abort()
        self._connections.discard(connection)

    async def _read(self, reader: asyncio.StreamReader,
                    queue: asyncio.Queue[tuple[float, bytes] | None]) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(CHUNK):
                queue.put_nowait((time.monotonic(), data))
        queue.put_nowait(None)  # end of stream

    async def _write(self, direction: Direction,
                     queue: asyncio.Queue[tuple[float, bytes] | None],
                     writer: asyncio.StreamWriter, connection: _Connection) -> None:
        due = 0.0  # when the previous chunk left: order is kept
        budget = 0.0  # bandwidth: when the link is free again
        try:
            while (item := await queue.get()) is not None:
                stamp, data = item
                toxics = self.toxics(direction)
                if self._held(toxics):
                    continue
                pieces = [data]
                for toxic in toxics:
                    if isinstance(toxic, Latency):
                        jitter = self._random.uniform(-toxic.jitter_ms, toxic.jitter_ms)
                        due = max(due, stamp + max(0.0, toxic.latency_ms + jitter) / 1000)
                    elif isinstance(toxic, Slicer):
                        pieces = self._slice(pieces, toxic)
                await _sleep_until(due)
                for i, piece in enumerate(pieces):
                    for toxic in toxics:
                        if isinstance(toxic, Bandwidth):
                            budget = max(budget, time.monotonic()) + len(piece) / (
                                toxic.rate_kbps * 1000)
                            await _sleep_until(budget)
                        elif isinstance(toxic, Slicer) and i and toxic.delay_ms:
                            await asyncio.sleep(toxic.delay_ms / 1000)  # the toxic's delay
                    writer.write(piece)
                    await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except ConnectionError:
            connection.abort()

    @staticmethod
    def _held(toxics: list[Toxic]) -> bool:
        """True if a toxic stops this chunk (Blackhole drops; Timeout holds)."""
        return any(isinstance(t, (Blackhole, Timeout)) for t in toxics)

    def _arm_all(self) -> None:
        for connection in list(self._connections):
            self._arm(connection)

    def _disarm_and_arm_all(self) -> None:
        for connection in list(self._connections):
            for timer in connection.timers:
                timer.cancel()
            connection.timers.clear()
        self._arm_all()

    def _arm(self, connection: _Connection) -> None:
        """Start the close timers of Timeout and ResetPeer (once per connection)."""
        if connection.timers:
            return
        loop = asyncio.get_running_loop()
        for toxic in self.toxics("upstream") + self.toxics("downstream"):
            if isinstance(toxic, ResetPeer):
                connection.timers.append(
                    loop.call_later(toxic.timeout_ms / 1000, connection.abort, True))
                return
            if isinstance(toxic, Timeout) and toxic.timeout_ms:
                connection.timers.append(
                    loop.call_later(toxic.timeout_ms / 1000, connection.abort))
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
