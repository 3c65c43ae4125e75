"""Run the scenario suite (``integration/``) in a pytest subprocess and classify it.

The suite runs as it does under ``make integration`` (random order, hard
timeouts, the leak guard), in a process of its own so that nothing of the
validator (its threads, its progress display) counts as the suite's. The
subprocess writes JUnit XML and, through :mod:`earshot.validation.events`,
progress lines that this module reads while it runs.

Each test ends as one of: ``passed``; ``failed`` (a core check when it has no
``extension`` marker, else an extension check); ``not offered`` (skipped
because the server lacks an extension it needs); ``not run`` (skipped for
another reason, e.g. it needs a server of its own and the target is a
deployment). Failures the tests alone do not show count as failed too: a test
collected that never reported (the suite ended first), and a session that
pytest failed at its end with every test passed (the leak guard found what the
session left behind): that one is the core check ``(the session)``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from earshot.plugin import INNER_SESSION_ARGS
from earshot.testing import leaks

ROOT = Path(__file__).resolve().parents[3]
SUITE = ROOT / "integration"
NOT_OFFERED = "not offered: "
POLL_SECONDS = 0.25  # how often the progress file is read while pytest runs
STOP_GRACE_SECONDS = 60.0  # an interrupted suite's time to tear down before SIGKILL


class SuiteError(RuntimeError):
    """The suite could not run to its end (not: some tests failed)."""


SESSION = "(the session)"  # the check a session that failed at its end fails
PENDING = "pending"  # collected, no result yet


@dataclass
class TestResult:
    nodeid: str
    extensions: list[str]
    outcome: str = PENDING  # passed | failed | not offered | not run (| pending)
    message: str = ""
    seconds: float = 0.0

    @property
    def kind(self) -> str:
        return "extension" if self.extensions else "core"

    def as_dict(self) -> dict[str, Any]:
        return {"nodeid": self.nodeid, "kind": self.kind, "extensions": self.extensions,
                "outcome": self.outcome, "message": self.message,
                "seconds": round(self.seconds, 2)}


@dataclass
class SuiteResult:
    tests: list[TestResult] = field(default_factory=list)
    exit_code: int = 0
    seed: str | None = None

    def of(self, outcome: str, kind: str | None = None) -> list[TestResult]:
        return [t for t in self.tests
                if t.outcome == outcome and (kind is None or t.kind == kind)]


def apply(tests: dict[str, TestResult], event: dict[str, Any]) -> None:
    """Fold one progress event into the results."""
    if event["event"] == "collected":
        for entry in event["tests"]:
            tests[entry["nodeid"]] = TestResult(entry["nodeid"], entry["extensions"])
        return
    if event["event"] != "result":
        return
    test = tests.setdefault(event["nodeid"], TestResult(event["nodeid"], []))
    test.seconds += float(event.get("duration", 0.0))
    outcome, message = event["outcome"], event.get("message", "")
    if outcome == "failed":
        if test.outcome != "failed":  # the first failure says the most
            test.outcome, test.message = "failed", _plain(message)
    elif outcome == "skipped":
        offered = message.startswith(NOT_OFFERED)
        test.outcome = "not offered" if offered else "not run"
        test.message = message.removeprefix(NOT_OFFERED) if offered else message
    elif test.outcome != "failed":
        test.outcome = "passed"


def _plain(message: str) -> str:
    return message.removeprefix("AssertionError: ").removeprefix("Failed: ")


def run(pytest_args: Sequence[str], workdir: Path, *,
        on_event: Callable[[dict[str, Any]], None] = lambda event: None,
        poll: Callable[[], None] = lambda: None,
        env: Mapping[str, str] | None = None, tests_from: Path = SUITE) -> SuiteResult:
    """Run the suite (``tests_from``: earshot's scenario suite) with ``pytest_args``
    (the target's options) and ``env`` added to the environment; JUnit XML and the
    pytest log go to ``workdir``. ``poll`` is called while waiting (progress)."""
    workdir = workdir.resolve()  # the suite runs from the root, not from this directory
    events = workdir / "events.jsonl"
    events.touch()
    command = [sys.executable, "-m", "pytest", str(tests_from), "-p", "earshot.validation.events",
               f"--junitxml={workdir / 'junit.xml'}", "-o", "junit_family=xunit1",
               "-p", "no:cacheprovider", *INNER_SESSION_ARGS, *pytest_args]
    env = {**os.environ, **(env or {}), "EARSHOT_VALIDATION_EVENTS": str(events)}
    tests: dict[str, TestResult] = {}
    pending = ""
    with open(workdir / "suite.log", "w", encoding="utf-8") as log, \
            open(events, encoding="utf-8") as feed:
        # A session of its own: a Ctrl-C at the terminal reaches the validator only,
        # which stops the suite once, in stop() (two SIGINTs would cut pytest's teardown).
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while True:
                done = _wait(process, POLL_SECONDS)
                pending += feed.read()
                *lines, pending = pending.split("\n")  # a line still being written waits
                for line in filter(None, lines):
                    event = json.loads(line)
                    apply(tests, event)
                    on_event(event)
                poll()
                if done:
                    break
        finally:
            if process.poll() is None:  # interrupted, or the validator failed
                stop(process)
    log_path = workdir / "suite.log"
    if process.returncode not in (0, 1):
        raise SuiteError(f"the suite did not run to its end: pytest exited "
                         f"{process.returncode} (see {log_path})")
    log_text = log_path.read_text(encoding="utf-8", errors="replace")
    return finish(tests, process.returncode, log_text)


def finish(tests: dict[str, TestResult], exit_code: int, log: str) -> SuiteResult:
    """The suite's result once pytest has ended with ``exit_code`` and written ``log``."""
    results = list(tests.values())
    for test in results:
        if test.outcome == PENDING:
            test.outcome = "failed"
            test.message = "no result: the suite ended before this test reported"
    if exit_code == 1 and not any(t.outcome == "failed" for t in results):
        why = next((line.strip() for line in log.splitlines()
                    if line.startswith("error: ")), "")
        results.append(TestResult(SESSION, [], "failed", (
            f"pytest failed the session at its end with every test passed: {why}"
            if why else "pytest exited 1 with every test passed (see suite.log)")))
    return SuiteResult(results, exit_code, _seed(log))


def stop(process: subprocess.Popen[bytes], grace: float = STOP_GRACE_SECONDS) -> None:
    """End the suite's pytest, whatever happens meanwhile.

    SIGINT first: pytest stops as on Ctrl-C and tears its fixtures down (its servers,
    containers and temp dirs go). If it has not ended within ``grace`` seconds, or
    another interrupt comes while it winds down, SIGKILL; what it then leaves (its
    containers, its temp dirs: their owner is dead) is swept. It has always ended
    when this returns, and a second interrupt is raised only after that."""
    try:
        process.send_signal(signal.SIGINT)
        print(f"stopping the scenario suite (at most {grace:g} s; interrupt again to kill "
              "it now)", file=sys.stderr, flush=True)
        _wait(process, grace)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
            leaks.Leftovers.orphans().remove()


def _wait(process: subprocess.Popen[bytes], seconds: float) -> bool:
    try:
        process.wait(timeout=seconds)
        return True
    except subprocess.TimeoutExpired:
        return False


def _seed(log: str) -> str | None:
    for line in log.splitlines()[:30]:
        if "randomly-seed=" in line:
            return line.split("randomly-seed=")[1].split()[0]
    return None
