"""Fair round-robin scheduling of passes (fake sessions, real threads)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

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
        results: list[object] = []
        session.task_done = lambda r, e, s: (results.append(r), session.errors.append(e),
                                             session.done.set())
        scheduler.submit(session)
        await asyncio.wait_for(session.done.wait(), 5)
    finally:
        await scheduler.close()
    assert isinstance(session.errors[0], ZeroDivisionError)
    assert results == [None]  # no result, only the exception


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"^workers must be at least 1$"):
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


async def test_close_ends_the_worker_tasks_and_their_threads() -> None:
    """The scheduler's tasks and threads are named as earshot's (a leak report names
    them), and close leaves none of them behind."""

    def ours() -> tuple[set[str], set[str]]:
        tasks = {t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("earshot-")}
        threads = {t.name for t in threading.enumerate() if t.name.startswith("earshot-")}
        return tasks, threads

    scheduler = FairScheduler(workers=2)
    scheduler.start()
    log: list[str] = []
    ran_in: list[str] = []
    try:
        session = FakeSession("s", 1, log, scheduler)
        work = session.next_task

        def named_task():
            task = work()
            if task is None:
                return None
            return lambda: (ran_in.append(threading.current_thread().name), task())[1]

        session.next_task = named_task  # type: ignore[method-assign]
        scheduler.submit(session)
        await asyncio.wait_for(session.done.wait(), 5)
        tasks, threads = ours()
        assert tasks == {"earshot-worker-0", "earshot-worker-1"}
        assert ran_in == ["earshot-infer_0"] and threads == {"earshot-infer_0"}
    finally:
        await scheduler.close()
    assert ours() == (set(), set())
    assert log == ["s"]


def scheduler_errors(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    """The scheduler's ERROR records that carry an exception: (message, exception text)."""
    return [(r.getMessage(), str(r.exc_info[1])) for r in caplog.records
            if r.name == "earshot.scheduler" and r.levelno == logging.ERROR and r.exc_info]


async def test_a_session_whose_next_task_raises_is_skipped_and_logged(caplog) -> None:
    scheduler = FairScheduler(workers=1)
    scheduler.start()
    log: list[str] = []
    try:
        broken = FakeSession("broken", 1, log, scheduler)
        calls: list[object] = []

        def explode():
            calls.append("next_task")
            raise RuntimeError("a bug in next_task")

        broken.next_task = explode  # type: ignore[method-assign]
        broken.task_done = lambda *args: calls.append(args)  # type: ignore[method-assign]
        scheduler.submit(broken)
        healthy = FakeSession("healthy", 2, log, scheduler)
        scheduler.submit(healthy)
        await asyncio.wait_for(healthy.done.wait(), 5)
    finally:
        await scheduler.close()
    assert calls == ["next_task"]  # no pass ran for it, so no result was handed to it
    assert log == ["healthy", "healthy"]
    assert scheduler_errors(caplog) == [("preparing a pass failed", "a bug in next_task")]


async def test_a_failure_in_task_done_is_logged_as_such(caplog) -> None:
    scheduler = FairScheduler(workers=1)
    scheduler.start()
    try:
        session = FakeSession("s", 1, [], scheduler)

        def explode(result, error, seconds) -> None:
            session.done.set()
            raise RuntimeError("a bug in task_done")

        session.task_done = explode  # type: ignore[method-assign]
        scheduler.submit(session)
        await asyncio.wait_for(session.done.wait(), 5)
    finally:
        await scheduler.close()
    assert scheduler_errors(caplog) == [("handling a pass's result failed", "a bug in task_done")]


async def test_a_session_with_no_pass_to_run_now_does_not_cost_the_worker() -> None:
    scheduler = FairScheduler(workers=1)
    scheduler.start()
    log: list[str] = []
    try:
        idle = FakeSession("idle", 0, log, scheduler)  # next_task gives None
        scheduler.submit(idle)
        busy = FakeSession("busy", 2, log, scheduler)
        scheduler.submit(busy)
        await asyncio.wait_for(busy.done.wait(), 5)
    finally:
        await scheduler.close()
    assert log == ["busy", "busy"]


async def test_urgent_work_already_queued_moves_to_the_front() -> None:
    scheduler = FairScheduler(workers=1)
    scheduler.start()
    log: list[str] = []
    gate = threading.Event()
    try:
        blocker = FakeSession("blocker", 1, log, scheduler, gate)
        scheduler.submit(blocker)
        await eventually_async(lambda: scheduler.busy, lambda n: n == 1,
                               description="the gated pass to be running")
        a, b, c = (FakeSession(name, 1, log, scheduler) for name in "abc")
        for session in (a, b, c):
            scheduler.submit(session)
        scheduler.submit(c, urgent=True)
        assert scheduler.queued == 3  # moved, not queued twice
        gate.set()
        await eventually_async(lambda: len(log), lambda n: n == 4, description="every pass")
    finally:
        gate.set()
        await scheduler.close()
    assert log == ["blocker", "c", "a", "b"]


async def test_busy_counts_the_passes_running_at_once() -> None:
    scheduler = FairScheduler(workers=2)
    scheduler.start()
    log: list[str] = []
    gate = threading.Event()
    try:
        one, two = (FakeSession(name, 1, log, scheduler, gate) for name in ("one", "two"))
        scheduler.submit(one)
        scheduler.submit(two)
        await eventually_async(lambda: scheduler.busy, lambda n: n == 2,
                               description="both passes to be running")
        gate.set()
        await asyncio.wait_for(asyncio.gather(one.done.wait(), two.done.wait()), 5)
        assert scheduler.busy == 0
    finally:
        gate.set()
        await scheduler.close()
    assert sorted(log) == ["one", "two"]


class OverlappingSession:
    """A session whose passes each wait for their own gate, and which never resubmits."""

    def __init__(self) -> None:
        self.gates: list[threading.Event] = []
        self.done: list[int] = []

    def next_task(self):
        gate = threading.Event()
        self.gates.append(gate)
        index = len(self.gates) - 1
        return lambda: (gate.wait(5), index)[1]

    def task_done(self, result, error, seconds) -> None:
        self.done.append(result)


async def test_a_session_counts_as_running_until_its_last_overlapping_pass_ends() -> None:
    scheduler = FairScheduler(workers=2)
    scheduler.start()
    session = OverlappingSession()
    try:
        scheduler.submit(session)
        await eventually_async(lambda: scheduler.busy, lambda n: n == 1,
                               description="its first pass to be running")
        scheduler.submit(session, urgent=True)  # its final pass, beside the first
        await eventually_async(lambda: scheduler.busy, lambda n: n == 2,
                               description="both its passes to be running")
        session.gates[0].set()
        await eventually_async(lambda: list(session.done), lambda d: d == [0],
                               description="the first pass to end")
        scheduler.submit(session)  # not urgent, and its final pass still runs: ignored
        assert scheduler.queued == 0 and scheduler.busy == 1
        session.gates[1].set()
        await eventually_async(lambda: list(session.done), lambda d: d == [0, 1],
                               description="the final pass to end")
    finally:
        for gate in session.gates:
            gate.set()
        await scheduler.close()
    assert len(session.gates) == 2  # the ignored submit ran no third pass


async def test_task_done_is_told_how_long_the_pass_took() -> None:
    scheduler = FairScheduler(workers=1)
    scheduler.start()
    took: list[float] = []
    reported: list[float] = []
    done = asyncio.Event()

    class Timed:
        def next_task(self):
            def work() -> None:
                started = time.perf_counter()
                time.sleep(0.05)  # the pass's work
                took.append(time.perf_counter() - started)

            return work

        def task_done(self, result, error, seconds) -> None:
            reported.append(seconds)
            done.set()

    try:
        before = time.perf_counter()
        scheduler.submit(Timed())
        await asyncio.wait_for(done.wait(), 5)
        total = time.perf_counter() - before
    finally:
        await scheduler.close()
    assert took[0] <= reported[0] <= total


async def test_close_waits_for_a_pass_already_in_its_thread() -> None:
    scheduler = FairScheduler(workers=1)
    scheduler.start()
    finished = threading.Event()
    running = threading.Event()

    class Slow:
        def next_task(self):
            def work() -> None:
                running.set()
                time.sleep(0.2)  # a pass that takes a while, as inference does
                finished.set()

            return work

        def task_done(self, result, error, seconds) -> None:
            pass

    try:
        scheduler.submit(Slow())
        await eventually_async(running.is_set, bool, description="the pass to be running")
    finally:
        await scheduler.close()
    assert finished.is_set()


async def test_close_is_harmless_before_start_and_a_second_time() -> None:
    never_started = FairScheduler(workers=1)
    await never_started.close()
    scheduler = FairScheduler(workers=1)
    scheduler.start()
    await scheduler.close()
    await scheduler.close()
