"""A synchronous facade over the async client, for code without an event loop.

Each instance runs its own event loop on a private thread (named
``earshot-client-<id>``) and forwards every call to the async core with a
bounded wait. ``close()`` closes the session, stops the loop and joins the
thread, each step bounded; a thread that will not stop raises ThreadLeak
naming it instead of hanging. Callbacks run on that thread; calling
``close()`` from one schedules the close there and returns at once (the
client still ends DISCONNECTED, and the thread ends by itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from earshot.client.core import AsyncTranscriptionClient
from earshot.client.errors import ThreadLeak
from earshot.client.registry import Registry
from earshot.client.state import ConnectionState, Transition
from earshot.protocol import Segment

T = TypeVar("T")
CALL_MARGIN = 5.0  # seconds over an operation's own timeout before the caller gives up


class TranscriptionClient:
    _registry: ClassVar[Registry[TranscriptionClient]] = Registry()

    def __init__(self, url: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, daemon=True)
        self._thread.start()
        self._closed = False
        try:
            self._core: AsyncTranscriptionClient = self._run(_make(url, options), 10.0)
        except BaseException:
            self._stop_thread(5.0)
            raise
        self._thread.name = f"earshot-client-{self._core.client_id[:12]}"
        self._registry.add(self)

    # -- plumbing -----------------------------------------------------------

    def _run_loop(self) -> None:
        """The thread's body: the loop runs until stopped, then is closed here.

        Closing it on its own thread means a client stopped from one of its
        callbacks leaves no open loop behind, whoever calls close() next.
        """
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("blocking call from the client's own thread (a callback?)")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise TimeoutError(f"client call did not finish within {timeout:g} s") from None

    def _stop_thread(self, timeout: float) -> None:
        if self._thread.is_alive():
            # stop() is idempotent; the loop may have been stopped from a callback.
            with contextlib.suppress(RuntimeError):  # closed by the thread meanwhile
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise ThreadLeak(f"thread {self._thread.name} did not stop within {timeout:g} s")
        self._loop.close()  # idempotent; the thread closed it already unless it never ran

    # -- the async core's API, blocking -------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def client_id(self) -> str:
        return self._core.client_id

    @property
    def session_id(self) -> str | None:
        return self._core.session_id

    @property
    def state(self) -> ConnectionState:
        return self._core.state

    @property
    def history(self) -> list[Transition]:
        return self._core.history

    @property
    def transcript(self) -> list[Segment]:
        return self._core.transcript.completed

    @property
    def partial(self) -> Segment | None:
        return self._core.partial

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The private event loop (closed once the client is)."""
        return self._loop

    def connect(self) -> None:
        self._run(self._core.connect(), self._core.connect_timeout + CALL_MARGIN)

    def send_audio(self, samples: np.ndarray) -> None:
        self._run(self._core.send_audio(samples), CALL_MARGIN)

    def stream_file(self, path: str | Path, *, realtime: bool = True, speed: float = 1.0,
                    chunk_ms: float = 100.0, timeout: float = 600.0) -> None:
        self._run(self._core.stream_file(path, realtime=realtime, speed=speed,
                                         chunk_ms=chunk_ms), timeout)

    def finish(self, timeout: float = 30.0) -> list[Segment]:
        return self._run(self._core.finish(timeout), timeout + CALL_MARGIN)

    def wait_for_state(self, state: ConnectionState, timeout: float = 10.0) -> None:
        self._run(self._core.wait_for_state(state, timeout), timeout + CALL_MARGIN)

    def close(self, timeout: float = 5.0) -> None:
        """End DISCONNECTED and stop the thread; idempotent; raises ThreadLeak if stuck."""
        if threading.current_thread() is self._thread:  # from a callback
            self._loop.create_task(self._close_here(timeout))
            return
        if not self._closed:
            self._closed = True
            self._registry.discard(self)
            try:
                if self._thread.is_alive():
                    self._run(self._core.close(timeout), timeout + CALL_MARGIN)
            finally:
                self._stop_thread(timeout)
        elif not self._loop.is_closed():
            self._stop_thread(timeout)  # closed from a callback: join and close here

    async def _close_here(self, timeout: float) -> None:
        await self._core.close(timeout)
        self._closed = True
        self._registry.discard(self)
        self._loop.stop()  # the thread's run_forever returns; the thread ends

    def __enter__(self) -> TranscriptionClient:
        try:
            self.connect()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- registry -----------------------------------------------------------

    @classmethod
    def active_instances(cls) -> list[TranscriptionClient]:
        return cls._registry.open()

    @classmethod
    def close_all(cls, timeout: float = 5.0) -> list[BaseException]:
        """Close every live client at once (each on a thread of a small pool).

        No lock is held while closing, and each client closes on its own loop,
        so closing many in parallel cannot deadlock. Returns what failed.
        """
        clients = cls.active_instances()
        if not clients:
            return []
        errors: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=min(16, len(clients))) as pool:
            for future in [pool.submit(c.close, timeout) for c in clients]:
                try:
                    future.result(timeout + 2 * CALL_MARGIN)
                except BaseException as exc:
                    errors.append(exc)
        return errors


async def _make(url: str, options: dict[str, Any]) -> AsyncTranscriptionClient:
    """Created on the client's own loop, where it will live."""
    return AsyncTranscriptionClient(url, **options)
