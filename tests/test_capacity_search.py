"""The capacity search and the soak, without Locust or a server.

A level's load run is one process of ``python -m earshot.load.runner``; here the
interpreter is a stand-in shell script that records its command line, writes
to its output and error, leaves the summary it is given where ``--json`` says
and exits as told. The search and the soak get a stand-in for the whole load
run (``run_level``) and a stand-in target whose sessions and memory follow a
script, so each of them runs in milliseconds.
"""

from __future__ import annotations

import json
import shlex
import stat
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from earshot.load import capacity as cap

URL = "ws://127.0.0.1:9"


def summary(failures: int = 0, first: float | None = 1.0, final: float | None = 0.2,
            streams: int = 4) -> dict[str, Any]:
    """A runner summary, as the locustfile's recorder writes it."""
    def step(p95: float | None, failed: int = 0) -> dict[str, Any]:
        return {"count": streams, "failures": failed, "p50": p95, "p95": p95, "max": p95}

    return {"steps": {"connect": step(0.01, failures), "first_text": step(first),
                      "final": step(final)}, "failures": {}, "generator": {}}


class Readings:
    """A reading that follows a script, then stays at its last value."""

    def __init__(self, *values: float | None) -> None:
        self.values, self.reads = list(values), 0

    def __call__(self) -> float | None:
        self.reads += 1
        return self.values.pop(0) if len(self.values) > 1 else self.values[0]


@dataclass
class Target:
    """A stand-in LoadTarget: a name, a URL, and scripted sessions and memory."""

    memory: Readings = field(default_factory=lambda: Readings(None))
    open_sessions: Readings = field(default_factory=lambda: Readings(None))
    name: str = "stand-in"
    url: str = URL
    end_by: str = "eot"

    def memory_mib(self) -> float | None:
        return self.memory()

    def sessions(self) -> int | None:
        value = self.open_sessions()
        return None if value is None else int(value)


# -- one level: the runner's process ---------------------------------------------------


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Makes the interpreter run_level starts a stand-in; returns what it was given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    argv = bin_dir / "argv"

    def install(result: dict[str, Any] | None, exit_code: int = 0) -> Path:
        written = bin_dir / "summary.json"
        written.write_text(json.dumps(result))
        script = bin_dir / "python"
        script.write_text("\n".join([
            "#!/bin/sh",
            f'printf "%s\\n" "$@" > {shlex.quote(str(argv))}',
            'echo "runner stand-in: started"',
            'echo "runner stand-in: a warning" >&2',
            'out=""; prev=""',
            'for arg in "$@"; do [ "$prev" = "--json" ] && out="$arg"; prev="$arg"; done',
            *([f'cp {shlex.quote(str(written))} "$out"'] if result is not None else []),
            f"exit {exit_code}",
        ]) + "\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        monkeypatch.setattr(cap, "sys", SimpleNamespace(executable=str(script)))
        return argv

    yield install


@pytest.mark.parametrize(("users", "spawn_rate"), [(2, "2"), (10, "5.0")])
def test_a_level_is_one_runner_process_whose_summary_is_kept_and_returned(
        runner: Any, tmp_path: Path, users: int, spawn_rate: str) -> None:
    argv = runner(summary())
    folder = tmp_path / "report"
    folder.mkdir()
    result = cap.run_level(Target(), users, 1.5, folder, "level-x", ["--clips", "jfk.flac"])
    assert result == summary()
    assert json.loads((folder / "level-x.json").read_text()) == summary()
    # every user is spawned within about two seconds (at least two a second)
    assert argv.read_text().splitlines() == [
        "-m", "earshot.load.runner", "--host", URL, "--users", str(users),
        "--spawn-rate", spawn_rate, "--run-time", "1.5", "--json", str(folder / "level-x.json"),
        "--", "--end-by", "eot", "--clips", "jfk.flac"]
    log = (folder / "level-x.log").read_text()  # its output and its errors, for a post-mortem
    assert "runner stand-in: started" in log and "runner stand-in: a warning" in log


@pytest.mark.parametrize(("result", "exit_code"), [(summary(), 3), (None, 0)],
                         ids=["exit status", "no summary"])
def test_a_failed_run_raises_naming_its_load_exit_and_log(
        runner: Any, tmp_path: Path, result: dict[str, Any] | None, exit_code: int) -> None:
    runner(result, exit_code)
    with pytest.raises(RuntimeError) as raised:
        cap.run_level(Target(), 4, 1.0, tmp_path, "level-04", [])
    assert str(raised.value) == (f"the load run for 4 user(s) failed (exit {exit_code}); "
                                 f"see {tmp_path / 'level-04.log'}")


def test_a_levels_runner_is_bounded_at_its_run_time_plus_three_minutes(
        runner: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A runner that hangs (a stuck Locust) is killed at its bound: the search never
    waits for ever. The bound is given to subprocess.run, recorded here on its way."""
    runner(summary())
    bounds: list[float | None] = []

    def bounded_run(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        bounds.append(kwargs.get("timeout"))
        return subprocess.run(*args, **kwargs)

    monkeypatch.setattr(cap, "subprocess", SimpleNamespace(run=bounded_run,
                                                          STDOUT=subprocess.STDOUT))
    cap.run_level(Target(), 2, 40.0, tmp_path, "level-02", [])
    assert bounds == [220.0]


# -- the search ------------------------------------------------------------------------


@dataclass
class LoadRuns:
    """A stand-in for run_level: each load gets the summary scripted for it."""

    by_users: dict[int, dict[str, Any]]
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def __call__(self, target: Any, users: int, seconds: float, folder: Path, label: str,
                 locust_args: Sequence[str]) -> dict[str, Any]:
        self.calls.append((target, users, seconds, folder, label, list(locust_args)))
        return self.by_users[users]


LEVELS = {1: summary(), 2: summary(first=1.2), 4: summary(final=1.6), 8: summary()}


def test_the_search_rises_until_the_first_level_that_does_not_hold(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    runs = LoadRuns(LEVELS)
    monkeypatch.setattr(cap, "run_level", runs)
    said: list[str] = []
    target = Target()
    levels = cap.search(target, [1, 2, 4, 8], 30, tmp_path, ["--x"], say=said.append)
    assert [(lv.users, lv.held) for lv in levels] == [(1, True), (2, True), (4, False)]
    assert [lv.summary for lv in levels] == [LEVELS[1], LEVELS[2], LEVELS[4]]
    assert runs.calls == [(target, n, 30, tmp_path, f"level-{n:02d}", ["--x"]) for n in (1, 2, 4)]
    assert said == [
        "==> stand-in: 1 user(s) for 30 s",
        "    4 streams, p95 first_text 1.00 s, p95 final 0.20 s",
        "==> stand-in: 2 user(s) for 30 s",
        "    4 streams, p95 first_text 1.20 s, p95 final 0.20 s",
        "==> stand-in: 4 user(s) for 30 s",
        "    4 streams, p95 first_text 1.00 s, p95 final 1.60 s; "
        "did not hold: p95 final 1.60 s over 1.5 s",
    ]
    assert cap.capacity(levels) == 2


def test_a_side_by_side_search_runs_every_level(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.setattr(cap, "run_level", LoadRuns(LEVELS))
    levels = cap.search(Target(), [1, 2, 4, 8], 30, tmp_path, [], say=lambda _: None,
                        every=True)
    assert [(lv.users, lv.held) for lv in levels] == [(1, True), (2, True), (4, False),
                                                      (8, True)]
    assert cap.capacity(levels) == 2  # a level that held above a failed one does not count


def test_a_level_holds_at_its_p95_limit_and_needs_a_finished_stream() -> None:
    at_limit = cap.Level(1, summary(first=cap.MAX_P95_S, final=cap.MAX_P95_S))
    assert at_limit.problems() == [] and at_limit.held
    idle = cap.Level(1, summary(first=None, final=None, streams=0))
    assert idle.problems() == ["no stream finished"] and not idle.held
    assert cap.describe(idle) == ("0 streams, p95 first_text - s, p95 final - s; "
                                  "did not hold: no stream finished")
    worst = cap.Level(1, summary(failures=2, first=2.0, final=1.75))
    assert cap.describe(worst) == (
        "4 streams, p95 first_text 2.00 s, p95 final 1.75 s; did not hold: 2 failed step(s); "
        "p95 first_text 2.00 s over 1.5 s; p95 final 1.75 s over 1.5 s")


# -- the soak --------------------------------------------------------------------------


def soak(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, target: Target,
         result: dict[str, Any] | None = None, settle_s: float = 2.0
         ) -> tuple[cap.Soak, LoadRuns, list[str]]:
    """One soak of 3 users; the settling gets ``settle_s``, not the 30 s a real server
    gets (the readings here settle within a few polls, or never)."""
    runs = LoadRuns({3: result or summary()})
    monkeypatch.setattr(cap, "run_level", runs)
    monkeypatch.setattr(cap, "SETTLE_TIMEOUT_S", settle_s)
    said: list[str] = []
    return cap.soak(target, 3, 60, tmp_path, ["--x"], say=said.append), runs, said


def test_a_clean_soak_holds_once_sessions_and_memory_settle(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    target = Target(memory=Readings(100.0, 190.0, 150.0, 140.0),
                    open_sessions=Readings(2, 1, 0))
    result, runs, said = soak(monkeypatch, tmp_path, target)
    assert result.held and result.problems == []
    assert (result.users, result.seconds, result.summary) == (3, 60, summary())
    assert (result.memory_before_mib, result.memory_after_mib, result.sessions_after) == (
        100.0, 140.0, 0)
    assert runs.calls == [(target, 3, 60, tmp_path, "soak", ["--x"])]
    assert said == ["==> soak: 3 user(s) for 60 s (memory before: 100.0 MiB)"]


@pytest.mark.parametrize(("before", "after"), [(100.0, 148.0), (1000.0, 1100.0)],
                         ids=["48 MiB slack", "10 % slack"])
def test_memory_may_settle_a_little_above_where_it_started(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, before: float, after: float) -> None:
    target = Target(memory=Readings(before, after), open_sessions=Readings(0))
    result, _, _ = soak(monkeypatch, tmp_path, target)
    assert result.held and result.memory_after_mib == after


def test_a_soak_without_a_container_to_measure_checks_what_it_can(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    result, _, said = soak(monkeypatch, tmp_path, Target())  # no memory, no /status
    assert result.held
    assert (result.memory_before_mib, result.memory_after_mib, result.sessions_after) == (
        None, None, None)
    assert said == ["==> soak: 3 user(s) for 60 s (memory before: - MiB)"]


def test_a_memory_reading_lost_after_the_soak_is_not_a_problem(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    target = Target(memory=Readings(100.0, None), open_sessions=Readings(0))
    result, _, _ = soak(monkeypatch, tmp_path, target)
    assert result.held and result.memory_after_mib is None


def test_a_soak_that_fails_says_each_thing_that_did_not_come_back(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    target = Target(memory=Readings(100.0, 160.0), open_sessions=Readings(3, 1))
    result, _, _ = soak(monkeypatch, tmp_path, target, summary(failures=2), settle_s=0.2)
    assert not result.held
    assert (result.memory_after_mib, result.sessions_after) == (160.0, 1)
    failed, sessions, memory = result.problems
    assert failed == "2 stream step(s) failed"
    assert sessions.startswith("timed out after ")
    assert sessions.endswith(" polls) waiting for the server's sessions to return to 0; "
                             "last seen: 1")
    assert "(limit 0.2 s, " in sessions
    assert memory.endswith(" polls) waiting for the server's memory to return under "
                           "148.0 MiB; last seen: 160.0")


# -- the whole command: capacity.md -----------------------------------------------------


def measured(**kwargs: Any) -> dict[str, Any]:
    """A level's runner summary with the load generator's own CPU per session."""
    return {**summary(**kwargs), "generator": {"cpu_s_per_session": 0.012}}


@pytest.fixture
def stand_in_capacity(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``python -m earshot.load capacity`` with its parts stood in for (each named so):
    the whole-file baseline, the target (earshot's, or the peer), the level runs and
    the soak. Levels up to 8 users hold; 12 does not. Returns what was run, in order."""
    from contextlib import contextmanager

    from earshot.load import cli
    from earshot.load.baseline import Baseline

    ran: list[str] = []
    monkeypatch.setattr(cli, "whole_file", lambda clips: [
        Baseline(c.name, 0.05, "text", 0.4) for c in clips])
    monkeypatch.setattr(cli, "describe", lambda: "a stand-in machine")

    @contextmanager
    def open_target(url, *, peer=False, **kwargs):
        yield Target(name="WhisperLive 0.10" if peer else "earshot")

    def run_level(target, users, seconds, folder, name, options):
        ran.append(f"{target.name} {name}")
        return measured()

    def search(target, levels, seconds, folder, options, say, every=False):
        ran.append(f"{target.name} search {list(levels)}")
        return [cap.Level(n, measured(first=1.0 if n <= 8 else 2.0)) for n in levels]

    def soak(target, users, seconds, folder, options, say):
        ran.append(f"{target.name} soak {users} for {seconds:g} s")
        return cap.Soak(users, seconds, measured(), 400.0, 410.0, 0)

    monkeypatch.setattr(cli, "open_target", open_target)
    monkeypatch.setattr(cap, "run_level", run_level)
    monkeypatch.setattr(cap, "search", search)
    monkeypatch.setattr(cap, "soak", soak)
    return ran


def test_capacity_writes_its_report_and_exits_0_when_a_capacity_held_its_soak(
        stand_in_capacity: list[str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from earshot.load import cli

    argv = ["capacity", "--levels", "1,4,8,12", "--soak", "120", "--clips", "jfk.flac",
            "--reports", str(tmp_path), "--peer"]
    assert cli.main(argv) == 0
    assert stand_in_capacity == [
        "earshot warm-up", "earshot search [1, 4, 8, 12]", "earshot soak 6 for 120 s",
        "WhisperLive 0.10 warm-up", "WhisperLive 0.10 search [1, 4, 8, 12]"]
    [folder] = tmp_path.glob("capacity-*")
    text = (folder / "capacity.md").read_text()
    assert text.startswith("# Capacity, ") and "Machine: a stand-in machine" in text
    assert "| jfk.flac | 0.050 | 0.40 |" in text  # the whole-file baseline
    assert json.loads((folder / "baseline.json").read_text()) == {"jfk.flac": 0.05}
    assert text.count("Capacity: 8 concurrent real-time stream(s).") == 2  # both servers
    assert "| 12 | 4 | 0 | 2.00 | 2.00 |" in text and "NO: p95 first_text 2.00 s over" in text
    assert "Soak: 6 user(s) for 120 s, held." in text
    assert "## Side by side (same loads, same run)" in text
    assert text in capsys.readouterr().out  # and said on the terminal


def test_capacity_exits_1_when_no_level_held(stand_in_capacity: list[str],
                                             tmp_path: Path, monkeypatch) -> None:
    from earshot.load import cli

    monkeypatch.setattr(cap, "search", lambda target, levels, *a, **k: [
        cap.Level(n, measured(failures=1)) for n in levels])
    argv = ["capacity", "--levels", "1,4", "--soak", "120", "--clips", "jfk.flac",
            "--reports", str(tmp_path)]
    assert cli.main(argv) == 1
    text = next(tmp_path.glob("capacity-*/capacity.md")).read_text()
    assert "Capacity: 0 concurrent real-time stream(s)." in text and "Soak" not in text
