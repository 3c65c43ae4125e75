"""earshot's pytest plugin as another project meets it: installed (the
``pytest11`` entry point), inert until asked, and its leak guard opt-in.

Each inner session is a subprocess with no earshot settings of its own, so
it sees exactly what a foreign project with earshot installed sees.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import pytest

from earshot.plugin import INNER_SESSION_ARGS

# A project of its own: a test that leaves a thread (earshot's guard would fail
# it), an async test, its own `proxy` fixture, and its own marker.
FOREIGN_CONFTEST = """
import pytest

@pytest.fixture
def proxy():
    return "the project's own proxy"

def pytest_configure(config):
    config.addinivalue_line("markers", "slow: the project's own marker")
"""
FOREIGN_TESTS = """
import asyncio, threading
import pytest

stop = threading.Event()

def test_leaves_a_thread():
    threading.Thread(target=stop.wait, name="their-worker", daemon=True).start()

@pytest.mark.slow
def test_uses_its_own_proxy(proxy, tmp_path):
    assert proxy == "the project's own proxy"

def test_fails_on_purpose():
    assert 1 == 2

def test_stops_the_thread():
    stop.set()
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider",
                                         *INNER_SESSION_ARGS, *args)


def body(result: pytest.RunResult) -> list[str]:
    """The output without the header (which lists the plugins) and the timing line."""
    lines = result.outlines
    start = next(n for n, line in enumerate(lines) if line.startswith("collected"))
    return [line for line in lines[start:] if " in " not in line or "====" not in line]


def test_the_entry_point_registers_the_plugin() -> None:
    found = [e for e in metadata.entry_points(group="pytest11") if e.name == "earshot"]
    assert [e.value for e in found] == ["earshot.plugin"]


def test_a_project_that_asks_for_nothing_sees_no_change(pytester: pytest.Pytester,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The same outcomes, the same fixtures set up for each test (setup plan),
    the same output, with the plugin and without it (``-p no:earshot``); and
    the session-end sweep, which is opt-in, removes nothing."""
    pytester.makeconftest(FOREIGN_CONFTEST)
    pytester.makepyfile(test_theirs=FOREIGN_TESTS)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    # A temp folder of the inner sessions' own: another session on this machine that
    # does sweep (rightly) would otherwise remove the orphan-looking dir meanwhile.
    private_tmp = pytester.path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(private_tmp))
    looks_orphaned = Path(tempfile.mkdtemp(prefix=f"earshot-server-{int(dead.stdout)}-",
                                           dir=private_tmp))
    try:
        plans = [body(run(pytester, "--setup-plan", *off)) for off in ([], ["-p", "no:earshot"])]
        results = [run(pytester, *off) for off in ([], ["-p", "no:earshot"])]
        assert looks_orphaned.is_dir(), "a foreign session swept an earshot temp dir"
    finally:
        shutil.rmtree(looks_orphaned, ignore_errors=True)
    assert plans[0] == plans[1]
    assert "proxy" in "\n".join(plans[0])  # the plan does list fixtures
    for result in results:
        result.assert_outcomes(passed=3, failed=1)
    assert body(results[0]) == body(results[1])
    assert "earshot" not in "\n".join(body(results[0]))


def test_the_leak_guard_is_opt_in_per_test(pytester: pytest.Pytester) -> None:
    """``usefixtures("leak_guard")`` guards that test only; the unmarked twin passes."""
    pytester.makepyfile(test_theirs="""
import threading
import pytest

stop = threading.Event()

def test_unguarded_leak():
    threading.Thread(target=stop.wait, name="unguarded", daemon=True).start()

@pytest.mark.usefixtures("leak_guard")
def test_guarded_leak():
    threading.Thread(target=stop.wait, name="guarded", daemon=True).start()

@pytest.mark.usefixtures("leak_guard")
async def test_guarded_async_leak():
    import asyncio
    asyncio.get_running_loop().create_task(asyncio.Event().wait(), name="forgotten")

def test_zz_cleanup():
    stop.set()
""")
    result = run(pytester, "-o", "asyncio_mode=auto")
    result.assert_outcomes(passed=4, errors=2)
    out = result.stdout.str()
    assert "thread 'guarded'" in out and "thread 'unguarded'" not in out
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_guarded_async_leak*",
                                 "*asyncio task forgotten*"])


def test_the_ini_option_guards_every_test(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\nearshot_leak_guard = true\n")
    pytester.makepyfile(test_theirs="""
import threading
stop = threading.Event()

def test_leaks():
    threading.Thread(target=stop.wait, name="left-running", daemon=True).start()

def test_zz_cleanup():
    stop.set()
""")
    result = run(pytester)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*still held*", "*thread 'left-running'*"])
