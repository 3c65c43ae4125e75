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
