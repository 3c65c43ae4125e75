"""The clients' bounded ends: a stuck synchronous client raises ThreadLeak naming its
thread instead of hanging; close_all closes every live client at once, holding no
lock while they close.

The server here is a stand-in, named as such: a websockets server that says
SERVER_READY and then stops reading, so it never answers a client's close
frame (the real server always does) and every close takes its full timeout.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.server import ServerConnection, serve

from earshot.client import (
    AsyncTranscriptionClient,
    ConnectionState,
    ThreadLeak,
    TranscriptionClient,
)
from earshot.client.sync import CALL_MARGIN
from earshot.testing.waiting import eventually

CLIENTS = 5
CLOSE_TIMEOUT = 1.0


def test_a_stuck_sync_client_raises_thread_leak_naming_its_thread() -> None:
    client = TranscriptionClient("ws://127.0.0.1:9")
    stuck = threading.Event()
    client.loop.call_soon_threadsafe(stuck.wait, 30)  # its loop will not come back
    name = client.thread.name
    started = time.monotonic()
    try:
        with pytest.raises(ThreadLeak) as raised:
            client.close(timeout=0.5)
        took = time.monotonic() - started
    finally:
        stuck.set()
    assert name.startswith(f"earshot-client-{client.client_id[:12]}")
    assert name in str(raised.value)
    assert took < 0.5 + CALL_MARGIN + 0.5 + 2, took  # bounded: the call's, then the join's
    eventually(lambda: not client.thread.is_alive(), timeout=5,
               description="the client's thread ending once its loop is free")
    assert client.loop.is_closed()


@pytest.fixture
async def never_answers_the_close() -> AsyncIterator[str]:
    """Stand-in: SERVER_READY, then no more reading (a close frame goes unanswered)."""
    held: list[ServerConnection] = []

    async def handler(ws: ServerConnection) -> None:
        uid = json.loads(await ws.recv())["uid"]
        await ws.send(json.dumps({"uid": uid, "message": "SERVER_READY", "backend": "x"}))
        ws.transport.pause_reading()
        held.append(ws)
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        for ws in held:  # now it sees the clients gone, and ends at once
            ws.transport.resume_reading()


async def test_sync_close_all_closes_every_client_at_once(never_answers_the_close: str) -> None:
    seen_while_closing: list[int] = []

    def listener(transition: object) -> None:  # takes the registry's lock during the close
        seen_while_closing.append(len(TranscriptionClient.active_instances()))

    def make() -> TranscriptionClient:
        client = TranscriptionClient(never_answers_the_close, on_state=listener)
        client.connect()
        return client

    clients = [await asyncio.to_thread(make) for _ in range(CLIENTS)]
    try:
        assert set(clients) <= set(TranscriptionClient.active_instances())
        started = time.monotonic()
        errors = await asyncio.to_thread(TranscriptionClient.close_all, CLOSE_TIMEOUT)
        took = time.monotonic() - started
    finally:
        for client in clients:
            await asyncio.to_thread(client.close)
    assert errors == []
    assert all(c.state is ConnectionState.DISCONNECTED for c in clients)
    assert not any(c.thread.is_alive() for c in clients)
    assert seen_while_closing  # the listeners ran during the close, and did not deadlock
    # each close waits out its timeout for the unanswered close frame; together, once
    assert CLOSE_TIMEOUT * 0.9 <= took < 2.5 * CLOSE_TIMEOUT, took


async def test_async_close_all_closes_every_client_at_once(
        never_answers_the_close: str) -> None:
    clients = [AsyncTranscriptionClient(never_answers_the_close) for _ in range(CLIENTS)]
    try:
        for client in clients:
            await client.connect()
        started = time.monotonic()
        await AsyncTranscriptionClient.close_all(CLOSE_TIMEOUT)
        took = time.monotonic() - started
    finally:
        for client in clients:
            await client.close()
    assert all(c.state is ConnectionState.DISCONNECTED for c in clients)
    assert not [c for c in clients if c in AsyncTranscriptionClient.active_instances()]
    assert CLOSE_TIMEOUT * 0.9 <= took < 2.5 * CLOSE_TIMEOUT, took
