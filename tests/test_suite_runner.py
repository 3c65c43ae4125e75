"""The validator's suite runner (``earshot.validation.suite``) in detail: how a result
without some field is folded, and what ``run`` promises of the suite's pytest (its
session, its working directory, its log, its JUnit XML, its progress while it runs,
its end when the validator is interrupted) and ``stop``'s word on stderr.

End to end on tiny suites written into the test's temp dir, each with its own ini,
as ``test_validation.py::test_the_suite_runner_runs_a_suite_and_folds_what_it_reports``
runs one. A tiny suite that waits for the validator waits with a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from earshot.validation import suite

# -- folding a result that lacks a field ---------------------------------------------


def test_a_result_for_a_test_not_collected_keeps_its_nodeid_and_has_no_extensions() -> None:
    tests: dict[str, suite.TestResult] = {}
    suite.apply(tests, {"event": "result", "nodeid": "b::new", "when": "call",
                        "outcome": "passed", "message": "", "duration": 0.5})
    test = tests["b::new"]
    assert test.nodeid == "b::new"
    assert test.as_dict() == {"nodeid": "b::new", "kind": "core", "extensions": [],
                              "outcome": "passed", "message": "", "seconds": 0.5}


def test_a_result_without_a_duration_adds_no_time() -> None:
    tests: dict[str, suite.TestResult] = {}
    suite.apply(tests, {"event": "collected", "tests": [{"nodeid": "a::t", "extensions": []}]})
    suite.apply(tests, {"event": "result", "nodeid": "a::t", "when": "setup",
                        "outcome": "passed", "message": "", "duration": 0.25})
    suite.apply(tests, {"event": "result", "nodeid": "a::t", "when": "call",
                        "outcome": "passed", "message": ""})
    assert tests["a::t"].seconds == 0.25
    suite.apply(tests, {"event": "result", "nodeid": "b::new", "when": "call",
                        "outcome": "passed", "message": ""})
    assert tests["b::new"].seconds == 0.0


@pytest.mark.parametrize(("outcome", "folded"), [("failed", "failed"), ("skipped", "not run")])
def test_a_result_without_a_message_has_an_empty_message(outcome: str, folded: str) -> None:
    tests: dict[str, suite.TestResult] = {}
    suite.apply(tests, {"event": "collected", "tests": [{"nodeid": "a::t", "extensions": []}]})
    suite.apply(tests, {"event": "result", "nodeid": "a::t", "when": "call",
                        "outcome": outcome, "duration": 0.1})
    assert (tests["a::t"].outcome, tests["a::t"].message) == (folded, "")


# -- running a tiny suite --------------------------------------------------------------


def _run_tiny(tmp_path: Path, code: str, *pytest_args: str,
              **kwargs: Any) -> tuple[suite.SuiteResult, Path]:
    """``suite.run`` on a one-file suite of ``code`` (dedented); the result and workdir."""
    tests = tmp_path / "suite"
    tests.mkdir()
    (tests / "test_tiny.py").write_text(textwrap.dedent(code))
    # Its own ini and rootdir (see test_validation.py's tiny suite), not this
    # repository's conftest (whose extension marker would start a server).
    (tests / "pytest.ini").write_text("[pytest]\nmarkers =\n    extension(name): an extension\n")
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = suite.run(["--noconftest", *pytest_args], workdir, tests_from=tests, **kwargs)
    return result, workdir


def _outcomes(result: suite.SuiteResult) -> dict[str, tuple[str, str]]:
    return {t.nodeid.split("::")[-1]: (t.outcome, t.message) for t in result.tests}


def _write_atomically(path: Path, text: str) -> None:
    part = path.with_name(path.name + ".part")
    part.write_text(text)
    os.replace(part, path)


def test_a_suite_whose_tests_all_pass_ends_with_exit_code_0_and_is_not_stopped(
        tmp_path, capfd) -> None:
    result, _ = _run_tiny(tmp_path, """
        def test_passes():
            pass
    """)
    assert result.exit_code == 0
    assert _outcomes(result) == {"test_passes": ("passed", "")}
    assert "stopping the scenario suite" not in capfd.readouterr().err, \
        "a suite that ended by itself was 'stopped'"


def test_the_suite_runs_in_a_session_of_its_own(tmp_path) -> None:
    """The tiny suite's test runs inside the suite's pytest process, so that process
    leads its own session when its session id is its pid."""
    result, _ = _run_tiny(tmp_path, """
        import os

        def test_leads_its_own_session():
            assert os.getsid(0) == os.getpid(), (os.getsid(0), os.getpid())
    """)
    assert _outcomes(result) == {"test_leads_its_own_session": ("passed", "")}


def test_the_suite_runs_from_the_repository_root_wherever_the_validator_started(
        tmp_path, monkeypatch) -> None:
    """As ``make integration`` runs it: from the root, not the validator's directory."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result, _ = _run_tiny(tmp_path, """
        import os

        def test_runs_from_the_root():
            assert os.getcwd() == os.environ["EXPECTED_ROOT"], os.getcwd()
    """, env={"EXPECTED_ROOT": str(suite.ROOT)})
    assert _outcomes(result) == {"test_runs_from_the_root": ("passed", "")}


def test_a_workdir_given_relative_to_the_validators_directory_holds_the_results(
        tmp_path, monkeypatch) -> None:
    """``--reports reports-here`` from any directory: the suite runs from the root,
    so the paths it is given must not be relative to the validator's directory."""
    tests = tmp_path / "suite"
    tests.mkdir()
    (tests / "test_tiny.py").write_text("def test_passes():\n    pass\n")
    (tests / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "rel").mkdir()
    monkeypatch.chdir(tmp_path)
    result = suite.run(["--noconftest"], Path("rel"), tests_from=tests)
    assert _outcomes(result) == {"test_passes": ("passed", "")}
    assert (tmp_path / "rel" / "junit.xml").is_file()
    assert (tmp_path / "rel" / "suite.log").is_file()


def test_what_the_suite_writes_to_stderr_is_in_its_log(tmp_path) -> None:
    result, workdir = _run_tiny(tmp_path, """
        import os

        def test_writes_to_stderr():
            os.write(2, b"marker written to the suite's stderr\\n")
    """, "-s")  # -s: straight to the process's stderr, not pytest's capture
    assert _outcomes(result) == {"test_writes_to_stderr": ("passed", "")}
    assert "marker written to the suite's stderr" in (workdir / "suite.log").read_text()


def test_a_suite_that_prints_bytes_that_are_not_utf8_still_gives_its_result(tmp_path) -> None:
    result, workdir = _run_tiny(tmp_path, """
        import os

        def test_prints_bytes_that_are_not_utf8():
            os.write(1, b"\\xff\\xfe not utf-8\\n")
    """, "-s")  # -s: the bytes reach the log as they are
    assert b"\xff\xfe not utf-8" in (workdir / "suite.log").read_bytes()
    assert _outcomes(result) == {"test_prints_bytes_that_are_not_utf8": ("passed", "")}
    assert result.exit_code == 0 and result.seed is not None and result.seed.isdigit()


def test_the_junit_xml_is_xunit1_with_each_tests_file_line_and_properties(tmp_path) -> None:
    """xunit1, whatever the suite's ini says: each testcase names its file and line, and
    record_property (the suite's per-test latencies) works without a warning."""
    result, workdir = _run_tiny(tmp_path, """
        def test_records_a_property(record_property):
            record_property("first_text_s", 0.5)
    """)
    assert _outcomes(result) == {"test_records_a_property": ("passed", "")}
    [case] = ET.parse(workdir / "junit.xml").getroot().iter("testcase")
    assert case.get("file") == "test_tiny.py" and case.get("line") == "1", case.attrib
    assert {p.get("name"): p.get("value") for p in case.iter("property")} == {
        "first_text_s": "0.5"}
    assert "incompatible with junit_family" not in (workdir / "suite.log").read_text()


def test_progress_reaches_the_validator_while_the_suite_runs(tmp_path) -> None:
    """The current test's start reaches ``on_event``, and ``poll`` is called, while that
    test runs: the test waits (with a deadline) until both have happened."""
    seen, polled = tmp_path / "seen", tmp_path / "polled"
    polls: list[None] = []

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "start" and event["nodeid"].endswith("::test_waits_to_be_seen"):
            seen.touch()

    def poll() -> None:
        polls.append(None)
        polled.touch()

    result, _ = _run_tiny(tmp_path, """
        import os
        from pathlib import Path

        from earshot.testing.waiting import eventually

        def test_waits_to_be_seen():
            eventually(Path(os.environ["SEEN"]).exists, timeout=30,
                       description="the validator to be told this test started")
            eventually(Path(os.environ["POLLED"]).exists, timeout=30,
                       description="the validator's poll while this test runs")
    """, on_event=on_event, poll=poll, env={"SEEN": str(seen), "POLLED": str(polled)})
    assert _outcomes(result) == {"test_waits_to_be_seen": ("passed", "")}
    assert len(polls) > 1


def test_a_progress_line_written_in_two_pieces_is_read_whole(tmp_path) -> None:
    """The suite's test appends half a progress line, waits until the validator has
    polled twice more (so it has read the half at least once), then the rest."""
    counter = tmp_path / "polls"
    polls = 0
    events: list[dict[str, Any]] = []

    def poll() -> None:
        nonlocal polls
        polls += 1
        _write_atomically(counter, str(polls))

    result, _ = _run_tiny(tmp_path, """
        import json
        import os
        from pathlib import Path

        from earshot.testing.waiting import eventually

        def polls():
            path = Path(os.environ["POLLS"])
            return int(path.read_text()) if path.exists() else 0

        def test_writes_a_progress_line_in_two_pieces():
            line = json.dumps({"event": "note", "text": "written in two pieces"}) + "\\n"
            path = os.environ["EARSHOT_VALIDATION_EVENTS"]
            with open(path, "a", encoding="utf-8") as events:
                events.write(line[:20])
            before = polls()
            eventually(polls, lambda n: n >= before + 2, timeout=30,
                       description="two more polls by the validator")
            with open(path, "a", encoding="utf-8") as events:
                events.write(line[20:])
    """, on_event=events.append, poll=poll, env={"POLLS": str(counter)})
    assert _outcomes(result) == {"test_writes_a_progress_line_in_two_pieces": ("passed", "")}
    assert {"event": "note", "text": "written in two pieces"} in events


def _kill_if_left(pid: int, command_part: str) -> bool:
    """Kill the suite's pytest ``pid`` if it is still alive (and still that process)."""
    try:
        process = psutil.Process(pid)
        if command_part not in " ".join(process.cmdline()):
            return False
        process.kill()
        process.wait(timeout=10)
        return True
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def left_behind() -> Iterator[list[tuple[int, str]]]:
    """Suite processes a test found still alive; killed at its end whatever happened."""
    found: list[tuple[int, str]] = []
    yield found
    for pid, command_part in found:
        _kill_if_left(pid, command_part)


def test_an_interrupted_run_stops_the_suite_before_the_interrupt_goes_on(
        tmp_path, capfd, left_behind) -> None:
    """A KeyboardInterrupt while the suite runs (here: raised by ``poll`` once the
    suite's test has started) ends the suite's pytest before it reaches the caller."""
    pid_file = tmp_path / "suite.pid"
    workdir = tmp_path / "work"

    def poll() -> None:
        if pid_file.exists():
            left_behind.append((int(pid_file.read_text()), str(workdir)))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run_tiny(tmp_path, """
            import os
            from pathlib import Path

            from earshot.testing.waiting import eventually

            def test_blocks_until_stopped():
                pid_file = Path(os.environ["PID_FILE"])
                part = pid_file.with_name("suite.pid.part")
                part.write_text(str(os.getpid()))
                os.replace(part, pid_file)
                eventually(Path(os.environ["NEVER"]).exists, timeout=60,
                           description="a file that never appears")
        """, poll=poll, env={"PID_FILE": str(pid_file), "NEVER": str(tmp_path / "never")})
    [(pid, _)] = left_behind
    assert not psutil.pid_exists(pid), "the suite's pytest outlived the interrupted run"
    assert "stopping the scenario suite" in capfd.readouterr().err


def _child() -> subprocess.Popen[bytes]:
    """A stand-in for the suite's pytest that ends on SIGINT; returns once it is ready."""
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGINT, lambda *a: sys.exit(7))\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    process.stdout.close()
    return process


def test_stopping_the_suite_says_so_on_stderr_once(capfd) -> None:
    child = _child()
    try:
        suite.stop(child)
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            child.wait()
    assert child.returncode == 7
    out, err = capfd.readouterr()
    assert err == ("stopping the scenario suite (at most 60 s; interrupt again to kill it "
                   "now)\n")
    assert out == ""
