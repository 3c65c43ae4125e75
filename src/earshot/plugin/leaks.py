"""The leak guard: what a test took must be released by its end.

Threads, file descriptors, child processes (every guarded test); asyncio
tasks (guarded async tests, checked inside their loop); the server's sessions
(tests that use ``whisperlive_server``, where the server offers /status; on a
shared deployment only this run's own, by uid); earshot-labelled containers
(tests that make servers or use the image). The guard waits, with a deadline,
for things to settle, then fails the test that leaked and names what it
leaked. ``@pytest.mark.leaks_allowed("why")`` opts a test out.

Opt-in: a test (or module, with ``pytestmark``) that requests ``leak_guard``,
e.g. ``@pytest.mark.usefixtures("leak_guard")``; or every test, with the ini
option ``earshot_leak_guard = true``, which also checks at the session's end
that nothing the session started (child processes, earshot temp dirs,
earshot containers) is alive, and sweeps what killed sessions left.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio

from earshot.plugin.server import OWN_SERVER_FIXTURES, SERVER_FIXTURES
from earshot.testing import leaks

SETTLE_SECONDS = 5.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "leaks_allowed(reason): earshot's leak guard does not check this test"
    )
    if config.getini("earshot_leak_guard"):
        from earshot.plugin import guard_every_test

        config.pluginmanager.register(guard_every_test, "earshot-guard-every-test")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Guarded async tests also get the task guard, which runs inside their event loop.

    It goes right after the leak guard, so it is set up before and torn down
    after every other fixture of the test (client factories included).
    """
    for item in items:
        function = getattr(item, "function", None)
        names: list[str] = getattr(item, "fixturenames", [])
        if function is None or not inspect.iscoroutinefunction(function):
            continue
        if "leak_guard" in names:
            names.insert(names.index("leak_guard") + 1, "_earshot_task_guard")


def _allowed(request: pytest.FixtureRequest) -> bool:
    return request.node.get_closest_marker("leaks_allowed") is not None


def _sources(request: pytest.FixtureRequest) -> dict[str, Callable[[], Any]]:
    """What else to count, set up first: session things outlive the test on purpose."""
    sources: dict[str, Callable[[], Any]] = {}
    for name in SERVER_FIXTURES:
        if name in request.fixturenames:
            offers = request.getfixturevalue("whisperlive_offers")
            if "status" in offers.offered:
                server = request.getfixturevalue(name)  # on a shared one: this run's only
                sources["sessions"] = lambda server=server: server.own_sessions(
                    server.server_status())
            break
    on_containers = request.config.getoption("earshot_target") == "container"
    if on_containers and any(name in request.fixturenames for name in OWN_SERVER_FIXTURES):
        from earshot.testing.container import labelled_containers

        sources["containers"] = labelled_containers
    return sources


@pytest.fixture
def leak_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails the test if it leaves a thread, descriptor, child, container or session."""
    if _allowed(request):
        yield
        return
    sources = _sources(request)
    baseline = leaks.take(**sources)
    yield
    leaks.check(baseline, lambda: leaks.take(**sources), SETTLE_SECONDS)


@pytest_asyncio.fixture
async def _earshot_task_guard(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    if _allowed(request):
        yield
        return
    loop = asyncio.get_running_loop()
    baseline = leaks.take(loop=loop)
    yield
    await leaks.check_async(baseline, lambda: _tasks_only(leaks.take(loop=loop)), SETTLE_SECONDS)


def _tasks_only(snapshot: leaks.Snapshot) -> leaks.Snapshot:
    """Threads and the rest are the sync guard's, checked after the loop closes."""
    return leaks.Snapshot(tasks=snapshot.tasks, details=snapshot.details)
