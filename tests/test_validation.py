"""``make validate``'s parts: the thresholds file, the suite's classification, the
report writer, the probe, and the command's answers to bad input.

The probe and the suite's classification are also tested against a stand-in
foreign server (named as such below): a WhisperLive-protocol server without
earshot's extensions, small enough to run in this process. Upstream
WhisperLive itself runs under ``make validate-peer`` (docs/validation.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
from websockets.asyncio.server import serve

from earshot import protocol
from earshot.protocol import Segment, ServerMessage
from earshot.testing import wire
from earshot.testing.local import LocalServer
from earshot.testing.offers import EXTENSIONS, Offers, TargetError, probe
from earshot.testing.waiting import eventually, wait_for_sessions
from earshot.validation import plots, report, suite
from earshot.validation.measure import Stream
from earshot.validation.thresholds import ConfigError, load

ROOT = Path(__file__).resolve().parents[1]
TOML = ROOT / "validation.toml"


# -- stand-ins ------------------------------------------------------------------------


@pytest.fixture
async def foreign_server() -> AsyncIterator[str]:
    """Stand-in for a foreign WhisperLive-protocol server: SERVER_READY without a
    session id, one segments update per second of audio, and after END_OF_AUDIO
    a last update and a plain close; no HTTP endpoints, no ERROR for a bad config."""

    async def handler(ws) -> None:
        try:
            config = json.loads(await ws.recv())
        except ValueError:
            await ws.close()
            return
        uid = config["uid"]
        update = json.dumps({"uid": uid, "segments": [
            {"start": "0.000", "end": "1.000", "text": " and so", "completed": False}]})
        await ws.send(json.dumps({"uid": uid, "message": "SERVER_READY",
                                  "backend": "faster_whisper"}))
        samples = 0
        async for frame in ws:
            if frame == protocol.END_OF_AUDIO:
                break
            samples += len(frame) // 4
            if samples >= 16000:
                samples = 0
                await ws.send(update)
        await ws.send(update)
        await ws.close()

    async with serve(handler, "127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


@pytest.fixture
def plain_http() -> Iterator[str]:
    """Stand-in: an HTTP server that is not a WebSocket server (200 to everything)."""

    class Hello(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"hello\n")

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=httpd.serve_forever, name="http-standin")
    thread.start()
    try:
        yield f"ws://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[LocalServer]:
    with LocalServer(api_key="the-right-key") as server:
        yield server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- validation.toml ------------------------------------------------------------------


def test_the_shipped_thresholds_load_with_units() -> None:
    thresholds = load(TOML)
    assert thresholds["clips.max_wer"] == 0.10
    assert thresholds["run.concurrent_streams"] == 4
    names = [name for name, _, _ in thresholds.items()]
    assert "suite.max_core_failures" in names and "run.concurrent_streams" not in names
    assert all(spec.unit for _, spec, _ in thresholds.items())


@pytest.mark.parametrize(("change", "says"), [
    (lambda text: text.replace("max_wer = 0.10", "max_wer = "), "not valid TOML"),
    (lambda text: text.replace("max_wer = 0.10", "max_wer = 'low'"), "clips.max_wer must be"),
    (lambda text: text.replace("max_wer = 0.10", "max_wr = 0.10"), "unknown key clips.max_wr"),
    (lambda text: text.replace("[network]", "[netwrk]"), "unknown section [netwrk]"),
    (lambda text: text.replace("concurrent_streams = 4", "concurrent_streams = 2.5"),
     "whole number"),
    (lambda text: text.replace("max_final_s = 5.0", ""), "missing key network.max_final_s"),
], ids=["syntax", "type", "unknown key", "unknown section", "integer", "missing"])
def test_a_bad_thresholds_file_is_refused_in_one_line(tmp_path, change, says) -> None:
    path = tmp_path / "validation.toml"
    path.write_text(change(TOML.read_text()))
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert says in str(caught.value) and "\n" not in str(caught.value)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(("change", "says"), [
    (lambda text: text.replace("max_wer = 0.10", "max_wer = -0.1"),
     "clips.max_wer is out of range: -0.1"),
    (lambda text: text.replace("concurrent_streams = 4", "concurrent_streams = 0"),
     "run.concurrent_streams is out of range: 0"),
], ids=["threshold below 0", "run setting below 1"])
def test_a_threshold_below_zero_or_a_run_setting_below_one_is_out_of_range(
        tmp_path, change, says) -> None:
    path = tmp_path / "validation.toml"
    path.write_text(change(TOML.read_text()))
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value) == f"{path}: {says}"


def test_a_thresholds_file_missing_or_unreadable_is_named_in_one_line(tmp_path) -> None:
    with pytest.raises(ConfigError) as missing:
        load(tmp_path / "nowhere.toml")
    assert str(missing.value) == f"{tmp_path / 'nowhere.toml'}: no such file"
    with pytest.raises(ConfigError) as folder:
        load(tmp_path)  # a folder: read_text raises IsADirectoryError
    assert str(folder.value) == f"{tmp_path}: cannot read it: Is a directory"


def test_a_section_or_key_unknown_or_missing_is_named_with_what_is_known(tmp_path) -> None:
    path = tmp_path / "validation.toml"
    shipped = TOML.read_text()

    def refused(text: str) -> str:
        path.write_text(text)
        with pytest.raises(ConfigError) as caught:
            load(path)
        return str(caught.value)

    assert refused(shipped.replace("[network]", "[netwrk]")) == (
        f"{path}: unknown section [netwrk] (known: run, suite, clips, concurrency, network, "
        "container)")
    assert refused(shipped.replace("max_wer = 0.10", "max_wr = 0.10")) == (
        f"{path}: unknown key clips.max_wr (known: max_wer, max_first_text_s, max_final_s, "
        "max_rtf)")
    without_container = shipped[:shipped.index("[container]")]
    assert refused(without_container) == f"{path}: missing section [container]"


def test_the_least_values_allowed_load_as_their_kind(tmp_path) -> None:
    # 0 for a threshold, 1 for a run setting; counts as int, the rest as float.
    path = tmp_path / "validation.toml"
    path.write_text(TOML.read_text().replace("concurrent_streams = 4", "concurrent_streams = 1")
                    .replace("max_core_failures = 0", "max_core_failures = 0.0")
                    .replace("max_wer = 0.10", "max_wer = 0"))
    thresholds = load(path)
    assert thresholds["run.concurrent_streams"] == 1
    assert type(thresholds["run.concurrent_streams"]) is int
    assert type(thresholds["suite.max_core_failures"]) is int
    assert thresholds["clips.max_wer"] == 0 and type(thresholds["clips.max_wer"]) is float


def test_the_thresholds_file_is_read_as_utf8_whatever_the_locale(tmp_path) -> None:
    path = tmp_path / "validation.toml"
    path.write_text("# WER \u2264 10 %, a comment a user may well write\n" + TOML.read_text(),
                    encoding="utf-8")
    code = ("import sys; from earshot.validation.thresholds import load; "
            "print(load(__import__('pathlib').Path(sys.argv[1]))['clips.max_wer'])")
    ascii_locale = {**os.environ, "LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    done = subprocess.run([sys.executable, "-c", code, str(path)], env=ascii_locale,
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "0.1"), done.stderr


# -- the suite's classification -------------------------------------------------------


def test_events_classify_core_extension_not_offered_and_not_run() -> None:
    tests: dict[str, suite.TestResult] = {}
    suite.apply(tests, {"event": "collected", "tests": [
        {"nodeid": "a::core_ok", "extensions": []},
        {"nodeid": "a::core_bad", "extensions": []},
        {"nodeid": "a::ext_bad", "extensions": ["status"]},
        {"nodeid": "a::ext_absent", "extensions": ["session_id"]},
        {"nodeid": "a::own_server", "extensions": []},
        {"nodeid": "a::leaky", "extensions": []},
    ]})
    for nodeid, when, outcome, message in [
        ("a::core_ok", "call", "passed", ""),
        ("a::core_bad", "call", "failed", "AssertionError: 3 words lost"),
        ("a::ext_bad", "call", "failed", "AssertionError: no session"),
        ("a::ext_absent", "setup", "skipped", "not offered: session_id (no session_id)"),
        ("a::own_server", "setup", "skipped", "needs a server of its own"),
        ("a::leaky", "call", "passed", ""),
        ("a::leaky", "teardown", "failed", "Failed: leaked 1 thread"),
    ]:
        suite.apply(tests, {"event": "result", "nodeid": nodeid, "when": when,
                            "outcome": outcome, "message": message, "duration": 0.1})
    result = suite.SuiteResult(list(tests.values()))
    assert [t.nodeid for t in result.of("passed")] == ["a::core_ok"]
    assert [(t.nodeid, t.message) for t in result.of("failed", "core")] == [
        ("a::core_bad", "3 words lost"), ("a::leaky", "leaked 1 thread")]
    assert [t.nodeid for t in result.of("failed", "extension")] == ["a::ext_bad"]
    assert [(t.nodeid, t.message) for t in result.of("not offered")] == [
        ("a::ext_absent", "session_id (no session_id)")]
    assert [t.nodeid for t in result.of("not run")] == ["a::own_server"]


def test_a_tests_phases_add_up_and_its_first_failure_is_the_one_kept() -> None:
    tests: dict[str, suite.TestResult] = {}
    suite.apply(tests, {"event": "collected", "tests": [{"nodeid": "a::t", "extensions": []}]})
    suite.apply(tests, {"event": "start", "nodeid": "a::t"})  # not a result: no change
    assert tests["a::t"].outcome == suite.PENDING
    for when, outcome, message, duration in [
            ("setup", "passed", "", 0.25), ("call", "failed", "AssertionError: lost", 1.5),
            ("teardown", "failed", "Failed: leaked 1 thread", 0.125)]:
        suite.apply(tests, {"event": "result", "nodeid": "a::t", "when": when,
                            "outcome": outcome, "message": message, "duration": duration})
    test = tests["a::t"]
    assert (test.outcome, test.message, test.seconds) == ("failed", "lost", 1.875)
    suite.apply(tests, {"event": "result", "nodeid": "a::t", "when": "call",
                        "outcome": "passed", "message": ""})
    assert test.outcome == "failed", "a pass after a failure does not undo it"


def test_a_result_for_a_test_not_collected_is_kept_as_a_core_check() -> None:
    tests: dict[str, suite.TestResult] = {}
    suite.apply(tests, {"event": "result", "nodeid": "b::new", "when": "call",
                        "outcome": "skipped", "message": "needs a server of its own"})
    assert tests["b::new"].kind == "core" and tests["b::new"].outcome == "not run"
    assert tests["b::new"].message == "needs a server of its own"


TINY_SUITE = """
import os
import pytest

def test_passes():
    assert os.environ["EARSHOT_FROM_THE_VALIDATOR"] == "yes"

def test_fails():
    assert 1 == 2, "one is not two"

def test_is_not_offered():
    pytest.skip("not offered: status (no /status)")

@pytest.mark.extension("status")
def test_an_extension_fails():
    raise AssertionError("no /status")
"""


def test_the_suite_runner_runs_a_suite_and_folds_what_it_reports(tmp_path) -> None:
    """End to end on a tiny suite: its environment, its events in order, each outcome
    and kind, the seed of its random order, its JUnit XML and its log."""
    tests = tmp_path / "suite"
    tests.mkdir()
    (tests / "test_tiny.py").write_text(TINY_SUITE)
    # Its own ini (and so its own rootdir), wherever the temp dir lies: under make
    # mutate it lies inside a copy of this repository, whose ini refuses unknown markers.
    (tests / "pytest.ini").write_text("[pytest]\nmarkers =\n    extension(name): an extension\n")
    workdir = tmp_path / "work"
    workdir.mkdir()
    events: list[dict] = []
    polls: list[None] = []
    # --noconftest: not this repository's conftest, whose extension marker would probe
    # (and so start) the session's server
    result = suite.run(["--noconftest"], workdir, tests_from=tests, on_event=events.append,
                       poll=lambda: polls.append(None), env={"EARSHOT_FROM_THE_VALIDATOR": "yes"})
    outcomes = {t.nodeid.split("::")[-1]: (t.outcome, t.kind, t.message) for t in result.tests}
    assert outcomes == {
        "test_passes": ("passed", "core", ""),
        "test_fails": ("failed", "core", "one is not two"),
        "test_is_not_offered": ("not offered", "core", "status (no /status)"),
        "test_an_extension_fails": ("failed", "extension", "no /status"),
    }
    assert events[0]["event"] == "collected" and len(events[0]["tests"]) == 4
    assert {e["event"] for e in events[1:]} == {"start", "result"}
    assert polls, "the progress callback is called while the suite runs"
    assert result.exit_code == 1 and result.seed is not None and result.seed.isdigit()
    assert (workdir / "junit.xml").read_text().count("<testcase") == 4
    assert "one is not two" in (workdir / "suite.log").read_text()


def test_a_suite_that_cannot_run_to_its_end_is_a_suite_error(tmp_path) -> None:
    empty = tmp_path / "suite"
    empty.mkdir()
    (empty / "test_none.py").write_text("x = 1\n")  # collects nothing: pytest exits 5
    with pytest.raises(suite.SuiteError, match="pytest exited 5"):
        suite.run([], tmp_path, tests_from=empty)


def _child(code: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A process standing in for the suite's pytest; returns once it says it is ready."""
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                               env={**os.environ, **(env or {})})
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    process.stdout.close()
    return process


def test_stopping_the_suite_asks_it_with_sigint_first() -> None:
    child = _child("import signal, sys, time\n"
                   "signal.signal(signal.SIGINT, lambda *a: sys.exit(7))\n"
                   "print('ready', flush=True)\n"
                   "time.sleep(60)\n")  # not a wait: the stand-in lives until stopped
    suite.stop(child, grace=30)
    assert child.returncode == 7  # it ended itself, on SIGINT: not killed


def test_a_suite_that_ignores_sigint_is_killed_after_the_grace_and_swept(
        tmp_path, monkeypatch) -> None:
    """What a killed suite leaves (its temp dirs: their owner is dead now) is swept.
    The temp folder is this test's own, so no other session's dirs are in reach."""
    import tempfile
    import time

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    child = _child("import signal, tempfile, time\n"
                   "from earshot.testing.leaks import temp_prefix\n"
                   "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                   "tempfile.mkdtemp(prefix=temp_prefix('suite'))\n"
                   "print('ready', flush=True)\n"
                   "time.sleep(60)\n",  # not a wait: the stand-in lives until killed
                   env={"TMPDIR": str(tmp_path)})
    assert list(tmp_path.glob("earshot-suite-*")), "the stand-in made no temp dir"
    started = time.monotonic()
    suite.stop(child, grace=0.5)
    assert child.returncode == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - started < 10
    assert list(tmp_path.glob("earshot-suite-*")) == []


def test_every_extension_marker_in_the_suite_names_a_known_extension() -> None:
    import re

    used = set()
    for path in (ROOT / "integration").glob("test_*.py"):
        for args in re.findall(r"mark\.extension\(([^)]*)\)", path.read_text()):
            used |= set(re.findall(r'"(\w+)"', args))
    assert used and used <= set(EXTENSIONS), used - set(EXTENSIONS)


# -- the report -----------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _matplotlib_fonts(tmp_path_factory) -> None:
    """matplotlib keeps the font files it loads open for the life of the process (its
    own cache); load them once before the leak guard takes its first baseline."""
    plots.draw(_run(network=[], concurrency=[]), tmp_path_factory.mktemp("warm"))


def _stream(clip: str, *, final: bool, first_text: float = 1.0, final_after: float = 0.3,
            text: str = "and so my fellow americans") -> Stream:
    """A measured stream built from timed messages as wire.stream records them."""
    t = wire.Exchange(first_audio_at=100.0, end_of_audio_at=105.0)
    update = ServerMessage("segments", {"segments": [Segment(0.0, 4.0, text, final).to_wire()]})
    t.messages = [(100.0, ServerMessage("ready", {"message": "SERVER_READY"})),
                  (100.0 + first_text, update), (105.0 + final_after, update)]
    if final:
        t.messages.append((105.0 + final_after, ServerMessage("end", {})))
    return Stream(clip, 5.0, "and so my fellow americans", transcript=t)


def _run(**overrides) -> report.Run:
    offers = Offers(frozenset({"status", "readyz"}), {"session_id": "no session_id"})
    results = suite.SuiteResult([suite.TestResult("t.py::core", [], "passed"),
                                 suite.TestResult("t.py::sid", ["session_id"], "not offered",
                                                  "session_id (no session_id)")])
    values = dict(target="ws://127.0.0.1:1", server="a stand-in", machine="this one",
                  offers=offers, thresholds=load(TOML), suite=results,
                  clips=[_stream("a.wav", final=True), _stream("b.wav", final=True)],
                  concurrency=[_stream("a.wav", final=True)] * 4,
                  network=[_stream("a.wav", final=True)],
                  container={"cpu_seconds": 12.0, "peak_memory_mib": 300.0})
    values.update(overrides)
    return report.Run(**values)


def test_a_run_within_every_threshold_says_ship(tmp_path) -> None:
    checks = report.write(_run(), tmp_path)
    summary = (tmp_path / "summary.md").read_text().splitlines()
    assert summary[0] == f"SHIP: all {len(checks)} thresholds hold."
    assert all(c.passed for c in checks) and len(checks) == 12
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["verdict"].startswith("SHIP")
    assert data["clips"][0]["wer"] == 0 and data["clips"][0]["first_text_s"] == 1.0
    assert data["clips"][0]["final_s"] == 0.3 and data["container"]["peak_memory_mib"] == 300
    assert data["concurrency"]["sustained"] == 4
    assert data["extensions"]["session_id"]["offered"] is False
    for name in plots.PLOTS:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "summary.html").read_text()
    assert "SHIP: all" in page and "not offered" in page and "wer_per_clip.png" in page


def test_a_threshold_missed_says_do_not_ship_and_which(tmp_path) -> None:
    slow = [_stream("a.wav", final=True, final_after=2.5),
            _stream("b.wav", final=True, text="and so")]  # words lost
    failed = suite.TestResult("t.py::tail", [], "failed",
                              "after END_OF_AUDIO the server closed: 3 words lost")
    run = _run(clips=slow, suite=suite.SuiteResult([failed]))
    report.write(run, tmp_path)
    first = (tmp_path / "summary.md").read_text().splitlines()[0]
    assert first.startswith("DO NOT SHIP: ")
    assert "suite.max_core_failures is 1 count, needs <= 0" in first
    assert "clips.max_final_s is 2.500 s, needs <= 1.500" in first
    assert "clips.max_wer is 0.600 ratio" in first
    assert "3 words lost" in (tmp_path / "summary.md").read_text()


def test_a_foreign_servers_estimated_final_is_said_so(tmp_path) -> None:
    run = _run(clips=[_stream("a.wav", final=False)], container=None, network=[],
               concurrency=[])
    checks = {c.name: c for c in report.write(run, tmp_path)}
    assert checks["clips.max_final_s"].measured == pytest.approx(0.3)
    assert "estimated" in checks["clips.max_final_s"].note
    assert "container.max_peak_memory_mib" not in checks  # a deployment: no engine stats
    assert json.loads((tmp_path / "metrics.json").read_text())["clips"][0]["final_estimated"]


def test_a_failed_stream_fails_its_checks_instead_of_passing_them(tmp_path) -> None:
    broken = Stream("a.wav", 5.0, "x", error="ConnectionClosedError: 1011")
    checks = {c.name: c for c in report.write(_run(clips=[broken]), tmp_path)}
    assert not checks["clips.max_wer"].passed and checks["clips.max_wer"].measured is None


# -- the verdict at each threshold's limit --------------------------------------------


def _measured_run(thresholds_file: Path) -> report.Run:
    """A run in which every threshold measures something above zero (a word wrong in
    each clip, one failed core and one failed extension check), so that each can be
    put just past its limit in either direction."""
    results = suite.SuiteResult([
        suite.TestResult("t.py::core", [], "failed", "3 words lost"),
        suite.TestResult("t.py::ext", ["status"], "failed", "no /status"),
        suite.TestResult("t.py::fine", [], "passed")])
    off = "and so my fellow citizens"  # 1 word of 5 wrong: WER 0.2
    return _run(thresholds=load(thresholds_file), suite=results,
                clips=[_stream("a.wav", final=True, text=off),
                       _stream("b.wav", final=True, first_text=1.5, final_after=0.4)],
                concurrency=[_stream("a.wav", final=True, text=off)] * 4,
                network=[_stream("a.wav", final=True, final_after=0.7, text=off)],
                container={"cpu_seconds": 12.0, "peak_memory_mib": 300.0})


def _thresholds(tmp_path: Path, name: str, limit: float, **others: float) -> Path:
    """validation.toml with ``name`` at ``limit``, ``others`` (section__key) as given, and
    every other threshold lenient."""
    import tomllib

    data = tomllib.loads(TOML.read_text())
    for section, values in data.items():
        for key in values:
            if key.startswith(("max_", "min_")):
                values[key] = others.get(f"{section}__{key}",
                                         10 ** 6 if key.startswith("max_") else 0)
    section, key = name.split(".")
    data[section][key] = limit
    path = tmp_path / f"{name}.toml"
    path.write_text("".join(f"[{section}]\n" + "".join(f"{k} = {v!r}\n" for k, v in
                                                       values.items())
                            for section, values in data.items()))
    return path


@pytest.mark.parametrize("name", [name for name, _, _ in load(TOML).items()])
def test_each_threshold_holds_at_its_limit_and_fails_just_past_it(tmp_path, name) -> None:
    """Right at its limit a threshold holds (SHIP, exit 0); a hair past it, the other
    way for a maximum than for a minimum, it fails (DO NOT SHIP naming it, exit 1)."""
    spec = next(s for n, s, _ in load(TOML).items() if n == name)
    measured = report.measured(_measured_run(_thresholds(tmp_path, name, 1)))[name][0]
    assert measured is not None and measured > 0, name
    step = 1 if spec.integer else 0.001
    past = measured - step if spec.kind == "max" else measured + step

    at_limit = tmp_path / "at"
    at_limit.mkdir()
    checks = report.write(_measured_run(_thresholds(tmp_path, name, measured)), at_limit)
    first = (at_limit / "summary.md").read_text().splitlines()[0]
    assert first == "SHIP: all 12 thresholds hold.", first
    assert report.exit_status(checks) == 0

    beyond = tmp_path / "past"
    beyond.mkdir()
    checks = report.write(_measured_run(_thresholds(tmp_path, name, past)), beyond)
    first = (beyond / "summary.md").read_text().splitlines()[0]
    assert first.startswith(f"DO NOT SHIP: {name} is "), first
    assert f", needs {'<=' if spec.kind == 'max' else '>='} " in first, first
    assert [c.name for c in checks if not c.passed] == [name]
    assert report.exit_status(checks) == 1
    assert json.loads((beyond / "metrics.json").read_text())["verdict"] == first


def _passing_suite(**extra: suite.TestResult) -> dict[str, suite.TestResult]:
    return {"t.py::ok": suite.TestResult("t.py::ok", [], "passed"), **extra}


# Each way a run can go wrong, as the Run it gives (with every threshold lenient but
# the suite's at 0), and the words the verdict must say.
FAILURES = {
    "a core check failed": (lambda: dict(suite=suite.finish(_passing_suite(
        bad=suite.TestResult("t.py::bad", [], "failed", "lost words")), 1, "")),
        "suite.max_core_failures is 1"),
    "an extension check failed": (lambda: dict(suite=suite.finish(_passing_suite(
        bad=suite.TestResult("t.py::bad", ["status"], "failed", "no /status")), 1, "")),
        "suite.max_extension_failures is 1"),
    "a test leaked at its teardown": (lambda: dict(suite=suite.finish(_passing_suite(
        bad=suite.TestResult("t.py::bad", [], "failed", "leaked 1 thread")), 1, "")),
        "suite.max_core_failures is 1"),
    "the session left something behind": (lambda: dict(suite=suite.finish(
        _passing_suite(), 1, "...\nerror: the test session left these behind (now removed):"
                             "\n  temp dir /tmp/earshot-x-1-y\n")),
        "suite.max_core_failures is 1"),
    "a test never reported": (lambda: dict(suite=suite.finish(_passing_suite(
        cut=suite.TestResult("t.py::cut", [])), 1, "")), "suite.max_core_failures is 1"),
    "the suite could not run": (lambda: dict(suite=None, phases=("suite", "clips"),
                                             problems={"suite": "SuiteError: pytest exited 4"}),
                                "suite.max_core_failures is not measured"),
    "a phase could not run": (lambda: dict(clips=[], phases=("suite", "clips"),
                                           problems={"clips": "ClipError: jfk.flac corrupt"}),
                              "clips.max_wer is not measured"),
    "a phase gave nothing": (lambda: dict(network=[], phases=("suite", "network")),
                             "network.max_wer is not measured"),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_every_kind_of_failure_counts_against_ship(tmp_path, case) -> None:
    make, says = FAILURES[case]
    thresholds = _thresholds(tmp_path, "suite.max_core_failures", 0,
                             suite__max_extension_failures=0)
    fields = {"phases": ("suite", "clips", "concurrency", "network"), **make()}
    run = _run(thresholds=load(thresholds), **fields)
    checks = report.write(run, tmp_path)
    first = (tmp_path / "summary.md").read_text().splitlines()[0]
    assert first.startswith("DO NOT SHIP: ") and says in first, first
    assert report.exit_status(checks) == 1
    for phase, why in run.problems.items():
        assert why in (tmp_path / "summary.md").read_text(), phase


def test_a_run_that_checked_nothing_does_not_ship(tmp_path) -> None:
    checks = report.write(_run(suite=None, clips=[], concurrency=[], network=[],
                               container=None), tmp_path)
    assert checks == [] and report.exit_status(checks) == 1
    assert (tmp_path / "summary.md").read_text().startswith("DO NOT SHIP: no threshold")


def test_a_session_that_leaves_something_behind_fails_the_validators_suite(tmp_path) -> None:
    """End to end: the validator's suite runner on a suite whose only test passes but
    leaves an earshot temp dir behind, which the leak guard finds at the session's end."""
    tests = tmp_path / "suite"
    tests.mkdir()
    (tests / "test_leaves.py").write_text(
        "import tempfile\n"
        "from earshot.testing.leaks import temp_prefix\n\n"
        "def test_passes_but_leaves_a_dir() -> None:\n"
        "    tempfile.mkdtemp(prefix=temp_prefix('left'))\n")
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = suite.run(["-o", "earshot_leak_guard=true", "-p", "no:randomly"], workdir,
                       tests_from=tests)
    assert [t.outcome for t in result.of("passed")] == ["passed"]
    [session] = result.of("failed", "core")
    assert session.nodeid == suite.SESSION and "left these behind" in session.message


# -- the probe ------------------------------------------------------------------------


def test_probe_finds_every_extension_on_earshots_server(keyed_server) -> None:
    offers = probe(keyed_server.ws_url, keyed_server.http_url, keyed_server.auth_headers())
    assert offers.offered == frozenset(EXTENSIONS), offers.seen


async def test_probe_finds_none_on_a_foreign_server(foreign_server) -> None:
    offers = await asyncio.to_thread(probe, foreign_server,
                                     foreign_server.replace("ws://", "http://"))
    assert offers.offered == frozenset(), offers.seen
    assert "no session_id" in offers.seen["session_id"]
    assert "closed with 1000" in offers.seen["end_of_transcript"]
    assert "HTTP 426" in offers.seen["status"]


@pytest.mark.parametrize("case", ["unreachable", "not websocket", "wrong key", "no key"])
def test_probe_refuses_an_untestable_target_in_one_line(case, plain_http, keyed_server) -> None:
    url, headers, says = {
        "unreachable": (f"ws://127.0.0.1:{free_port()}", {}, "cannot reach"),
        "not websocket": (plain_http, {}, "is not a WebSocket server"),
        "wrong key": (keyed_server.ws_url, {"Authorization": "Bearer nope"},
                      "the API key was refused"),
        "no key": (keyed_server.ws_url, {}, "it needs an API key"),
    }[case]
    with pytest.raises(TargetError) as caught:
        probe(url, url.replace("ws://", "http://"), headers)
    assert says in str(caught.value) and "\n" not in str(caught.value)


# -- the command ----------------------------------------------------------------------


def validate(*args: str, reports: Path, timeout: float = 60,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "earshot.validation", "--reports",
                           str(reports), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("case", ["unreachable", "not websocket", "wrong key", "bad toml",
                                  "bad url"])
def test_bad_input_exits_2_with_one_line_and_no_report(tmp_path, case, plain_http,
                                                       keyed_server) -> None:
    bad_toml = tmp_path / "broken.toml"
    bad_toml.write_text("[clips\nmax_wer = 0.1\n")
    args = {
        "unreachable": ["--target", f"ws://127.0.0.1:{free_port()}"],
        "not websocket": ["--target", plain_http],
        "wrong key": ["--target", keyed_server.ws_url, "--api-key", "wrong"],
        "bad toml": ["--target", keyed_server.ws_url, "--config", str(bad_toml)],
        "bad url": ["--target", "http://127.0.0.1:1"],
    }[case]
    reports = tmp_path / "reports"
    done = validate(*args, reports=reports)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert not reports.exists() or not any(reports.iterdir())


# The validator as a CI runner or a shell may start it: SIGINT ignored (a background job
# of a shell without job control inherits that), or stopped with SIGTERM (a cancelled job).
IGNORING_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                   "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")
STOPS = {
    "SIGINT": ([], [signal.SIGINT]),
    "SIGTERM": ([], [signal.SIGTERM]),
    "SIGINT, started with SIGINT ignored": (["-c", IGNORING_SIGINT], [signal.SIGINT]),
}


def _start_validator(tmp_path: Path, server: LocalServer, phases: str,
                     wrapper: list[str]) -> subprocess.Popen[bytes]:
    """The validator on ``server``, its reports in tmp_path/reports, its stderr (what it
    says while it stops) in tmp_path/stderr."""
    with open(tmp_path / "stderr", "wb") as err:
        return subprocess.Popen(
            [sys.executable, *wrapper, "-m", "earshot.validation", "--reports",
             str(tmp_path / "reports"), "--target", server.ws_url,
             "--api-key", server.api_key or "", "--phases", phases],
            cwd=ROOT, stderr=err)


def _stopped(process: subprocess.Popen[bytes], signals: list[int], tmp_path: Path) -> str:
    """Send ``signals``, each after the validator said it is stopping (signals sent at
    once would merge into one); it must end within 60 s of the last (it takes a second
    or two; the suite's own teardown and a loaded machine take more). Its stderr."""
    disposition = _signal_lines(process.pid)
    stderr = tmp_path / "stderr"
    try:
        for n, sig in enumerate(signals):
            if n:
                eventually(lambda: stderr.read_text(), lambda text: "stopping" in text,
                           timeout=30, description="the validator to say it is stopping")
            process.send_signal(sig)
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the validator ran on 60 s after {signals}; its signals: {disposition}; "
                    f"it said: {stderr.read_text()}")
    finally:
        if process.poll() is None:  # this test failed: nothing of the run may outlive it
            process.kill()
            process.wait()
            for suite_process in _suite_processes(tmp_path / "reports"):
                suite_process.kill()
    err = stderr.read_text()
    assert process.returncode == 130, f"{err}\nits signals: {disposition}"
    return err


@pytest.mark.parametrize("how", list(STOPS))
def test_an_interrupted_run_leaves_only_a_report_marked_incomplete(tmp_path, keyed_server,
                                                                   how) -> None:
    wrapper, signals = STOPS[how]
    reports = tmp_path / "reports"
    process = _start_validator(tmp_path, keyed_server, "clips", wrapper)
    try:
        folder = eventually(lambda: list(reports.glob("*")), bool, timeout=30,
                            description="the report folder to be made")[0]
    finally:
        _stopped(process, signals, tmp_path)
    assert [p.name for p in reports.iterdir()] == [folder.name]
    assert folder.name.endswith(".incomplete") and (folder / "INCOMPLETE").exists()
    assert not (folder / "summary.md").exists()


def _suite_processes(folder: Path) -> list[psutil.Process]:
    """The suite's pytest (its command line names the report folder), if alive."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(folder) in arg for arg in process.info["cmdline"] or []):
            found.append(process)
    return found


@pytest.mark.parametrize("signals", [[signal.SIGTERM], [signal.SIGINT, signal.SIGINT]],
                         ids=["SIGTERM", "Ctrl-C twice"])
def test_a_run_stopped_during_the_suite_leaves_no_suite_process(tmp_path, keyed_server,
                                                               signals) -> None:
    """The suite's pytest is stopped with the validator, never orphaned: on SIGTERM (a
    cancelled CI job) and on a second Ctrl-C while the suite winds down."""
    reports = tmp_path / "reports"
    process = _start_validator(tmp_path, keyed_server, "suite", [])
    try:
        folder = eventually(lambda: list(reports.glob("*")), bool, timeout=30,
                            description="the report folder to be made")[0]
        eventually(lambda: (folder / "events.jsonl").read_text()
                   if (folder / "events.jsonl").exists() else "",
                   lambda text: '"event": "start"' in text, timeout=60,
                   description="the suite's first test to start")
        assert _suite_processes(folder), "no suite process to stop"
    finally:
        _stopped(process, signals, tmp_path)
    assert _suite_processes(folder) == []
    if len(signals) == 1:  # stopped as on Ctrl-C, so its fixtures tore down: not killed
        assert "KeyboardInterrupt" in (folder / "suite.log").read_text()


def _signal_lines(pid: int) -> str:
    """The Sig* lines of /proc/PID/status (masks of blocked, ignored, caught signals)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return "; ".join(line for line in status.splitlines() if line.startswith("Sig"))


def _one_clip_manifest(tmp_path: Path) -> Path:
    """The manifest with JFK's clip only: a clips phase of 11 s."""
    from earshot import audio

    header, *rows = audio.MANIFEST.read_text().splitlines()
    path = tmp_path / "manifest.tsv"
    path.write_text("\n".join([header, *[r for r in rows if r.startswith("jfk.flac")]]) + "\n")
    return path


@pytest.mark.parametrize(("limits", "status", "verdict"), [
    ({}, 0, "SHIP"),
    ({"clips__max_first_text_s": 0.0}, 1, "DO NOT SHIP"),  # no server gives text at once
], ids=["within every limit", "a limit missed"])
def test_a_complete_run_against_a_deployment_writes_the_report(tmp_path, keyed_server, limits,
                                                              status, verdict) -> None:
    """End to end: the exit status follows the verdict, which the first line of the
    output and of the report both say."""
    reports = tmp_path / "reports"
    config = _thresholds(tmp_path, "clips.max_wer", 10 ** 6, **limits)
    done = validate("--target", keyed_server.ws_url, "--api-key", keyed_server.api_key,
                    "--phases", "clips", "--config", str(config), reports=reports,
                    timeout=120, env={"EARSHOT_AUDIO_MANIFEST": str(_one_clip_manifest(tmp_path))})
    assert done.returncode == status, done.stderr
    assert done.stdout.startswith(f"{verdict}: ")
    [folder] = list(reports.iterdir())
    assert not folder.name.endswith(".incomplete")
    assert done.stdout.splitlines()[0] == (folder / "summary.md").read_text().splitlines()[0]
    data = json.loads((folder / "metrics.json").read_text())
    assert [c["clip"] for c in data["clips"]] and data["container"] is None
    assert all(c["final_estimated"] is False for c in data["clips"])
    assert os.path.getsize(folder / "text_lag.png") > 0


def test_probe_leaves_no_session_behind(keyed_server) -> None:
    probe(keyed_server.ws_url, keyed_server.http_url, keyed_server.auth_headers())
    wait_for_sessions(keyed_server, 0, timeout=5)


async def test_a_foreign_server_without_end_of_transcript_still_streams(
        foreign_server) -> None:
    import numpy as np

    transcript = await wire.stream(foreign_server, np.zeros(32000, np.float32), speed=None,
                                   quiet=1.0)
    assert transcript.close_code == 1000 and not transcript.final
    assert transcript.heard == "and so"



def test_a_test_that_never_reported_is_a_failure_saying_so() -> None:
    result = suite.finish(_passing_suite(cut=suite.TestResult("t.py::cut", [])), 1, "")
    [cut] = result.of("failed")
    assert (cut.nodeid, cut.kind, cut.message) == (
        "t.py::cut", "core", "no result: the suite ended before this test reported")


def test_a_session_pytest_failed_at_its_end_is_a_failed_core_check_saying_why() -> None:
    log = "...\nerror: the test session left these behind (now removed):\n  temp dir x\n"
    [session] = suite.finish(_passing_suite(), 1, log).of("failed")
    assert session.as_dict() == {
        "nodeid": suite.SESSION, "kind": "core", "extensions": [], "outcome": "failed",
        "message": "pytest failed the session at its end with every test passed: "
                   "error: the test session left these behind (now removed):",
        "seconds": 0.0}
    [unexplained] = suite.finish(_passing_suite(), 1, "no error line\n").of("failed")
    assert unexplained.message == "pytest exited 1 with every test passed (see suite.log)"


def test_the_seed_is_read_from_pytests_header_only() -> None:
    """The first 30 lines hold pytest's header; a seed a test prints later is not the run's."""
    header = ["line"] * 29
    assert suite.finish({}, 0, "\n".join([*header, "Using --randomly-seed=42"])).seed == "42"
    assert suite.finish({}, 0, "\n".join([*header, "x", "Using --randomly-seed=42"])).seed is None


def test_a_threshold_not_measured_shows_a_dash_in_the_summarys_table(tmp_path) -> None:
    thresholds = _thresholds(tmp_path, "suite.max_core_failures", 0)
    run = _run(thresholds=load(thresholds), network=[], phases=("suite", "network"))
    report.write(run, tmp_path)
    rows = [line for line in (tmp_path / "summary.md").read_text().splitlines()
            if line.startswith("| network.max_wer |")]
    assert rows and rows[0].split(" | ")[1] == "-", rows


def test_a_tests_time_is_reported_to_the_hundredth_of_a_second() -> None:
    result = suite.TestResult("t.py::slow", ["status"], "passed", seconds=12.3456)
    assert result.as_dict() == {"nodeid": "t.py::slow", "kind": "extension",
                                "extensions": ["status"], "outcome": "passed", "message": "",
                                "seconds": 12.35}


def test_a_target_that_is_not_websocket_is_refused_in_the_docs_own_words(tmp_path,
                                                                       capsys) -> None:
    from earshot.validation import cli as validation_cli

    args = validation_cli.parse_args(["--target", "http://127.0.0.1:1",
                                      "--reports", str(tmp_path / "reports")])
    assert validation_cli.validate(args) == 2
    line = "error: --target must be ws://HOST:PORT or wss://..., not 'http://127.0.0.1:1'"
    assert capsys.readouterr().err == line + "\n"
    doc = (ROOT / "docs" / "validation.md").read_text(encoding="utf-8")
    assert f"`{line.replace('127.0.0.1:1', '...')}`" in doc
    assert not (tmp_path / "reports").exists()


def test_a_deployment_is_the_suites_url_target_and_has_no_container_to_measure() -> None:
    from earshot.validation import cli as validation_cli

    args = validation_cli.parse_args(["--target", "ws://127.0.0.1:1", "--api-key", "k"])
    with validation_cli.open_target(args) as target:
        assert target.suite_args == ["--earshot-target", "url", "--earshot-url",
                                     "ws://127.0.0.1:1"]
        assert target.container_id is None  # no container stats for a deployment
        assert target.server.api_key == "k" and "k" not in " ".join(target.suite_args)


def test_a_target_that_cannot_be_set_up_is_one_line_naming_why_and_exit_2(
        tmp_path, capsys, monkeypatch) -> None:
    from contextlib import contextmanager

    from earshot.validation import cli as validation_cli

    @contextmanager
    def cannot_start(args):  # stands in for an image that will not build
        raise RuntimeError("docker build of earshot-server:cpu-x failed\n(its output above)")
        yield

    monkeypatch.setattr(validation_cli, "open_target", cannot_start)
    args = validation_cli.parse_args(["--reports", str(tmp_path / "reports")])
    assert validation_cli.validate(args) == 2
    assert capsys.readouterr().err == (
        "error: RuntimeError: docker build of earshot-server:cpu-x failed\n")
    assert not (tmp_path / "reports").exists()
