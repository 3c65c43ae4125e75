"""The plugin's options and switches, each judged in an inner pytest session.

``--earshot-api-key`` (servers require it, the suite's clients and status
calls send it), ``EARSHOT_TEST_*`` (the suite's variables) against the
server's ``EARSHOT_*`` (which reach neither the suite nor a local server),
servers of a test's own skipping on the url target, ``-p no:earshot``, and
this repository's 120 s timeout with the thread method.

The inner sessions run in a subprocess (pytester) with the repository's root
conftest, settings and fixture plugins and a private TMPDIR; the servers are
real local ones.
"""

from __future__ import annotations

import pytest

from earshot.plugin import INNER_SESSION_ARGS
from earshot.testing.local import LocalServer


def run(suite: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    suite.makepyfile(test_inner=source)
    return suite.runpytest_subprocess("test_inner.py", "-p", "no:randomly",
                                      "-p", "no:cacheprovider", *INNER_SESSION_ARGS, *args)


# -- H8: --earshot-api-key ---------------------------------------------------------------


def test_with_an_api_key_the_servers_require_it_and_the_suite_sends_it(
        suite: pytest.Pytester) -> None:
    result = run(suite, """
import numpy as np
from earshot.testing import wire
from earshot.testing.waiting import wait_for_sessions_async

NO_KEY = {"Authorization": ""}

async def test_the_shared_server(client_factory, whisperlive_idle_server, jfk):
    server = whisperlive_idle_server
    assert server.api_key == "the-key"
    assert server.get("/status", headers=NO_KEY)[0] == 401  # it requires the key
    # which the suite sends (earshot.plugin.server.SHARED_SETTINGS)
    assert server.server_status()["capacity"]["max_clients"] == 32
    client = client_factory()  # the key is not given here: the factory sends it
    await client.connect()
    await client.stream(jfk[:32000], realtime=False)
    assert await client.finish(timeout=60)
    exchange = await wire.stream(server.ws_url, jfk[:16000], speed=None,
                                 headers=server.auth_headers())
    assert exchange.final
    await wait_for_sessions_async(server, 0)

def test_a_server_of_the_tests_own(server_factory, sync_client_factory, jfk):
    own = server_factory(max_clients=2)
    assert own.get("/status", headers=NO_KEY)[0] == 401
    assert own.server_status()["capacity"]["max_clients"] == 2
    client = sync_client_factory(server=own)
    client.connect()
    for piece in np.array_split(jfk[:32000], 20):
        client.send_audio(piece)
    assert client.finish(timeout=60)
""", "--earshot-target", "local", "--earshot-api-key", "the-key")
    result.assert_outcomes(passed=2)


# -- H9 / P14: EARSHOT_TEST_* for the suite; the server's EARSHOT_* reach nothing --------

SERVER_SETTINGS = {"EARSHOT_API_KEY": "from-the-shell", "EARSHOT_MAX_CLIENTS": "1"}


def test_the_servers_variables_in_the_shell_do_not_reach_a_local_server(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SERVER_SETTINGS.items():
        monkeypatch.setenv(name, value)
    with LocalServer() as srv:
        assert srv.get("/status", headers={"Authorization": ""})[0] == 200  # no key required
        assert srv.server_status()["capacity"]["max_clients"] == 4  # the server's default


def test_the_suite_reads_earshot_test_variables_and_not_the_servers(
        suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EARSHOT_TEST_TARGET", "local")  # no --earshot-target: this picks it
    for name, value in SERVER_SETTINGS.items():
        monkeypatch.setenv(name, value)
    result = run(suite, """
from earshot.testing.local import LocalServer

def test_on_a_local_server_without_the_shells_settings(whisperlive_server):
    assert isinstance(whisperlive_server, LocalServer)
    assert whisperlive_server.api_key is None
    assert whisperlive_server.get("/status", headers={"Authorization": ""})[0] == 200
    assert whisperlive_server.server_status()["capacity"]["max_clients"] == 32
""")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(("variable", "option", "flag"), [
    ("EARSHOT_TEST_TARGET", "earshot_target", "url"),
    ("EARSHOT_TEST_URL", "earshot_url", "ws://127.0.0.1:2"),
    ("EARSHOT_TEST_MODEL", "earshot_model", "/models/small"),
    ("EARSHOT_TEST_DEVICE", "earshot_device", "cuda"),
    ("EARSHOT_TEST_API_KEY", "earshot_api_key", "from-the-flag"),
])
def test_each_earshot_test_variable_is_its_options_default_and_the_flag_wins(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, variable: str, option: str,
        flag: str) -> None:
    from_env = "local" if variable == "EARSHOT_TEST_TARGET" else "from-the-variable"
    monkeypatch.setenv(variable, from_env)
    assert pytester.parseconfig().getoption(option) == from_env
    dashed = "--" + option.replace("_", "-")
    assert pytester.parseconfig(f"{dashed}={flag}").getoption(option) == flag


# -- H12: servers of a test's own skip on the url target, saying why --------------------


def test_server_factory_and_controllable_server_skip_on_the_url_target(
        suite: pytest.Pytester) -> None:
    result = run(suite, """
def test_wants_a_factory(server_factory):
    raise AssertionError("ran on the url target")

def test_wants_a_controllable_server(controllable_server):
    raise AssertionError("ran on the url target")
""", "--earshot-target", "url", "--earshot-url", "ws://127.0.0.1:1", "-rs")
    result.assert_outcomes(skipped=2)
    why = ("needs a server of its own with its own settings; "
           "the url target is a deployment this suite cannot start")
    result.stdout.fnmatch_lines([f"SKIPPED [[]1[]] test_inner.py:1: {why}",
                                 f"SKIPPED [[]1[]] test_inner.py:4: {why}"])


# -- P2: -p no:earshot --------------------------------------------------------------------


def test_p_no_earshot_turns_the_plugin_off(pytester: pytest.Pytester,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(pytester.mkdir("tmp")))
    pytester.makepyfile(test_inner="""
def test_uses_the_server(whisperlive_server):
    pass
""")
    on = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider",
                                       *INNER_SESSION_ARGS, "--earshot-target", "url")
    off = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider",
                                        *INNER_SESSION_ARGS, "-p", "no:earshot")
    assert "whisperlive_server" in on.stdout.str()
    assert "whisperlive_server" not in off.stdout.str()
    assert "--earshot-target" not in pytester.runpytest_subprocess(
        "--help", "-p", "no:earshot", *INNER_SESSION_ARGS).stdout.str()
    ran = pytester.runpytest_subprocess("test_inner.py", "-p", "no:cacheprovider",
                                        *INNER_SESSION_ARGS, "-p", "no:earshot")
    ran.assert_outcomes(errors=1)
    ran.stdout.fnmatch_lines(["*fixture 'whisperlive_server' not found*"])


# -- H38: every test here has a 120 s timeout, thread method ------------------------------


def test_every_test_here_has_a_120_s_timeout_with_the_thread_method(
        suite: pytest.Pytester) -> None:
    result = run(suite, """
import pytest

def test_settings(request):
    assert request.config.getini("timeout") == "120"
    assert request.config.getini("timeout_method") == "thread"
    assert request.node.get_closest_marker("timeout") is None  # the ini's, not a mark's
""")
    result.assert_outcomes(passed=1)


def test_model_device_and_key_options_reach_every_server_a_tests_settings_winning(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    from earshot.plugin import server as plugin_server

    opened: list[tuple[str, dict[str, object]]] = []
    monkeypatch.setattr(plugin_server, "open_target",
                        lambda kind, **given: opened.append((kind, given)))
    config = pytester.parseconfig("--earshot-target=local", "--earshot-model=/models/m",
                                  "--earshot-device=cpu", "--earshot-api-key=suite-key")
    plugin_server._open(config, max_clients=1)
    plugin_server._open(config, device="cuda", api_key=None)  # a test's own settings win
    assert opened == [
        ("local", {"url": None, "api_key": "suite-key", "image": None, "model": "/models/m",
                   "device": "cpu", "max_clients": 1}),
        ("local", {"url": None, "api_key": None, "image": None, "model": "/models/m",
                   "device": "cuda"}),
    ]


def test_on_the_url_target_the_suite_uses_the_deployment_and_counts_only_its_own_sessions(
        suite: pytest.Pytester) -> None:
    """A real server as the deployment, with someone else's session open on it for the
    whole inner run: the inner suite's server is that URL, its idle server and leak
    guard count only the run's own sessions (the other one is never waited for), and
    a stream of its own works."""
    import json

    from websockets.sync.client import connect

    from earshot.testing import wire

    with LocalServer() as deployment, connect(deployment.ws_url) as other:
        other.send(json.dumps(wire.config(uid="someone-else")))
        assert json.loads(other.recv(timeout=30))["message"] == "SERVER_READY"
        result = run(suite, f"""
from earshot.testing.targets import UrlServer
from earshot.testing import wire

async def test_the_deployment(whisperlive_idle_server, jfk):
    server = whisperlive_idle_server
    assert isinstance(server, UrlServer) and server.shared
    assert server.ws_url == "{deployment.ws_url}"
    status = server.server_status()
    assert [s["uid"] for s in status["sessions"]] == ["someone-else"]
    assert server.own_sessions(status) == []
    transcript = await wire.stream(server.ws_url, jfk[:32000], speed=None)
    assert transcript.accepted and transcript.final
""", "--earshot-target", "url", "--earshot-url", deployment.ws_url)
    result.assert_outcomes(passed=1)
