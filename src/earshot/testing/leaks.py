"""Prove that a test released what it took: snapshot before, compare after.

A snapshot holds the process's live threads, open file descriptors, child
processes and asyncio tasks, plus (when given) the earshot-labelled
containers and the sessions a server lists in /status. ``check()`` waits,
with a deadline, for a later snapshot to hold nothing the first did not
(closing is often asynchronous), then names each leftover: a thread with its
stack, a descriptor with its target, a task with its coroutine, a child with
its command line, a container by id, a session by uid and id.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from earshot.testing.waiting import WaitTimeout, eventually, eventually_async


class LeakError(AssertionError):
    """Something the test took is still held; the text names each thing."""


@dataclass(frozen=True)
class Snapshot:
    threads: frozenset[int] = frozenset()  # idents
    fds: frozenset[int] = frozenset()
    children: frozenset[int] = frozenset()  # pids
    tasks: frozenset[int] = frozenset()  # id() of asyncio tasks
    containers: frozenset[str] = frozenset()
    sessions: frozenset[str] = frozenset()  # "uid/session_id"
    details: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def minus(self, baseline: Snapshot) -> list[str]:
        """What this snapshot holds that ``baseline`` did not, described."""
        found = []
        for kind in ("threads", "fds", "children", "tasks", "containers", "sessions"):
            for item in sorted(getattr(self, kind) - getattr(baseline, kind), key=str):
                found.append(self.details.get(f"{kind}:{item}", f"{kind} {item}"))
        return found


def _current_frames() -> dict[int, Any]:
    """``sys._current_frames()`` with the garbage collector held off: on CPython
    before 3.11.9 a collection inside it (one that frees a ``threading.local``)
    deadlocks the process (python/cpython#106883)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return sys._current_frames()
    finally:
        if enabled:
            gc.enable()


Source = Callable[[], dict[str, str]]  # extra resources: key -> description


def take(
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    containers: Callable[[], list[str]] | None = None,
    sessions: Callable[[], list[dict[str, Any]]] | None = None,
) -> Snapshot:
    details: dict[str, str] = {}
    frames = _current_frames()
    threads = set()
    for thread in threading.enumerate():
        if thread.ident is None or thread is threading.main_thread():
            continue
        threads.add(thread.ident)
        frame = frames.get(thread.ident)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
        details[f"threads:{thread.ident}"] = f"thread {thread.name!r}:\n{stack}"
    fds = set()
    for entry in Path("/proc/self/fd").iterdir():
        fd = int(entry.name)
        try:
            target = os.readlink(entry)
        except OSError:
            continue  # the listing's own descriptor, closed already
        fds.add(fd)
        details[f"fds:{fd}"] = f"file descriptor {fd} -> {target}"
    children = set()
    for child in psutil.Process().children(recursive=True):
        try:
            command = " ".join(child.cmdline())
            details[f"children:{child.pid}"] = f"child process {child.pid}: {command}"
            children.add(child.pid)
        except psutil.Error:
            continue  # gone already
    tasks = set()
    if loop is not None:
        current = asyncio.current_task(loop) if loop.is_running() else None
        for task in asyncio.all_tasks(loop):
            if task is current or task.done():
                continue
            tasks.add(id(task))
            details[f"tasks:{id(task)}"] = f"asyncio task {task.get_name()}: {task.get_coro()!r}"
    labelled = set(containers() if containers else [])
    for cid in labelled:
        details[f"containers:{cid}"] = f"earshot container {cid[:12]}"
    listed = set()
    for session in sessions() if sessions else []:
        key = f"{session['uid']}/{session['session_id']}"
        listed.add(key)
        details[f"sessions:{key}"] = (
            f"server session uid={session['uid']} id={session['session_id']} "
            f"({session.get('audio_seconds', '?')} s of audio)"
        )
    return Snapshot(frozenset(threads), frozenset(fds), frozenset(children), frozenset(tasks),
                    frozenset(labelled), frozenset(listed), details)


DESCRIPTION = "every resource the test took to be released"


def _error(timeout: float, leftovers: list[str]) -> LeakError:
    return LeakError(f"still held {timeout:g} s after the test:\n" + "\n".join(leftovers))


def check(baseline: Snapshot, again: Callable[[], Snapshot], timeout: float = 5.0) -> None:
    """Wait until nothing is held beyond ``baseline``; else raise LeakError naming it."""
    try:
        eventually(lambda: again().minus(baseline), lambda found: not found,
                   timeout=timeout, description=DESCRIPTION)
    except WaitTimeout:
        if leftovers := again().minus(baseline):  # released at the very last moment: fine
            raise _error(timeout, leftovers) from None


async def check_async(baseline: Snapshot, again: Callable[[], Snapshot],
                      timeout: float = 5.0) -> None:
    """``check`` from inside an event loop (polls without blocking it)."""
    try:
        await eventually_async(lambda: again().minus(baseline), lambda found: not found,
                               timeout=timeout, description=DESCRIPTION)
    except WaitTimeout:
        if leftovers := again().minus(baseline):
            raise _error(timeout, leftovers) from None


# -- what a whole test session may leave: nothing ------------------------------------

def temp_prefix(what: str) -> str:
    """The prefix of earshot's temp dirs: ``earshot-<what>-<pid>-``, so a session
    finds its own leftovers and never another session's."""
    return f"earshot-{what}-{os.getpid()}-"


def _labelled() -> frozenset[str]:
    try:
        from earshot.testing.container import labelled_containers

        return frozenset(labelled_containers())
    except Exception:  # no engine, or no docker package: no container can be ours
        return frozenset()


def _owner_of(name: str) -> int | None:
    """The pid in a temp dir named by ``temp_prefix`` (None: not one of those)."""
    parts = name.split("-")
    return int(parts[2]) if len(parts) >= 4 and parts[2].isdigit() else None


def _alive(pid: int | None) -> bool:
    return pid is None or psutil.pid_exists(pid)  # not ours to judge: keep


def _orphaned_containers() -> frozenset[str]:
    try:
        from earshot.testing.container import owners
    except Exception:  # no docker package
        return frozenset()
    try:
        return frozenset(cid for cid, pid in owners().items() if not _alive(pid))
    except Exception:  # no engine: no container can be ours
        return frozenset()


@dataclass(frozen=True)
class Leftovers:
    """Child processes, earshot temp dirs and earshot containers, as of one moment."""

    children: dict[int, str] = field(default_factory=dict)  # pid -> command line
    temp_dirs: frozenset[str] = frozenset()
    containers: frozenset[str] = frozenset()

    @classmethod
    def now(cls) -> Leftovers:
        children = {}
        for child in psutil.Process().children(recursive=True):
            try:
                children[child.pid] = " ".join(child.cmdline())
            except psutil.Error:
                continue  # gone already
        temp = Path(tempfile.gettempdir())
        dirs = frozenset(str(p) for p in temp.glob(temp_prefix("*") + "*") if p.is_dir())
        return cls(children, dirs, _labelled())

    def since(self, before: Leftovers) -> Leftovers:
        """What this moment holds that ``before`` did not."""
        return Leftovers(
            {pid: cmd for pid, cmd in self.children.items() if pid not in before.children},
            self.temp_dirs - before.temp_dirs,
            self.containers - before.containers,
        )

    def __bool__(self) -> bool:
        return bool(self.children or self.temp_dirs or self.containers)

    def describe(self) -> list[str]:
        return ([f"child process {pid}: {cmd}" for pid, cmd in sorted(self.children.items())]
                + [f"temp dir {d}" for d in sorted(self.temp_dirs)]
                + [f"earshot container {c[:12]}" for c in sorted(self.containers)])

    @classmethod
    def orphans(cls) -> Leftovers:
        """Temp dirs and containers of earshot sessions that died without cleaning up
        (killed, or stopped at a hang): their owner's pid is no longer alive."""
        temp = Path(tempfile.gettempdir())
        dirs = frozenset(str(p) for p in temp.glob("earshot-*-*-*")
                         if p.is_dir() and not _alive(_owner_of(p.name)))
        return cls({}, dirs, _orphaned_containers())

    def remove(self) -> None:
        """Kill the processes, delete the dirs, remove the containers (bounded waits)."""
        alive = []
        for pid in self.children:
            try:
                process = psutil.Process(pid)
                process.kill()
                alive.append(process)
            except psutil.Error:
                continue
        psutil.wait_procs(alive, timeout=5)
        for path in self.temp_dirs:
            shutil.rmtree(path, ignore_errors=True)
        if self.containers:
            from earshot.testing.container import remove_labelled

            remove_labelled(self.containers, mine=False)
