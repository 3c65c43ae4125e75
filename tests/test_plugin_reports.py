"""What the plugin writes into a run's reports: the client factories' latencies as
JUnit properties, the proxy's toxics in a failed test's report.

Each case is an inner pytest session (pytester, in a subprocess) with the
repository's root conftest, settings and fixture plugins, and a private TMPDIR
so that what it leaves or sweeps no other session on this machine sees. The
server, where one is needed, is a real local one (``--earshot-target local``).
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from earshot.plugin import INNER_SESSION_ARGS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    for name in ("conftest.py", "pyproject.toml"):
        shutil.copy(ROOT / name, pytester.path / name)
    shutil.copytree(ROOT / "fixtures", pytester.path / "fixtures")
    private_tmp = pytester.path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(private_tmp))
    return pytester


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
