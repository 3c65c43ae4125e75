"""The fixture plugins judged by pytester: each must fail the test it should fail.

Each inner session runs in a subprocess (runpytest_subprocess) with the
repository's root conftest, so it gets exactly the plugins a real suite gets.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psutil
import pytest

from earshot.plugin import INNER_SESSION_ARGS


def run(suite: pytest.Pytester, source: str) -> pytest.RunResult:
    suite.makepyfile(test_inner=source)
    return suite.runpytest_subprocess("test_inner.py", "-p", "no:randomly",
                                      "-p", "no:cacheprovider", *INNER_SESSION_ARGS)


def test_a_clean_test_passes(suite) -> None:
    result = run(suite, "def test_clean():\n    assert [1] == [1]\n")
    result.assert_outcomes(passed=1)


def test_a_leaked_thread_fails_and_is_named(suite) -> None:
    result = run(suite, """
import threading
stop = threading.Event()

def test_leaks_a_thread():
    threading.Thread(target=stop.wait, name="forgotten-worker", daemon=True).start()
""")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*still held*", "*thread 'forgotten-worker'*"])


def test_a_leaked_file_descriptor_fails_and_is_named(suite) -> None:
    result = run(suite, """
kept = []

def test_leaks_a_file(tmp_path):
    kept.append(open(tmp_path / "held-open.txt", "w"))
""")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*file descriptor * -> *held-open.txt*"])


def test_a_leaked_task_fails_and_is_named(suite) -> None:
    result = run(suite, """
import asyncio
kept = []  # a manager that holds its tasks, as the seeds' did

async def forever():
    await asyncio.Event().wait()

async def test_leaks_a_task():
    kept.append(asyncio.create_task(forever(), name="orphan"))
""")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*asyncio task orphan*forever*"])


def test_a_leaked_child_process_fails_and_is_named_and_does_not_outlive_the_session(
    suite,
) -> None:
    marker = f"leak-probe-{uuid.uuid4().hex}"
    result = run(suite, f"""
import subprocess, sys
kept = []

def test_leaks_a_child():
    kept.append(subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()",
                                  "{marker}"]))
""")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*the test session left these behind (now removed)*",
                                 f"*child process *{marker}*"])
    result.stdout.fnmatch_lines(["*still held*", f"*child process *{marker}*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    alive = [p.pid for p in psutil.process_iter(["cmdline"]) if marker in (p.info["cmdline"] or [])]
    assert alive == [], f"the leaked child outlived its session: {alive}"


def test_a_temp_dir_left_by_the_session_fails_it_and_is_removed(suite) -> None:
    result = run(suite, """
import tempfile
import pytest
from earshot.testing.leaks import temp_prefix

@pytest.mark.leaks_allowed("leaves a temp dir for the session's end to find")
def test_leaves_a_temp_dir():
    tempfile.mkdtemp(prefix=temp_prefix("left"))
""")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*the test session left these behind*",
                                 "*temp dir *earshot-left-*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert not list(Path(os.environ["TMPDIR"]).glob("earshot-left-*"))


def test_a_leaked_server_session_fails_and_is_named(suite) -> None:
    result = run(suite, """
import json, socket
import pytest
from websockets.sync.client import connect
from earshot.testing.local import LocalServer
from earshot.testing.waiting import wait_for_sessions

kept = []

@pytest.fixture(scope="session")
def whisperlive_server():  # a project's own server, in place of the plugin's
    with LocalServer() as srv:
        yield srv

def test_leaves_a_session_open(whisperlive_server):
    ws = connect(whisperlive_server.ws_url)
    ws.send(json.dumps({"uid": "left-open"}))
    ws.recv()
    kept.append(ws)
    wait_for_sessions(whisperlive_server, 1)

@pytest.mark.leaks_allowed("closes what the first test left")
def test_cleanup():
    kept.pop().close()
""")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*server session uid=left-open*"])


def test_the_opt_out_marker(suite) -> None:
    result = run(suite, """
import threading
import pytest
stop = threading.Event()

@pytest.mark.leaks_allowed("a daemon on purpose")
def test_allowed():
    threading.Thread(target=stop.wait, daemon=True).start()
""")
    result.assert_outcomes(passed=1)


def test_client_factory_fails_a_client_that_cannot_disconnect(suite) -> None:
    result = run(suite, """
async def test_sabotaged(client_factory):
    client = client_factory("ws://127.0.0.1:9")

    async def no_op(*args, **kwargs):
        return None

    client.close = no_op  # a close that does nothing cannot land in DISCONNECTED
    client._machine.state = client._machine.state.READY
""")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*client * ended READY, not DISCONNECTED*"])


def test_client_factory_closes_what_a_failed_test_left_open(suite) -> None:
    result = run(suite, """
import pytest
from earshot.testing.local import LocalServer

@pytest.fixture(scope="session")
def whisperlive_server():  # a project's own, in place of the plugin's
    with LocalServer() as srv:
        yield srv

async def test_fails_while_connected(server, client_factory):
    client = client_factory()
    await client.connect()
    assert False, "the test fails with its client connected"
""")
    result.assert_outcomes(failed=1)  # the failure is the test's own; no leak, no teardown error


def test_a_hanging_test_is_stopped_with_every_stack(suite) -> None:
    result = run(suite, """
import threading, time
import pytest

@pytest.mark.timeout(1)
def test_hangs():
    threading.Event().wait()
""")
    # pytest-timeout's thread method dumps every stack, then ends the process.
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*Timeout*", "*Stack of MainThread*", "*test_hangs*"])


def test_a_killed_sessions_leftovers_are_swept_by_the_next(suite, tmp_path) -> None:
    """A session killed before its teardown leaves a temp dir; the next session
    removes it (its owner's pid is dead) and says so."""
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    dead_pid = int(finished.stdout)  # exited and reaped: no longer alive
    left = Path(tempfile.mkdtemp(prefix=f"earshot-server-{dead_pid}-",
                                 dir=os.environ["TMPDIR"]))
    result = run(suite, "def test_nothing():\n    pass\n")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*removed what earlier, killed sessions left*",
                                 f"*temp dir {left}*"])
    assert not left.exists()


def test_a_failed_test_gets_the_log_of_its_own_server(suite) -> None:
    (suite.path / "pytest.ini").write_text("[pytest]\naddopts = --earshot-target=local\n")
    result = run(suite, """
def test_fails(server_factory):
    server_factory(max_clients=3)
    assert False, "fails with a server of its own"
""")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*earshot log of the test's own server 0*", "*listening*"])


# -- a shared or foreign server (the url target) --------------------------------------

SHARED = """
import json, subprocess, sys
import pytest
from websockets.sync.client import connect
from earshot.testing import wire
from earshot.testing.local import LocalServer
from earshot.testing.targets import UrlServer
from earshot.testing.waiting import wait_for_sessions

# Another user of the deployment: a process of its own that connects when told.
OTHER_USER = (
    "import json, sys\\n"
    "from websockets.sync.client import connect\\n"
    "sys.stdin.readline()\\n"
    "with connect(sys.argv[1]) as ws:\\n"
    "    ws.send(json.dumps({'uid': 'another-user'}))\\n"
    "    ws.recv()\\n"
    "    sys.stdin.read()\\n"
)
kept = []

@pytest.fixture(scope="session")
def deployment():
    with LocalServer() as srv:
        yield srv

@pytest.fixture(scope="session")
def whisperlive_server(deployment):  # reached by its URL: a shared server
    return UrlServer(deployment.ws_url)

@pytest.fixture(scope="session")
def other_user(deployment):
    other = subprocess.Popen([sys.executable, "-c", OTHER_USER, deployment.ws_url],
                             stdin=subprocess.PIPE, text=True)
    yield other
    other.stdin.close()
    other.wait(10)

def test_another_user_connects_meanwhile(other_user, idle_server):
    other_user.stdin.write("connect\\n")
    other_user.stdin.flush()
    wait_for_sessions(idle_server, 1, uids={"another-user"})

def test_own_session_left_open(other_user, idle_server):
    ws = connect(idle_server.ws_url)
    ws.send(json.dumps({"uid": wire.uid("mine")}))
    ws.recv()
    kept.append(ws)

@pytest.mark.leaks_allowed("closes what the tests left")
def test_cleanup():
    for ws in kept:
        ws.close()
"""


def test_another_users_session_on_a_shared_server_is_not_a_leak(suite) -> None:
    result = run(suite, SHARED)
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_own_session_left_open*",
                                 "*server session uid=*-mine*"])
    result.stdout.no_fnmatch_line("*uid=another-user*")


def test_a_server_without_status_skips_what_needs_it_and_says_so_once(suite) -> None:
    result = run(suite, """
import asyncio, json, threading
import pytest
from websockets.sync.server import serve
from earshot.testing.targets import UrlServer

def handler(ws):  # stand-in: WhisperLive's core only, no HTTP endpoints
    uid = json.loads(ws.recv())["uid"]
    ws.send(json.dumps({"uid": uid, "message": "SERVER_READY", "backend": "faster_whisper"}))
    for frame in ws:
        if frame == b"END_OF_AUDIO":
            break
    ws.close()

@pytest.fixture(scope="session")
def whisperlive_server():  # a project's own, in place of the plugin's
    with serve(handler, "127.0.0.1", 0) as standin:
        thread = threading.Thread(target=standin.serve_forever)
        thread.start()
        yield UrlServer(f"ws://127.0.0.1:{standin.socket.getsockname()[1]}")
        standin.shutdown()
        thread.join(10)

def test_core(idle_server):
    pass

def test_core_again(idle_server):
    pass

@pytest.mark.extension("status")
def test_needs_status(idle_server):
    raise AssertionError("must not run")
""")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(["*not offered: status (GET /status: HTTP 426*"])
    assert result.stdout.str().count("no /status on this server") == 1
