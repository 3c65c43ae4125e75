"""What the plugin writes into a run's reports: the client factories' latencies as
JUnit properties, the proxy's toxics in a failed test's report.

Each case is an inner pytest session (pytester, in a subprocess) with the
repository's root conftest, settings and fixture plugins, and a private TMPDIR
so that what it leaves or sweeps no other session on this machine sees. The
server, where one is needed, is a real local one (``--earshot-target local``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from earshot.plugin import INNER_SESSION_ARGS


def run(suite: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    suite.makepyfile(test_inner=source)
    return suite.runpytest_subprocess("test_inner.py", "-p", "no:randomly",
                                      "-p", "no:cacheprovider", *INNER_SESSION_ARGS, *args)


def properties(junit: Path) -> dict[str, dict[str, str]]:
    """Per test case name, its JUnit properties."""
    cases = ET.parse(junit).getroot().iter("testcase")
    return {case.get("name", ""): {p.get("name", ""): p.get("value", "")
                                   for p in case.iter("property")} for case in cases}


LATENCIES = ("client0_connect_s", "client0_first_segment_s", "client0_final_s")


def test_both_client_factories_record_each_clients_latencies_in_the_junit_xml(
        suite: pytest.Pytester) -> None:
    junit = suite.path / "junit.xml"
    result = run(suite, """
import numpy as np

async def test_async_client(client_factory, whisperlive_server, jfk):
    client = client_factory()
    await client.connect()
    await client.stream(jfk, realtime=False)
    assert await client.finish(timeout=60)

def test_sync_client(sync_client_factory, whisperlive_server, jfk):
    client = sync_client_factory()
    client.connect()
    for piece in np.array_split(jfk, 110):
        client.send_audio(piece)
    assert client.finish(timeout=60)
""", "--earshot-target", "local", f"--junitxml={junit}")
    result.assert_outcomes(passed=2)
    recorded = properties(junit)
    for test in ("test_async_client", "test_sync_client"):
        assert set(LATENCIES) <= set(recorded[test]), (test, recorded[test])
        assert all(float(recorded[test][name]) > 0 for name in LATENCIES), recorded[test]


def test_a_failed_tests_report_shows_the_proxys_active_toxics(suite: pytest.Pytester) -> None:
    result = run(suite, """
from earshot.testing.proxy import Bandwidth, Latency

def test_fails_behind_a_slow_link(proxy):
    proxy.add(Latency(100, jitter_ms=5), "upstream")
    proxy.add(Bandwidth(125))
    assert False, "the link was too slow"

def test_passes_behind_a_slow_link(proxy):
    proxy.add(Latency(300))
""", "--earshot-target", "local")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*- earshot proxy -*",
        "proxy 127.0.0.1:* -> 127.0.0.1:*; upstream: Latency(latency_ms=100, jitter_ms=5);"
        " downstream: Bandwidth(rate_kbps=125)",
    ])
    assert result.stdout.str().count("earshot proxy") == 1  # the failed test's report only
    assert "latency_ms=300" not in result.stdout.str()


def test_each_test_gets_a_fresh_proxy_without_toxics_stopped_at_teardown(
        suite: pytest.Pytester) -> None:
    result = run(suite, """
import socket
import pytest
from earshot.testing.proxy import Latency

first = []

def test_first(proxy):
    assert proxy.toxics("upstream") == [] and proxy.toxics("downstream") == []
    proxy.add(Latency(100), "both")
    first.append(proxy)

def test_second(proxy):
    assert proxy is not first[0]
    assert proxy.toxics("upstream") == [] and proxy.toxics("downstream") == []
    if proxy.port != first[0].port:  # (the kernel may hand the same free port out again)
        with pytest.raises(ConnectionRefusedError):  # the first test's proxy is stopped
            socket.create_connection(("127.0.0.1", first[0].port), timeout=5).close()
""", "--earshot-target", "local")
    result.assert_outcomes(passed=2)


# A stand-in for the session's server (named as such): its /status lists the sessions
# in SESSIONS (each polled away after a few polls), its log grows by one line a poll.
STAND_IN_SERVER = '''
import os
import pytest
from earshot.testing.http import HttpEndpoints
from earshot.testing.offers import Offers

class StandInServer(HttpEndpoints):
    host, port, shared = "127.0.0.1", 1, False

    def __init__(self):
        self.sessions, self.polls, self.lines, self.phases = [], 0, ["started"], []

    def server_status(self, headers=None):
        self.polls += 1
        self.phases.append(os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[-1])
        self.lines.append(f"poll {self.polls}")
        self.sessions = [(uid, left - 1) for uid, left in self.sessions if left > 1]
        return {"sessions": [{"uid": uid, "session_id": uid} for uid, _ in self.sessions]}

    def log_text(self):
        return "\\n".join(self.lines)

STAND_IN = StandInServer()

@pytest.fixture(scope="session")
def whisperlive_server():
    return STAND_IN

@pytest.fixture(scope="session")
def whisperlive_offers():
    return Offers(frozenset({"status"}), {})
'''


# The local target: no image is built at collection for the stand-in (a subprocess:
# Locust's plugin, which this repository's ini leaves off, would patch this process).
STAND_IN_ARGS = ("-p", "no:randomly", "-p", "no:cacheprovider", "--earshot-target", "local",
                 *INNER_SESSION_ARGS)


def test_the_idle_server_waits_for_no_session_before_and_after_the_test(
        pytester: pytest.Pytester) -> None:
    pytester.makeconftest(STAND_IN_SERVER)
    pytester.makepyfile(test_idle="""
from conftest import STAND_IN

STAND_IN.sessions = [("left-by-an-earlier-test", 3)]  # gone after 3 polls

def test_first(whisperlive_idle_server):
    assert whisperlive_idle_server.sessions == []  # waited for in the set-up
    assert STAND_IN.phases == ["(setup)"] * 3
    STAND_IN.sessions = [("this-tests-own", 4)]

def test_second(whisperlive_idle_server):
    # the first test's teardown waited its session out: 4 polls; this set-up, one
    assert STAND_IN.phases[3:] == ["(teardown)"] * 4 + ["(setup)"]
""")
    result = pytester.runpytest_subprocess(*STAND_IN_ARGS)
    result.assert_outcomes(passed=2)


def test_a_failed_tests_report_has_the_shared_servers_log_written_during_it(
        pytester: pytest.Pytester) -> None:
    pytester.makeconftest(STAND_IN_SERVER)
    pytester.makepyfile(test_log="""
def test_polls_then_fails(whisperlive_server):
    whisperlive_server.server_status()
    whisperlive_server.server_status()
    assert False, "failed on purpose"
""")
    result = pytester.runpytest_subprocess(*STAND_IN_ARGS)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    section = out[out.index("earshot server log during this test"):]
    assert "poll 1" in section and "poll 2" in section
    assert "started" not in section  # written before the test: not this test's


# Stand-ins (named as such) for the image build and Docker's set-up: they record
# what the plugin asks for, in a file the outer test reads.
STAND_IN_BUILD = '''
import json, os
import earshot.testing.image as image
from earshot.testing.container import WhisperLiveContainer

ASKED = os.path.join(os.path.dirname(__file__), "asked.jsonl")

def _record(what):
    with open(ASKED, "a") as f:
        f.write(json.dumps(what) + "\\n")

image.ensure_image = lambda variant="cpu": _record(["image", variant]) or f"stand-in:{variant}"
WhisperLiveContainer.prepare = classmethod(lambda cls: _record(["prepare"]))
'''


def _asked(pytester: pytest.Pytester) -> list[list[str]]:
    import json

    path = pytester.path / "asked.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_image_is_built_at_collection_only_when_a_collected_test_needs_it(
        pytester: pytest.Pytester) -> None:
    pytester.makeconftest(STAND_IN_BUILD)
    pytester.makepyfile(test_image="""
def test_uses_the_image(whisperlive_image):
    assert whisperlive_image == "stand-in:cpu"

def test_needs_nothing():
    pass
""")
    args = ("-p", "no:randomly", "-p", "no:cacheprovider", *INNER_SESSION_ARGS)
    pytester.runpytest_subprocess(*args).assert_outcomes(passed=2)
    assert _asked(pytester) == [["prepare"], ["image", "cpu"]]  # once, before any test
    (pytester.path / "asked.jsonl").unlink()
    pytester.runpytest_subprocess(*args, "-k", "needs_nothing").assert_outcomes(passed=1)
    assert _asked(pytester) == []  # no collected test needs it: nothing built


def test_the_cuda_image_is_built_too_when_a_test_asks_for_it(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(STAND_IN_BUILD)
    pytester.makepyfile(test_cuda="""
def test_uses_the_cuda_image(whisperlive_cuda_image):
    assert whisperlive_cuda_image == "stand-in:cuda"
""")
    pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider",
                                  *INNER_SESSION_ARGS).assert_outcomes(passed=1)
    assert _asked(pytester) == [["prepare"], ["image", "cuda"]]


# Stand-ins for the engine's list of earshot containers (named as such): a container
# "made" by a test is one more id in CONTAINERS; removing it is recorded.
STAND_IN_CONTAINERS = STAND_IN_BUILD + '''
import earshot.testing.container as container

CONTAINERS = []
container.labelled_containers = lambda mine=True: list(CONTAINERS)
container.owners = lambda: {}
container.remove_labelled = lambda ids=None, mine=True: _record(["removed", sorted(ids)])
'''


def test_a_container_left_by_a_test_is_named_by_its_guard_and_by_the_sessions_end(
        pytester: pytest.Pytester) -> None:
    pytester.makeconftest(STAND_IN_CONTAINERS)
    pytester.makepyfile(test_left="""
from conftest import CONTAINERS

def test_leaves_a_container(whisperlive_image):
    CONTAINERS.append("c0ffee" + "0" * 58)
""")
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider",
                                           "-o", "earshot_leak_guard=true",
                                           *INNER_SESSION_ARGS)
    result.assert_outcomes(passed=1, errors=1)  # the guard's error, at teardown
    out = result.stdout.str()
    guard = out[out.index("still held"):]
    assert "earshot container c0ffee000000" in guard.splitlines()[1]
    assert "the test session left these behind (now removed):" in out
    assert "earshot container c0ffee000000" in out[out.index("left these behind"):]
    assert _asked(pytester)[-1] == ["removed", ["c0ffee" + "0" * 58]]
    assert result.ret != 0
