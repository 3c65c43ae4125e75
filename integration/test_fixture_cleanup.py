"""Seed 004, measured: repeated sessions grow nothing, and teardown survives a failure.

The leak guard proves each test returns to its baseline; these tests go
further: 50 connect/stream/close cycles must not grow the test process's
threads, descriptors, tasks or memory, nor the server's sessions or (on the
container target) the container's memory; and a test body that raises still
gets every fixture's teardown, leaving nothing behind.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path

import psutil
import pytest

from earshot.client import AsyncTranscriptionClient
from earshot.plugin import INNER_SESSION_ARGS
from earshot.testing.waiting import wait_for_sessions_async

ROOT = Path(__file__).resolve().parents[1]
CYCLES = 50
WARMUP = 5  # first cycles fill caches and pools; growth is measured after them
# Bounds for 45 measured cycles of 0.5 s of audio each. A client that kept its
# buffers or sockets would add far more (each cycle moves ~32 kB of audio and
# holds a socket, a task and a transcript); allocator noise stays well under.
MAX_CLIENT_GROWTH_MB = 20
MAX_CONTAINER_GROWTH_MB = 60


def _threads() -> int:
    """Threads of the test process, less the event loop's default executor: that
    pool grows on demand (asyncio.to_thread) and keeps idle workers until the
    loop closes, which the leak guard checks after the test."""
    return sum(not t.name.startswith("asyncio_") for t in threading.enumerate())


def _fds() -> int:
    return psutil.Process().num_fds()


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def _container_mb(server) -> float | None:
    """The container's memory as the engine accounts it (None: not a container)."""
    stats = getattr(server, "memory_usage", None)
    return stats() / 2**20 if stats else None


async def _cycle(url: str, api_key: str | None, audio) -> None:
    async with AsyncTranscriptionClient(url, api_key=api_key) as client:
        await client.stream(audio, realtime=False)
        await client.finish(timeout=30)


@pytest.mark.timeout(300)
@pytest.mark.extension("status")
async def test_fifty_sessions_grow_nothing(server_factory, jfk) -> None:
    """On a server of the test's own: its memory is this test's alone to measure (a
    shared one grows with its other clients' sessions)."""
    idle_server = server_factory()
    audio = jfk[:8000]
    for _ in range(WARMUP):
        await _cycle(idle_server.ws_url, idle_server.api_key, audio)
    await wait_for_sessions_async(idle_server, 0)
    loop = asyncio.get_running_loop()
    before = (_threads(), _fds(), len(asyncio.all_tasks(loop)), _rss_mb(),
              await asyncio.to_thread(_container_mb, idle_server))
    for _ in range(CYCLES - WARMUP):
        await _cycle(idle_server.ws_url, idle_server.api_key, audio)
    await wait_for_sessions_async(idle_server, 0)
    after = (_threads(), _fds(), len(asyncio.all_tasks(loop)), _rss_mb(),
             await asyncio.to_thread(_container_mb, idle_server))
    assert after[:3] == before[:3], f"threads, fds, tasks: {before[:3]} -> {after[:3]}"
    assert after[3] - before[3] <= MAX_CLIENT_GROWTH_MB, f"RSS {before[3]:.1f} -> {after[3]:.1f}"
    if before[4] is not None:
        growth = after[4] - before[4]
        assert growth <= MAX_CONTAINER_GROWTH_MB, f"container {before[4]:.1f} -> {after[4]:.1f}"
    assert AsyncTranscriptionClient.active_instances() == []


def test_teardown_runs_and_releases_everything_when_the_test_body_raises(
    pytester: pytest.Pytester, pytestconfig: pytest.Config
) -> None:
    """An inner suite on the same target: a test with a server of its own, a proxy
    and a streaming client raises mid-stream. It fails for its own reason only;
    no fixture's teardown errs, the leak guard is clean, nothing outlives it."""
    for name in ("conftest.py", "pyproject.toml"):
        shutil.copy(ROOT / name, pytester.path / name)
    shutil.copytree(ROOT / "fixtures", pytester.path / "fixtures")
    pytester.makepyfile(test_inner="""
import asyncio
from earshot.testing.proxy import Proxy

async def test_raises_mid_stream(server_factory, client_factory, jfk):
    srv = server_factory(max_clients=2)
    with Proxy(srv.host, srv.port) as proxy:
        client = client_factory(f"ws://127.0.0.1:{proxy.port}", server=srv)
        await client.connect()
        asyncio.create_task(client.stream(jfk, realtime=True))
        await client.send_audio(jfk[:1600])
        raise RuntimeError("the test body fails mid-stream")
""")
    option = pytestconfig.getoption
    args = [f"--earshot-target={option('earshot_target')}"]
    if option("earshot_url"):
        args.append(f"--earshot-url={option('earshot_url')}")
    result = pytester.runpytest_subprocess("test_inner.py", "-p", "no:randomly",
                                           "-p", "no:cacheprovider", *INNER_SESSION_ARGS, *args,
                                           timeout=240)
    if option("earshot_target") == "url":
        result.assert_outcomes(skipped=1)  # a server of its own cannot be had there
        return
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*RuntimeError: the test body fails mid-stream*"])
    assert "left these behind" not in result.stdout.str()
    assert "still held" not in result.stdout.str()
