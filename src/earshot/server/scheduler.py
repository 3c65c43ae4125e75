"""Fair scheduling of inference passes onto a small pool of worker threads.

Every session has at most one pass queued or running. Sessions that want a
pass wait in one round-robin queue; a worker takes the oldest, runs its pass
in a thread (off the event loop, which stays free for handshakes, health
checks and closes) and, if the session wants another pass, puts it at the
back. A client that sends audio faster than it can be transcribed therefore
gets one pass per turn like everybody else, and cannot starve the others.

Two kinds of pass go to the front of the queue. A session's passes until its
first text (for at most its first session.FIRST_TEXT_SECONDS of audio, so a client
sending silence cannot keep the front) are what a new user waits for, and
they are few. And urgent work: a session's final pass after END_OF_AUDIO
goes to the front of the queue and may start while the session's previous
pass is still running (its result is then stale, and the session drops it).
Each session has one final pass, so this cannot be used to starve anybody,
and it takes the time of a pass off every final transcript.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

log = logging.getLogger("earshot.scheduler")


class Schedulable(Protocol):
    def next_task(self) -> Callable[[], Any] | None:
        """The work of one pass, to run in a worker thread, or None for none now."""

    def task_done(self, result: Any, error: BaseException | None, seconds: float) -> None:
        """Called on the event loop with the pass's result or its exception."""


class FairScheduler:
    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self._queue: deque[Schedulable] = deque()
        self._queued: set[int] = set()  # id() of sessions in the queue
        self._running: Counter[int] = Counter()  # id() -> passes running
        self._wakeup = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.busy = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="earshot-infer")
        self._tasks = [
            asyncio.create_task(self._work(), name=f"earshot-worker-{i}")
            for i in range(self.workers)
        ]

    async def close(self) -> None:
        """Stop the workers; a pass already in a thread is waited for."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)

    def submit(self, session: Schedulable, urgent: bool = False, first: bool = False) -> None:
        """Queue ``session`` unless it is already queued or running.

        ``urgent`` puts it at the front, even while a pass of it is running;
        ``first`` puts it at the front only (the session's first text is due).
        """
        key = id(session)
        front = urgent or first
        if key in self._queued:
            if front:
                self._queue.remove(session)
                self._queue.appendleft(session)
            return
        if self._running[key] and not urgent:
            return  # the session resubmits itself when its pass ends
        self._queued.add(key)
        if front:
            self._queue.appendleft(session)
        else:
            self._queue.append(session)
        self._wakeup.set()

    async def _next(self) -> Schedulable:
        while not self._queue:
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._queue.popleft()

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            session = await self._next()
            key = id(session)
            self._queued.discard(key)
            try:
                task = session.next_task()
            except Exception:
                log.exception("preparing a pass failed")
                task = None
            if task is None:
                continue
            self._running[key] += 1
            self.busy += 1
            started = time.perf_counter()
            result: Any = None
            error: BaseException | None = None
            try:
                assert self._executor is not None
                result = await loop.run_in_executor(self._executor, task)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc
            finally:
                self.busy -= 1
                self._running[key] -= 1
                if not self._running[key]:
                    del self._running[key]
            try:
                session.task_done(result, error, time.perf_counter() - started)
            except Exception:  # one session's bug must not cost the server this worker
                log.exception("handling a pass's result failed")
