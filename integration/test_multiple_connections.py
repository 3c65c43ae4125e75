"""The six multiple-connection tests of seed 001, made real: the real server,
real sockets, and teardowns that close everything in parallel without hanging."""

from __future__ import annotations

import asyncio
import itertools
import threading

import pytest

from earshot.client import (
    AsyncTranscriptionClient,
    ClientClosed,
    ConnectionState,
    TranscriptionClient,
)
from earshot.testing.waiting import eventually_async, wait_for_sessions_async

S = ConnectionState
SHORT = 32000  # 2 s of audio


def server_sessions(status: dict) -> dict[str, str]:
    """uid -> server session id, from /status."""
    return {s["uid"]: s["session_id"] for s in status["sessions"]}


@pytest.mark.extension("status", "session_id")
async def test_client_and_session_ids(idle_server, client_factory, jfk) -> None:
    """client_id stays; each connection is a new session, with a new id on both sides,
    and the server lists it under the uid the client sent."""
    client = client_factory()
    sessions = []
    for _ in range(3):
        await client.connect()
        status = await wait_for_sessions_async(idle_server, 1, uids={client.session_id})
        assert server_sessions(status)[client.session_id] == client.server_session_id
        sessions.append((client.session_id, client.server_session_id))
        await client.stream(jfk[:8000], realtime=False)
        await client.finish()
    client_id = client.client_id
    assert len({ours for ours, _ in sessions}) == 3, sessions
    assert len({theirs for _, theirs in sessions}) == 3, sessions
    assert client.client_id == client_id


@pytest.mark.extension("status")
async def test_instance_tracking(idle_server, client_factory) -> None:
    """The registry lists every client made and not closed, connected or not."""
    clients = [client_factory() for _ in range(3)]
    await asyncio.gather(*(c.connect() for c in clients[:2]))
    active = set(AsyncTranscriptionClient.active_instances())
    assert set(clients) <= active
    await clients[0].close()
    active = set(AsyncTranscriptionClient.active_instances())
    assert clients[0] not in active and {clients[1], clients[2]} <= active
    assert clients[0].state is S.DISCONNECTED and clients[1].state is S.READY
    await wait_for_sessions_async(idle_server, 1, uids={c.session_id for c in clients[:2]})


@pytest.mark.extension("status")
async def test_cleanup_all_instances(idle_server, client_factory, jfk) -> None:
    """close_all() ends five streaming clients at once; the server frees their sessions."""
    clients = [client_factory() for _ in range(5)]
    await asyncio.gather(*(c.connect() for c in clients))
    uids = {c.session_id for c in clients}
    streams = [asyncio.create_task(c.stream(jfk, realtime=True)) for c in clients]
    await wait_for_sessions_async(idle_server, 5, uids=uids)
    await asyncio.wait_for(AsyncTranscriptionClient.close_all(timeout=5), 10)
    assert all(c.state is S.DISCONNECTED for c in clients)
    assert not set(clients) & set(AsyncTranscriptionClient.active_instances())
    results = await asyncio.gather(*streams, return_exceptions=True)
    assert all(isinstance(r, ClientClosed) for r in results), results  # not ConnectionLost
    await wait_for_sessions_async(idle_server, 0, uids=uids)


@pytest.mark.extension("session_id")
async def test_connection_throttling(idle_server, client_factory) -> None:
    """Attempts of one client are at least min_connect_interval apart, each a session."""
    client = client_factory(min_connect_interval=0.3)
    server_ids = []
    for _ in range(3):
        await client.connect()
        server_ids.append(client.server_session_id)
        await client.disconnect()
    starts = [t.at for t in client.history if t.new is S.CONNECTING]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    # Slots are booked 0.3 s apart; a transition is stamped a few microseconds
    # after its slot begins, hence the 2 ms allowance (a missing throttle gives ~0).
    assert len(starts) == 3 and all(gap >= 0.3 - 0.002 for gap in gaps), gaps
    assert len(set(server_ids)) == 3


@pytest.mark.extension("end_of_transcript")
def test_parallel_connections(idle_server, sync_client_factory, jfk) -> None:
    """Five synchronous clients stream at once; closing them all in parallel is
    bounded, leaves no thread and no server session (seed 001's teardown hang)."""
    before = set(threading.enumerate())
    clients = [sync_client_factory() for _ in range(5)]
    for client in clients:
        client.connect()
        client.send_audio(jfk[:SHORT])
    assert set(clients) <= set(TranscriptionClient.active_instances())
    assert TranscriptionClient.close_all(timeout=5) == []
    assert all(c.state is S.DISCONNECTED and not c.thread.is_alive() for c in clients)
    assert all(c.loop.is_closed() for c in clients)
    assert set(threading.enumerate()) <= before


@pytest.mark.extension("status", "session_id")
async def test_reconnection_with_new_session(idle_server, client_factory, jfk) -> None:
    """Reconnecting at once: the server frees the old session, the new one has a new
    id on both sides, and the old id is never reused."""
    client = client_factory()
    await client.connect()
    await client.send_audio(jfk[:SHORT])
    old = (client.session_id, client.server_session_id)
    await client.disconnect()
    await client.connect()
    new = (client.session_id, client.server_session_id)
    assert new[0] != old[0] and new[1] != old[1]
    status = await eventually_async(
        lambda: asyncio.to_thread(idle_server.server_status),
        lambda s: old[0] not in server_sessions(s) and new[0] in server_sessions(s),
        description=f"old session {old[0][:12]} gone and new {new[0][:12]} listed",
    )
    assert server_sessions(status)[new[0]] == new[1]
