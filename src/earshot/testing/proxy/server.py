"""The proxy: listens, accepts, connects each client to the target, and keeps the toxics.

It runs its own event loop on its own thread, so sync and async tests alike
can use it, and toxics can be added and removed while traffic flows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import threading
from collections.abc import Iterator
from typing import Any, Literal

from earshot.testing.proxy.connection import Connection, pump
from earshot.testing.proxy.toxics import PROFILES, Chain, Toxic

Direction = Literal["upstream", "downstream"]
DIRECTIONS: tuple[Direction, ...] = ("upstream", "downstream")
ACCEPT_BACKLOG = 100  # also the most connections taken per wake-up, as asyncio's servers do
ACCEPT_RETRY_S = 0.1  # out of descriptors: pause accepting this long rather than spin


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
        self._connections: set[Connection] = set()
        self._changed = asyncio.Event()  # set, and replaced, whenever the toxics change
        self._random = random.Random()
        self._links = {d: _Link(self, d) for d in DIRECTIONS}
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
        """Put ``toxic`` (a chain: each of its members) after the direction's others."""
        with self._lock:
            for d in DIRECTIONS if direction == "both" else (direction,):
                self._toxics[d].extend(toxic.parts())
        self._toxics_changed(rearm=False)

    def remove(self, toxic: Toxic) -> None:
        """Take ``toxic`` (this instance; a chain: each of its members) off both directions."""
        gone = toxic.parts()
        with self._lock:
            for d in DIRECTIONS:
                self._toxics[d] = [t for t in self._toxics[d] if all(t is not g for g in gone)]
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
        toxics = list(PROFILES[name])
        with self._lock:  # in one step: no chunk meets half of the old and half of the new
            for d in DIRECTIONS:
                self._toxics[d] = list(toxics)
        self._toxics_changed(rearm=True)
        return toxics

    def toxics(self, direction: Direction) -> list[Toxic]:
        """The direction's toxics, in the order their chain applies them."""
        with self._lock:
            return list(self._toxics[direction])

    def describe(self) -> str:
        """The toxic state, for test reports."""
        parts = [f"{d}: {self._links[d].chain().describe()}" for d in DIRECTIONS]
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
            connection = Connection(sock)
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

    async def _serve(self, connection: Connection) -> None:
        """Connect the client to the target, then pump both directions until both end."""
        try:
            client_r, connection.client = await asyncio.open_connection(sock=connection.sock)
            server_r, connection.server = await asyncio.open_connection(*self.target)
            self._arm(connection)
            up, down = self._links["upstream"], self._links["downstream"]
            pumps = [*pump(client_r, connection.server, up.chain, up, connection),
                     *pump(server_r, connection.client, down.chain, down, connection)]
            connection.tasks.extend(pumps)
            await asyncio.gather(*pumps, return_exceptions=True)
        except OSError:
            pass  # the client left or the target refused: nothing to forward
        finally:
            connection.abort()
            connection.release()
            self._connections.discard(connection)

    def _on_toxics_changed(self, rearm: bool) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()  # held chunks look at the toxics again
        if rearm:  # a removed Timeout or ResetPeer no longer cuts anything
            for connection in self._connections:
                for timer in connection.timers:
                    timer.cancel()
                connection.timers.clear()
        for connection in list(self._connections):
            self._arm(connection)

    def _arm(self, connection: Connection) -> None:
        """Start the timer of the first toxic that cuts connections (once per connection)."""
        if connection.timers:
            return
        cut = Chain(*self.toxics("upstream"), *self.toxics("downstream")).cut()
        if cut is not None:
            connection.timers.append(
                self._loop.call_later(cut.after_s, connection.abort, cut.reset))

class _Link:
    """One direction of the proxy as its toxics see it (every connection's alike)."""

    def __init__(self, proxy: Proxy, direction: Direction) -> None:
        self._proxy = proxy
        self._direction = direction

    @property
    def random(self) -> random.Random:
        return self._proxy._random

    def chain(self) -> Chain:
        return Chain(*self._proxy.toxics(self._direction))

    async def until_removed(self, toxic: Toxic) -> None:
        while True:
            changed = self._proxy._changed  # taken before the toxics are read: none is missed
            if all(t is not toxic for t in self._proxy.toxics(self._direction)):
                return
            await changed.wait()
