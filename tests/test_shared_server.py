"""One server for every xdist worker, owned by the controller (earshot.testing.shared,
earshot.plugin.server), and the groups of tests that start servers of their own.

The handoff is tested on its own with a stand-in for the server (an object with an
address, opened and closed by a context manager that records it); the plugin is
tested in inner pytest sessions on two xdist workers with real local servers.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from earshot.plugin import INNER_SESSION_ARGS
from earshot.testing.shared import Handoff, ServerHost, SharedServer, SharedServerError, where


class StandIn:
    """What ServerHost needs of a server: where it listens, its key, its log file."""

    host = "127.0.0.1"
    port = 5555
    api_key = "k"

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path


class Opener:
    """open_server() for a ServerHost: records when it opened and closed the stand-in."""

    def __init__(self, log_path: Path, error: Exception | None = None) -> None:
        self.log_path = log_path
        self.error = error
        self.opened = threading.Event()
        self.closed = threading.Event()

    @contextmanager
    def __call__(self) -> Iterator[StandIn]:
        self.opened.set()
        if self.error is not None:
            raise self.error
        try:
            yield StandIn(self.log_path)
        finally:
            self.closed.set()


def test_nothing_starts_until_a_worker_asks(tmp_path: Path) -> None:
    opener = Opener(tmp_path / "server.log")
    host = ServerHost(opener)
    try:
        assert not opener.opened.wait(0.5)  # a bound on a thing that must not happen
        assert list(host.handoff.folder.iterdir()) == []
    finally:
        host.close()
    assert not opener.opened.is_set() and not host.handoff.folder.exists()


def test_a_worker_reaches_the_server_the_controller_started_then_closed(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("listening\n")
    opener = Opener(log)
    host = ServerHost(opener)
    try:
        server = Handoff(host.handoff.folder).attach(timeout=10)
        again = Handoff(host.handoff.folder).attach(timeout=10)  # a second worker
        assert (server.host, server.port, server.api_key) == ("127.0.0.1", 5555, "k")
        assert server.ws_url == "ws://127.0.0.1:5555" == again.ws_url
        assert server.shared and not server.controllable
        assert server.log_text() == "listening\n"
        assert server.auth_headers() == {"Authorization": "Bearer k"}
        assert not opener.closed.is_set()
    finally:
        host.close()
    assert opener.closed.is_set()
    assert not host.handoff.folder.exists()


def test_the_handoff_folder_is_the_owners_alone(tmp_path: Path) -> None:
    host = ServerHost(Opener(tmp_path / "log"))
    try:
        assert host.handoff.folder.stat().st_mode & 0o077 == 0  # it may hold the API key
        assert host.handoff.folder.name.startswith("earshot-shared-")
    finally:
        host.close()


def test_a_start_that_fails_reaches_every_waiting_worker_with_its_reason(tmp_path: Path) -> None:
    host = ServerHost(Opener(tmp_path / "log", error=RuntimeError("no model here")))
    try:
        with pytest.raises(SharedServerError, match="could not start the shared server") as caught:
            Handoff(host.handoff.folder).attach(timeout=10)
        assert "RuntimeError: no model here" in str(caught.value)
    finally:
        host.close()


def test_a_worker_with_no_controller_answering_gives_up_at_its_deadline(tmp_path: Path) -> None:
    with pytest.raises(SharedServerError) as caught:
        Handoff(tmp_path).attach(timeout=0.5)
    text = str(caught.value)
    assert "timed out after 0.5" in text and "xdist controller" in text
    assert f"no server.json in {tmp_path} yet" in text
    assert (tmp_path / "want").exists()


def test_a_worker_whose_controller_has_gone_says_so(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    with pytest.raises(SharedServerError, match="the controller has ended"):
        Handoff(gone).attach(timeout=5)


def test_where_names_a_local_servers_log_and_a_containers_id(tmp_path: Path) -> None:
    assert where(StandIn(tmp_path / "a.log")) == {
        "host": "127.0.0.1", "port": 5555, "api_key": "k", "log_path": str(tmp_path / "a.log")}

    class Wrapped:
        id = "c0ffee"

    class Container(StandIn):
        def get_wrapped_container(self) -> Wrapped:
            return Wrapped()

    found = where(Container(tmp_path / "unused"))
    assert found["container_id"] == "c0ffee" and "log_path" not in found
    handle = SharedServer(json.loads(json.dumps(found)))
    assert handle.container_id == "c0ffee" and handle.log_path is None


def test_a_local_shared_server_is_not_a_container(tmp_path: Path) -> None:
    handle = SharedServer(where(StandIn(tmp_path / "a.log")))
    with pytest.raises(RuntimeError, match="a local process, not a container"):
        handle.get_wrapped_container()


# -- the plugin, on two xdist workers ---------------------------------------------------

INNER = '''
import os

import pytest


@pytest.mark.parametrize("n", range(4))
def test_shared(whisperlive_server, whisperlive_idle_server, n):
    with open("seen.txt", "a") as seen:  # the inner session runs in its own folder
        seen.write(f"SHARED {os.environ['PYTEST_XDIST_WORKER']} {whisperlive_server.port} "
                   f"{type(whisperlive_server).__name__} {os.getpid()}\\n")
    assert whisperlive_server.server_status()["capacity"]["max_clients"] == 32


@pytest.mark.parametrize("n", range(2))
def test_own(whisperlive_server_factory, n):
    own = whisperlive_server_factory(max_clients=1)
    assert own.server_status()["capacity"]["max_clients"] == 1
'''


@pytest.mark.timeout(240)
def test_two_workers_share_one_server_and_group_the_tests_with_their_own(
        suite: pytest.Pytester) -> None:
    suite.makepyfile(test_inner=INNER)
    result = suite.runpytest_subprocess(
        "test_inner.py", "-p", "no:randomly", "-p", "no:cacheprovider", *INNER_SESSION_ARGS,
        "--earshot-target", "local", "-n", "2", "--dist", "loadgroup", "-v")
    result.assert_outcomes(passed=6)
    text = result.stdout.str()
    shared = re.findall(r"SHARED (gw\d) (\d+) (\w+) (\d+)", (suite.path / "seen.txt").read_text())
    assert len(shared) == 4
    assert {port for _, port, _, _ in shared} == {shared[0][1]}, shared  # one server
    assert {kind for _, _, kind, _ in shared} == {"SharedServer"}
    assert len({worker for worker, _, _, _ in shared}) == 2, shared  # seen from both
    # Each test with a server of its own joined a group (the plugin deals two).
    groups = dict(re.findall(r"test_own\[(\d)\]@(earshot-own-server-\d)", text))
    assert groups == {"0": "earshot-own-server-0", "1": "earshot-own-server-1"}, text
    # Nothing of the session is left: no handoff folder, no server process.
    assert not list((suite.path / "tmp").glob("earshot-*")), list((suite.path / "tmp").iterdir())


@pytest.mark.timeout(240)
def test_a_test_that_names_its_xdist_group_keeps_it(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_inner='''
import pytest

@pytest.mark.xdist_group("mine")
def test_own(whisperlive_server_factory):
    pass
''')
    result = suite.runpytest_subprocess(
        "test_inner.py", "-p", "no:randomly", "-p", "no:cacheprovider", *INNER_SESSION_ARGS,
        "--earshot-target", "local", "-n", "2", "--dist", "loadgroup", "-v")
    result.assert_outcomes(passed=1)
    assert "test_own@mine" in result.stdout.str()
