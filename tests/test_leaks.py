"""Leak snapshots: what a test took, named, and the waits that let it settle.

These run under the leak guard themselves, so each one releases what it takes
(threads joined, files closed, children reaped) before it ends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from earshot.testing import leaks
from earshot.testing.leaks import LeakError, Leftovers, Snapshot, take, temp_prefix
from earshot.testing.waiting import eventually

# A child that lives until the test ends it (its sleep is its life, not a wait).
SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def parked_thread() -> Iterator[threading.Thread]:
    """A thread that waits in ``park_here`` until the test ends."""
    release = threading.Event()

    def park_here() -> None:
        release.wait(30)

    thread = threading.Thread(target=park_here, name="parked")
    thread.start()
    try:
        yield thread
    finally:
        release.set()
        thread.join(10)


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(SLEEPER)
    try:
        yield process
    finally:
        process.kill()
        process.wait(10)


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system temp dir, moved for this test to a folder of its own."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def dead_pid() -> int:
    """A pid no process has: above the kernel's largest."""
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


# -- snapshots ----------------------------------------------------------------------


def test_a_new_thread_is_named_with_its_stack(parked_thread: threading.Thread) -> None:
    snapshot = take()
    assert parked_thread.ident in snapshot.threads
    [found] = snapshot.minus(dataclasses.replace(snapshot, threads=snapshot.threads - {
        parked_thread.ident}))
    assert found.startswith("thread 'parked':\n") and "in park_here" in found
    stack = found.splitlines()[1:]  # as traceback prints it: every line indented
    assert stack and all(line.startswith("  ") for line in stack), stack


def test_a_thread_without_a_frame_is_named_without_a_stack(
        parked_thread: threading.Thread, monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread listed before it has a frame (or after it lost it) shows no stack:
    not the snapshot's own, which would point at the guard instead of the leak."""
    monkeypatch.setattr(leaks, "_current_frames", dict)
    snapshot = take()
    assert snapshot.details[f"threads:{parked_thread.ident}"] == "thread 'parked':\n"


def test_the_main_thread_is_never_counted() -> None:
    assert threading.main_thread().ident not in take().threads


def test_an_open_file_is_named_with_its_target(tmp_path: Path) -> None:
    baseline = take()
    path = tmp_path / "held.txt"
    with open(path, "w") as held:
        assert take().minus(baseline) == [f"file descriptor {held.fileno()} -> {path}"]
    assert take().minus(baseline) == []


def test_a_child_is_named_with_its_command_line(child: subprocess.Popen[bytes]) -> None:
    snapshot = take()
    assert snapshot.minus(dataclasses.replace(snapshot, children=frozenset())) == [
        f"child process {child.pid}: {' '.join(SLEEPER)}"]


def test_a_grandchild_counts_as_a_child() -> None:
    script = "import subprocess, sys; subprocess.run([sys.executable, '-c', sys.argv[1]])"
    parent = subprocess.Popen([sys.executable, "-c", script, "import time; time.sleep(60)"])
    try:
        [grandchild] = eventually(lambda: psutil.Process(parent.pid).children(), timeout=10,
                                  description="the grandchild to start")
        assert {parent.pid, grandchild.pid} <= take().children
        grandchild.kill()  # the parent reaps it and ends
        parent.wait(10)
    finally:
        parent.kill()
        parent.wait(10)


def test_a_grandchild_is_left_over_as_a_child() -> None:
    script = "import subprocess, sys; subprocess.run([sys.executable, '-c', sys.argv[1]])"
    parent = subprocess.Popen([sys.executable, "-c", script, "import time; time.sleep(60)"])
    try:
        [grandchild] = eventually(lambda: psutil.Process(parent.pid).children(), timeout=10,
                                  description="the grandchild to start")
        assert {parent.pid, grandchild.pid} <= set(Leftovers.now().children)
        grandchild.kill()  # the parent reaps it and ends
        parent.wait(10)
    finally:
        parent.kill()
        parent.wait(10)


def test_every_open_file_counts_past_a_gap_in_the_numbers(tmp_path: Path) -> None:
    first, second = open(tmp_path / "a", "w"), open(tmp_path / "b", "w")  # noqa: SIM115
    try:
        first.close()  # the lowest free number: where the listing's own descriptor goes
        assert second.fileno() in take().fds
    finally:
        second.close()


def test_tasks_of_a_loop_running_in_another_thread_are_counted() -> None:
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, name="other-loop")
    runner.start()
    try:
        future = asyncio.run_coroutine_threadsafe(asyncio.sleep(30), loop)
        task_ids = eventually(lambda: take(loop=loop).tasks, timeout=5,
                              description="the task to be seen")
        assert len(task_ids) == 1
        future.cancel()
        eventually(lambda: not take(loop=loop).tasks, timeout=5,
                   description="the cancelled task to end")
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(10)
        loop.close()


async def test_a_pending_task_is_named_with_its_coroutine() -> None:
    loop = asyncio.get_running_loop()
    baseline = take(loop=loop)
    done = asyncio.create_task(asyncio.sleep(0), name="done-already")
    await done

    async def pending_work() -> None:
        await asyncio.sleep(30)

    pending = asyncio.create_task(pending_work(), name="pending")
    try:
        snapshot = take(loop=loop)
        [found] = snapshot.minus(baseline)
        assert found.startswith("asyncio task pending: <coroutine object ")
        assert "pending_work" in found
        assert id(done) not in snapshot.tasks  # finished tasks are released
        assert id(asyncio.current_task()) not in snapshot.tasks  # the one taking it
        assert take().tasks == frozenset()  # no loop given: no tasks looked at
    finally:
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)


def test_tasks_of_a_loop_that_is_not_running_are_counted() -> None:
    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(asyncio.sleep(30), name="parked-task")
        assert take(loop=loop).tasks == frozenset({id(task)})
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        assert take(loop=loop).tasks == frozenset()
    finally:
        loop.close()


def test_containers_and_sessions_come_from_their_sources() -> None:
    cid = "0123456789abcdef" * 4
    sessions = [{"uid": "u1", "session_id": "s1", "audio_seconds": 2.5},
                {"uid": "u2", "session_id": "s2"}]
    snapshot = take(containers=lambda: [cid], sessions=lambda: sessions)
    assert snapshot.containers == frozenset({cid})
    assert snapshot.sessions == frozenset({"u1/s1", "u2/s2"})
    assert Snapshot(containers=snapshot.containers, sessions=snapshot.sessions,
                    details=snapshot.details).minus(Snapshot()) == [
        "earshot container 0123456789ab",
        "server session uid=u1 id=s1 (2.5 s of audio)",
        "server session uid=u2 id=s2 (? s of audio)",
    ]
    assert take().containers == take().sessions == frozenset()  # no sources: none


def test_minus_lists_only_what_is_new_by_kind_in_order() -> None:
    baseline = Snapshot(threads=frozenset({1}), fds=frozenset({3}))
    later = Snapshot(threads=frozenset({1, 2}), fds=frozenset({3, 11, 4}),
                     children=frozenset({7}), tasks=frozenset({8}),
                     containers=frozenset({"c"}), sessions=frozenset({"u/s"}),
                     details={"fds:4": "file descriptor 4 -> /x"})
    assert later.minus(baseline) == ["threads 2", "fds 11", "file descriptor 4 -> /x",
                                     "children 7", "tasks 8", "containers c", "sessions u/s"]
    assert baseline.minus(later) == []


def test_taking_a_snapshot_leaves_the_garbage_collector_as_it_was() -> None:
    assert gc.isenabled()
    take()
    assert gc.isenabled()
    gc.disable()
    try:
        take()
        assert not gc.isenabled()
    finally:
        gc.enable()


# Many snapshots while threads keep entering new frames and garbage holding a
# threading.local waits to be collected: on CPython before 3.11.9 a collection
# inside sys._current_frames() then deadlocks the process (python/cpython#106883).
# In a subprocess, so that a deadlock fails this test instead of hanging the run.
_STRESS = """
import gc, threading, time
from earshot.testing import leaks
stop = threading.Event()
def step():
    time.sleep(0.0001)
def spin():
    while not stop.is_set():
        step()
threads = [threading.Thread(target=spin) for _ in range(4)]
for t in threads:
    t.start()
class Holder:
    pass
gc.set_threshold(3)
ends = time.monotonic() + 1.0
while time.monotonic() < ends:
    holder = Holder()
    holder.local = threading.local()
    holder.local.x = 1
    holder.me = holder
    del holder
    leaks.take()
stop.set()
for t in threads:
    t.join()
print("no deadlock")
"""


def test_snapshots_never_deadlock_in_a_garbage_collection() -> None:
    src = str(Path(leaks.__file__).resolve().parents[2])  # this very code, not an install
    env = {**os.environ, "PYTHONPATH": src}
    process = subprocess.Popen([sys.executable, "-c", _STRESS], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail("leaks.take() deadlocked (a collection inside sys._current_frames)")
    assert out.strip() == "no deadlock", err


# -- waiting for a release ----------------------------------------------------------


def test_check_waits_for_a_thread_that_is_still_ending() -> None:
    baseline = take()
    thread = threading.Thread(target=time.sleep, args=(0.2,), name="ending")
    thread.start()
    started = time.monotonic()
    leaks.check(baseline, take, timeout=5)
    assert not thread.is_alive() and time.monotonic() - started < 5
    thread.join()


def test_check_names_what_is_still_held_after_its_deadline(tmp_path: Path) -> None:
    baseline = take()
    with open(tmp_path / "kept", "w") as kept:
        started = time.monotonic()
        with pytest.raises(LeakError) as caught:
            leaks.check(baseline, take, timeout=0.3)
        assert time.monotonic() - started >= 0.3
        assert str(caught.value) == (f"still held 0.3 s after the test:\n"
                                     f"file descriptor {kept.fileno()} -> {tmp_path / 'kept'}")


class ReleasedAtTheDeadline:
    """Snapshots that hold ``leftover`` up to the first one taken at or after the
    deadline (a wait's last poll), and nothing from the next one on."""

    def __init__(self, leftover: Snapshot, timeout: float) -> None:
        self.leftover, self.deadline = leftover, time.monotonic() + timeout
        self.released = False

    def __call__(self) -> Snapshot:
        if self.released:
            return Snapshot()
        self.released = time.monotonic() >= self.deadline
        return self.leftover


def test_check_names_each_leftover_on_a_line_of_its_own() -> None:
    held = Snapshot(fds=frozenset({998, 999}), details={"fds:998": "fd 998", "fds:999": "fd 999"})
    started = time.monotonic()
    with pytest.raises(LeakError) as caught:
        leaks.check(Snapshot(), lambda: held, timeout=0.2)
    assert time.monotonic() - started < 2.0  # it gave up at its own deadline
    assert str(caught.value) == "still held 0.2 s after the test:\nfd 998\nfd 999"


def test_check_forgives_what_is_released_right_at_its_deadline() -> None:
    leaks.check(Snapshot(), ReleasedAtTheDeadline(Snapshot(fds=frozenset({999})), 0.3),
                timeout=0.3)


async def test_check_async_waits_without_blocking_the_loop() -> None:
    loop = asyncio.get_running_loop()
    baseline = take(loop=loop)
    task = asyncio.create_task(asyncio.sleep(0.2))
    await leaks.check_async(baseline, lambda: take(loop=loop), timeout=5)
    assert task.done()


class Counted:
    """A snapshot source that counts its calls: holds a descriptor for the first
    ``held`` calls, then nothing."""

    def __init__(self, held: int) -> None:
        self.calls, self.held = 0, held

    def __call__(self) -> Snapshot:
        self.calls += 1
        return Snapshot(fds=frozenset({999})) if self.calls <= self.held else Snapshot()


@pytest.mark.parametrize("held", [0, 2])
def test_check_returns_at_the_first_clean_snapshot(held: int) -> None:
    source = Counted(held)
    leaks.check(Snapshot(), source, timeout=5)
    assert source.calls == held + 1


@pytest.mark.parametrize("held", [0, 2])
async def test_check_async_returns_at_the_first_clean_snapshot(held: int) -> None:
    source = Counted(held)
    await leaks.check_async(Snapshot(), source, timeout=5)
    assert source.calls == held + 1


async def test_check_async_names_what_is_still_held_after_its_deadline() -> None:
    loop = asyncio.get_running_loop()
    baseline = take(loop=loop)
    task = asyncio.create_task(asyncio.sleep(30), name="stuck")
    started = time.monotonic()
    try:
        with pytest.raises(LeakError, match=r"^still held 0\.2 s after the test:\n"
                                            r"asyncio task stuck: <coroutine object sleep"):
            await leaks.check_async(baseline, lambda: take(loop=loop), timeout=0.2)
        assert time.monotonic() - started < 2.0  # it gave up at its own deadline
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_check_async_forgives_what_is_released_right_at_its_deadline() -> None:
    await leaks.check_async(Snapshot(), ReleasedAtTheDeadline(
        Snapshot(tasks=frozenset({1})), 0.2), timeout=0.2)


# -- what a session may leave -------------------------------------------------------


def test_temp_dirs_are_marked_with_their_owners_pid() -> None:
    prefix = temp_prefix("server")
    assert prefix == f"earshot-server-{os.getpid()}-"
    assert leaks._owner_of(prefix + "x1y2") == os.getpid()
    assert leaks._owner_of("earshot-server-notapid-x") is None
    assert leaks._owner_of("earshot-server-123") is None  # no random tail: not one of ours


def test_now_finds_this_processs_temp_dirs_only(temp_root: Path) -> None:
    ours = temp_root / (temp_prefix("log") + "abc")
    ours.mkdir()
    (temp_root / (temp_prefix("log") + "file")).write_text("not a dir")
    (temp_root / f"earshot-log-{dead_pid()}-abc").mkdir()
    (temp_root / "unrelated").mkdir()
    assert Leftovers.now().temp_dirs == frozenset({str(ours)})


def test_now_finds_the_children_with_their_command_lines(
        child: subprocess.Popen[bytes]) -> None:
    assert Leftovers.now().children[child.pid] == " ".join(SLEEPER)


def test_since_keeps_only_what_is_new() -> None:
    before = Leftovers({1: "old"}, frozenset({"/t/a"}), frozenset({"c1"}))
    later = Leftovers({1: "old", 2: "new"}, frozenset({"/t/a", "/t/b"}),
                      frozenset({"c1", "c2"}))
    assert later.since(before) == Leftovers({2: "new"}, frozenset({"/t/b"}),
                                            frozenset({"c2"}))
    assert not later.since(later)


@pytest.mark.parametrize("held", [
    Leftovers(children={1: "x"}),
    Leftovers(temp_dirs=frozenset({"/t/a"})),
    Leftovers(containers=frozenset({"c"})),
], ids=["child", "temp dir", "container"])
def test_any_one_leftover_is_something(held: Leftovers) -> None:
    assert held and not Leftovers()


def test_describe_names_each_leftover_in_order() -> None:
    held = Leftovers({20: "b", 3: "a"}, frozenset({"/t/z", "/t/y"}),
                     frozenset({"f" * 64, "e" * 64}))
    assert held.describe() == [
        "child process 3: a", "child process 20: b",
        "temp dir /t/y", "temp dir /t/z",
        f"earshot container {'e' * 12}", f"earshot container {'f' * 12}",
    ]


def test_orphans_are_the_temp_dirs_whose_owner_is_dead(temp_root: Path) -> None:
    orphan = temp_root / f"earshot-log-{dead_pid()}-abc"
    orphan.mkdir()
    (temp_root / (temp_prefix("log") + "abc")).mkdir()  # alive: this process
    (temp_root / "earshot-log-nopid-abc").mkdir()  # not ours to judge
    (temp_root / f"earshot-log-{dead_pid()}-file").write_text("not a dir")
    assert Leftovers.orphans().temp_dirs == frozenset({str(orphan)})
    assert Leftovers.orphans().children == {}


def test_remove_kills_the_children_and_deletes_the_dirs(tmp_path: Path) -> None:
    process = subprocess.Popen(SLEEPER)
    folder = tmp_path / "left"
    (folder / "inside").mkdir(parents=True)
    try:
        Leftovers({dead_pid(): "gone already", process.pid: "sleeper"},
                  frozenset({str(folder), str(tmp_path / "gone already")})).remove()
        assert process.poll() is not None  # killed and waited for
        assert not folder.exists()
    finally:
        process.kill()
        process.wait(10)


def test_a_child_that_has_exited_is_skipped_and_the_rest_still_counted() -> None:
    exited = subprocess.Popen([sys.executable, "-c", "pass"])  # a zombie until reaped
    live = None
    try:
        eventually(lambda: psutil.Process(exited.pid).status() == psutil.STATUS_ZOMBIE,
                   timeout=10, description="the first child to exit")
        live = subprocess.Popen(SLEEPER)
        snapshot, now = take(), Leftovers.now()
        assert live.pid in snapshot.children and exited.pid not in snapshot.children
        assert live.pid in now.children and exited.pid not in now.children
    finally:
        if live is not None:
            live.kill()
            live.wait(10)
        exited.wait(10)



class StandInEngine:
    """Stand-in for the Docker engine behind earshot.testing.container (no Docker
    here, and no container may be started): its three calls that leaks.py makes,
    answering from a fixed list and recording each removal."""

    def __init__(self, owners: dict[str, int | None], mine: list[str]) -> None:
        self._owners, self._mine = owners, mine
        self.removed: list[tuple[frozenset[str], bool]] = []

    def labelled_containers(self, mine: bool = True) -> list[str]:
        return list(self._mine if mine else self._owners)

    def owners(self) -> dict[str, int | None]:
        return dict(self._owners)

    def remove_labelled(self, ids: Any = None, mine: bool = True) -> int:
        self.removed.append((frozenset(ids), mine))
        return len(ids)


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> StandInEngine:
    from earshot.testing import container

    stand_in = StandInEngine({"dead" * 16: dead_pid(), "live" * 16: os.getpid(),
                              "anon" * 16: None}, mine=["live" * 16])
    for name in ("labelled_containers", "owners", "remove_labelled"):
        monkeypatch.setattr(container, name, getattr(stand_in, name))
    return stand_in


def test_now_counts_this_processs_containers(engine: StandInEngine, temp_root: Path) -> None:
    assert Leftovers.now().containers == frozenset({"live" * 16})


def test_orphans_are_the_containers_whose_owner_is_dead(engine: StandInEngine,
                                                        temp_root: Path) -> None:
    assert Leftovers.orphans().containers == frozenset({"dead" * 16})


def test_without_an_engine_no_container_can_be_ours(monkeypatch: pytest.MonkeyPatch,
                                                     temp_root: Path) -> None:
    from earshot.testing import container

    def no_engine(*args: object, **kwargs: object) -> Any:
        raise ConnectionError("no Docker engine")

    monkeypatch.setattr(container, "labelled_containers", no_engine)
    monkeypatch.setattr(container, "owners", no_engine)
    assert Leftovers.now().containers == Leftovers.orphans().containers == frozenset()


def test_remove_removes_the_containers_named_whoever_made_them(engine: StandInEngine) -> None:
    Leftovers(containers=frozenset({"dead" * 16})).remove()
    assert engine.removed == [(frozenset({"dead" * 16}), False)]
    Leftovers().remove()  # nothing to remove: the engine is not asked
    assert len(engine.removed) == 1
