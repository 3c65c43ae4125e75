"""Fair round-robin scheduling of passes (fake sessions, real threads)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from earshot.server.scheduler import FairScheduler
from earshot.testing.waiting import eventually_async


class FakeSession:
    def __init__(self, name: str, passes: int, log: list[str], scheduler: FairScheduler,
                 gate: threading.Event | None = None) -> None:
        self.name, self.left, self.log, self.scheduler = name, passes, log, scheduler
        self.gate = gate
        self.done = asyncio.Event()
        self.errors: list[BaseException] = []

    def next_task(self):
        if self.left == 0:
            return None
        self.left -= 1

        def work() -> str:
            if self.gate is not None:
                assert self.gate.wait(5)
            return self.name

        return work

    def task_done(self, result, error, seconds) -> None:
        if error is not None:
            self.errors.append(error)
        else:
            self.log.append(result)
        if self.left:
            self.scheduler.submit(self)
        else:
            self.done.set()


async def test_sessions_take_turns() -> None:
    scheduler = FairScheduler(workers=1)
    scheduler.start()
    log: list[str] = []
    gate = threading.Event()
    try:
        greedy = FakeSession("greedy", 4, log, scheduler, gate)
        quiet = FakeSession("quiet", 2, log, scheduler, gate)
        scheduler.submit(greedy)
        scheduler.submit(quiet)
        scheduler.submit(greedy)  # already queued: ignored
        gate.set()
        await asyncio.wait_for(asyncio.gather(greedy.done.wait(), quiet.done.wait()), 5)
    finally:
        await scheduler.close()
    assert log == ["greedy", "quiet", "greedy", "quiet", "greedy", "greedy"]


async def test_a_failing_pass_is_reported_to_its_session() -> None:
    scheduler = FairScheduler(workers=2)
    scheduler.start()
    log: list[str] = []
    try:
        session = FakeSession("s", 1, log, scheduler)
        session.next_task = lambda: (lambda: 1 / 0)  # type: ignore[method-assign]
        session.task_done = lambda r, e, s: (session.errors.append(e), session.done.set())
        scheduler.submit(session)
        await asyncio.wait_for(session.done.wait(), 5)
    finally:
        await scheduler.close()
    assert isinstance(session.errors[0], ZeroDivisionError)


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FairScheduler(workers=0)


async def test_urgent_work_jumps_the_queue_and_may_overlap_its_own_pass() -> None:
    scheduler = FairScheduler(workers=2)
    scheduler.start()
    log: list[str] = []
    gate = threading.Event()
    try:
        slow = FakeSession("slow", 2, log, scheduler, gate)
        other = FakeSession("other", 1, log, scheduler)
        scheduler.submit(slow)  # its first pass blocks on the gate
        await eventually_async(lambda: scheduler.busy, lambda n: n == 1,
                               description="the gated pass to be running")
        scheduler.submit(slow)  # not urgent: ignored while its pass runs
        assert scheduler.queued == 0
        slow.gate = None  # the urgent pass does not block
        scheduler.submit(other)
        scheduler.submit(slow, urgent=True)
        # The urgent pass jumps ahead of "other" and runs beside the gated one.
        await eventually_async(lambda: list(log), bool, description="a finished pass")
        gate.set()
        await eventually_async(lambda: len(log), lambda n: n == 3,
                               description="all three passes")
    finally:
        gate.set()
        await scheduler.close()
    assert log[0] == "slow" and sorted(log) == ["other", "slow", "slow"]


async def test_a_first_text_pass_jumps_the_queue() -> None:
    scheduler = FairScheduler(workers=1)
    scheduler.start()
    log: list[str] = []
    gate = threading.Event()
    try:
        busy = FakeSession("busy", 1, log, scheduler, gate)
        waiting = [FakeSession(f"old{i}", 1, log, scheduler) for i in range(2)]
        new = FakeSession("new", 2, log, scheduler)
        scheduler.submit(busy)  # holds the only worker until the gate opens
        await eventually_async(lambda: scheduler.busy, lambda n: n == 1,
                               description="the gated pass to be running")
        for session in waiting:
            scheduler.submit(session)
        scheduler.submit(new, first=True)
        assert scheduler.queued == 3
        gate.set()
        await eventually_async(lambda: len(log), lambda n: n == 5,
                               description="every pass")
    finally:
        gate.set()
        await scheduler.close()
    assert log[:2] == ["busy", "new"]
    assert sorted(log) == ["busy", "new", "new", "old0", "old1"]


async def test_a_first_text_pass_waits_while_its_own_pass_runs() -> None:
    scheduler = FairScheduler(workers=2)
    scheduler.start()
    log: list[str] = []
    gate = threading.Event()
    try:
        new = FakeSession("new", 2, log, scheduler, gate)
        scheduler.submit(new, first=True)
        await eventually_async(lambda: scheduler.busy, lambda n: n == 1,
                               description="its first pass to be running")
        scheduler.submit(new, first=True)  # ignored: not urgent, and its pass runs
        assert scheduler.queued == 0 and scheduler.busy == 1
    finally:
        gate.set()
        await scheduler.close()


async def test_a_session_whose_task_done_raises_leaves_the_worker_serving_the_others(
        caplog) -> None:
    """A bug in one session's result handling is logged, and the worker goes on: the
    server does not silently lose a worker (capacity) to it."""
    scheduler = FairScheduler(workers=1)
    scheduler.start()
    log: list[str] = []
    try:
        broken = FakeSession("broken", 1, log, scheduler)

        def explode(result, error, seconds) -> None:
            broken.done.set()
            raise RuntimeError("a bug in task_done")

        broken.task_done = explode  # type: ignore[method-assign]
        scheduler.submit(broken)
        await asyncio.wait_for(broken.done.wait(), 5)
        healthy = FakeSession("healthy", 2, log, scheduler)
        scheduler.submit(healthy)
        await asyncio.wait_for(healthy.done.wait(), 5)
    finally:
        await scheduler.close()
    assert log == ["healthy", "healthy"]
    assert "a bug in task_done" in caplog.text
