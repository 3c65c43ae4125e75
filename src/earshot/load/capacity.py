"""How many concurrent real-time streams one server holds, then a soak at 75 % of it.

The search raises the number of Locust users level by level (each user is one
real-time stream, back to back, see ``load/locustfile.py``). A level holds when
no step failed (so every stream was whole: its WER within ``--wer-margin`` of
the clip's whole-file baseline, no WAIT, ERROR, timeout, early close or looping
snapshot), p95 ``first_text`` <= 1.5 s and p95 ``final`` <= 1.5 s. The
capacity is the last level that held before the first that did not.

The soak then runs connect/stream/close churn at 75 % of the capacity for
``--soak`` seconds and checks that no stream failed and that the server's
sessions and memory come back to their baseline once the load stops.

Every level is one run of ``earshot.load.runner`` in a process of its own (Locust
patches with gevent); its JSON summary is kept in the report folder.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from earshot.load.servers import LoadTarget
from earshot.testing.waiting import WaitTimeout, eventually

MAX_P95_S = 1.5
SOAK_SHARE = 0.75
# Memory may settle a little above where it started (allocator arenas, caches).
MEMORY_SLACK_MIB = 48.0
MEMORY_SLACK_SHARE = 0.10
SETTLE_TIMEOUT_S = 30.0


@dataclass
class Level:
    users: int
    summary: dict[str, Any]

    def p95(self, step: str) -> float | None:
        return self.summary["steps"][step]["p95"]

    @property
    def failures(self) -> int:
        return sum(s["failures"] for s in self.summary["steps"].values())

    @property
    def streams(self) -> int:
        return self.summary["steps"]["final"]["count"]

    def problems(self) -> list[str]:
        found = [f"{self.failures} failed step(s)"] if self.failures else []
        if not self.streams:
            found.append("no stream finished")
        for step in ("first_text", "final"):
            p95 = self.p95(step)
            if p95 is not None and p95 > MAX_P95_S:
                found.append(f"p95 {step} {p95:.2f} s over {MAX_P95_S} s")
        return found

    @property
    def held(self) -> bool:
        return not self.problems()


@dataclass
class Soak:
    users: int
    seconds: float
    summary: dict[str, Any]
    memory_before_mib: float | None
    memory_after_mib: float | None
    sessions_after: int | None
    problems: list[str] = field(default_factory=list)

    @property
    def held(self) -> bool:
        return not self.problems


def run_level(target: LoadTarget, users: int, seconds: float, folder: Path, label: str,
              locust_args: Sequence[str]) -> dict[str, Any]:
    """One Locust run in its own process; its JSON summary (also kept in ``folder``)."""
    out = folder / f"{label}.json"
    command = [sys.executable, "-m", "earshot.load.runner", "--host", target.url,
               "--users", str(users), "--spawn-rate", str(max(2, users / 2)),
               "--run-time", str(seconds), "--json", str(out),
               "--", "--end-by", target.end_by, *locust_args]
    with open(folder / f"{label}.log", "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                              timeout=seconds + 180, check=False)
    if done.returncode != 0 or not out.is_file():
        raise RuntimeError(f"the load run for {users} user(s) failed (exit "
                           f"{done.returncode}); see {folder / f'{label}.log'}")
    return json.loads(out.read_text())


def search(target: LoadTarget, levels: Sequence[int], seconds: float, folder: Path,
           locust_args: Sequence[str], say: Any = print, every: bool = False) -> list[Level]:
    """Levels in rising order until the first that does not hold (it is kept too);
    ``every``: all of them, for a side-by-side at the same loads."""
    results: list[Level] = []
    for users in levels:
        say(f"==> {target.name}: {users} user(s) for {seconds:g} s")
        level = Level(users, run_level(target, users, seconds, folder,
                                       f"level-{users:02d}", locust_args))
        results.append(level)
        say(f"    {describe(level)}")
        if not level.held and not every:
            break
    return results


def capacity(levels: Sequence[Level]) -> int:
    """The largest number of users that held, with every level below it held too."""
    best = 0
    for level in levels:
        if not level.held:
            break
        best = level.users
    return best


def describe(level: Level) -> str:
    steps = level.summary["steps"]
    text = (f"{level.streams} streams, p95 first_text {fmt(steps['first_text']['p95'])} s, "
            f"p95 final {fmt(steps['final']['p95'])} s")
    return text + ("" if level.held else "; did not hold: " + "; ".join(level.problems()))


def soak(target: LoadTarget, users: int, seconds: float, folder: Path,
         locust_args: Sequence[str], say: Any = print) -> Soak:
    """Churn at ``users`` for ``seconds``; then sessions and memory back to baseline."""
    before = target.memory_mib()
    say(f"==> soak: {users} user(s) for {seconds:g} s (memory before: {fmt(before, 1)} MiB)")
    summary = run_level(target, users, seconds, folder, "soak", locust_args)
    level = Level(users, summary)
    problems = [f"{level.failures} stream step(s) failed"] if level.failures else []
    sessions = settle(target.sessions, lambda n: n in (0, None),
                      "the server's sessions to return to 0", problems)
    limit = None if before is None else before + max(MEMORY_SLACK_MIB,
                                                      before * MEMORY_SLACK_SHARE)
    after = settle(target.memory_mib,
                   lambda mib: limit is None or mib is None or mib <= limit,
                   f"the server's memory to return under {fmt(limit, 1)} MiB", problems)
    return Soak(users, seconds, summary, before, after, sessions, problems)


def settle(read: Callable[[], Any], ok: Callable[[Any], bool], what: str,
           problems: list[str]) -> Any:
    """Poll ``read`` until ``ok`` (deadline SETTLE_TIMEOUT_S); a miss goes to ``problems``."""
    try:
        return eventually(read, ok, timeout=SETTLE_TIMEOUT_S, description=what)
    except WaitTimeout as exc:
        problems.append(str(exc))
        return read()


def soak_users(found: int) -> int:
    return max(1, math.floor(found * SOAK_SHARE))


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
