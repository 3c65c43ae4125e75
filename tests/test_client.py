"""The streaming client against the real server (and two named stand-ins for
servers that hang, which the real one never does on purpose)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest
from websockets.asyncio.server import serve

from earshot import audio
from earshot.client import (
    AsyncTranscriptionClient,
    ConnectError,
    ConnectionLost,
    ConnectionState,
    ReconnectPolicy,
    ServerBusy,
    ServerRejected,
    TranscriptionClient,
)
from earshot.testing.local import LocalServer
from earshot.testing.waiting import eventually, eventually_async, wait_for_sessions
from earshot.testing.wer import wer

S = ConnectionState
SHORT = 32000  # 2 s of audio


# -- stand-ins for servers that hang ---------------------------------------------


@pytest.fixture
async def silent_tcp() -> AsyncIterator[str]:
    """Stand-in: accepts TCP and never answers the WebSocket handshake."""
    writers = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.fixture
async def mute_server() -> AsyncIterator[str]:
    """Stand-in: completes the handshake, then never sends SERVER_READY."""
    async def handler(ws) -> None:
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


# -- states and ids -------------------------------------------------------------


async def test_a_full_session_walks_the_designed_states(idle_server, jfk) -> None:
    seen = []
    client = AsyncTranscriptionClient(idle_server.ws_url, on_state=lambda t: seen.append(t))
    async with client:
        assert client.state is S.READY and client.server_session_id
        await client.stream(jfk[:SHORT], realtime=False)
        segments = await client.finish()
    assert segments and client.state is S.DISCONNECTED
    path = [(t.old, t.new) for t in seen]
    assert path[:3] == [(S.DISCONNECTED, S.CONNECTING), (S.CONNECTING, S.CONNECTED),
                        (S.CONNECTED, S.READY)]
    assert path[-1][1] is S.DISCONNECTED
    assert [t.at for t in seen] == sorted(t.at for t in seen)
    assert client.history == seen


async def test_client_id_is_stable_and_each_session_new(idle_server, jfk) -> None:
    client = AsyncTranscriptionClient(idle_server.ws_url)
    try:
        sessions = []
        for _ in range(3):
            await client.connect()
            sessions.append((client.session_id, client.server_session_id))
            await client.stream(jfk[:8000], realtime=False)
            await client.finish()
        client_id = client.client_id
    finally:
        await client.close()
    assert client.client_id == client_id
    assert len({s for s, _ in sessions}) == 3 and len({s for _, s in sessions}) == 3


# -- closing from every state ---------------------------------------------------


async def test_close_before_connecting_is_idempotent(server) -> None:
    client = AsyncTranscriptionClient(server.ws_url)
    await client.close()
    await client.close()
    assert client.state is S.DISCONNECTED and client.history == []


async def test_close_while_connecting(silent_tcp) -> None:
    client = AsyncTranscriptionClient(silent_tcp, open_timeout=30)
    connecting = asyncio.create_task(client.connect())
    await client.wait_for_state(S.CONNECTING, timeout=5)
    await asyncio.wait_for(client.close(), 5)
    assert client.state is S.DISCONNECTED
    with pytest.raises((asyncio.CancelledError, ConnectError)):
        await connecting


async def test_close_while_connected_before_ready(mute_server) -> None:
    client = AsyncTranscriptionClient(mute_server, open_timeout=30)
    connecting = asyncio.create_task(client.connect())
    await client.wait_for_state(S.CONNECTED, timeout=5)
    await asyncio.wait_for(client.close(), 5)
    assert client.state is S.DISCONNECTED
    with pytest.raises((asyncio.CancelledError, ConnectError)):
        await connecting


async def test_no_server_ready_in_time_is_a_connect_error(mute_server) -> None:
    client = AsyncTranscriptionClient(mute_server, open_timeout=0.5)
    with pytest.raises(ConnectError, match=r"no SERVER_READY within 0\.5 s"):
        await client.connect()
    assert client.state is S.DISCONNECTED
    await client.close()


async def test_close_mid_stream(idle_server, jfk) -> None:
    client = AsyncTranscriptionClient(idle_server.ws_url)
    await client.connect()
    streaming = asyncio.create_task(client.stream(jfk, realtime=True))
    await eventually_async(lambda: client.partial, description="a partial segment",
                           timeout=10)
    await client.close()
    assert client.state is S.DISCONNECTED
    with pytest.raises(ConnectionLost):
        await streaming
    wait_for_sessions(idle_server, 0)


async def test_close_from_inside_a_callback(idle_server, jfk) -> None:
    async def close_on_first_text(client: AsyncTranscriptionClient) -> None:
        await client.close()

    client = AsyncTranscriptionClient(idle_server.ws_url, on_segments=close_on_first_text)
    await client.connect()
    with pytest.raises(ConnectionLost):
        await client.stream(jfk, realtime=True)
    assert client.state is S.DISCONNECTED
    await client.close()  # again, from outside: nothing left to do
    assert client.state is S.DISCONNECTED


async def test_server_that_vanishes_leaves_the_client_disconnected(jfk) -> None:
    srv = LocalServer().start()
    client = AsyncTranscriptionClient(srv.ws_url)
    try:
        await client.connect()
        await client.send_audio(jfk[:SHORT])
        await asyncio.to_thread(srv.kill)
        await client.wait_for_state(S.DISCONNECTED, timeout=5)
        with pytest.raises(ConnectionLost):
            await client.send_audio(jfk[:1600])
    finally:
        await client.close()
        srv.stop()
    assert client.state is S.DISCONNECTED


# -- registry ------------------------------------------------------------------


async def test_close_all_closes_five_parallel_clients(idle_server, jfk) -> None:
    clients = [AsyncTranscriptionClient(idle_server.ws_url) for _ in range(5)]
    await asyncio.gather(*(c.connect() for c in clients))
    streams = [asyncio.create_task(c.stream(jfk, realtime=True)) for c in clients]
    assert set(clients) <= set(AsyncTranscriptionClient.active_instances())
    await asyncio.wait_for(AsyncTranscriptionClient.close_all(timeout=5), 10)
    assert all(c.state is S.DISCONNECTED for c in clients)
    assert not set(clients) & set(AsyncTranscriptionClient.active_instances())
    results = await asyncio.gather(*streams, return_exceptions=True)
    assert all(isinstance(r, ConnectionLost) for r in results)


def test_sync_close_all_with_five_parallel_clients_leaves_no_thread(idle_server, jfk) -> None:
    before = set(threading.enumerate())
    clients = [TranscriptionClient(idle_server.ws_url) for _ in range(5)]
    for client in clients:
        client.connect()
        client.send_audio(jfk[:SHORT])
    assert set(clients) <= set(TranscriptionClient.active_instances())
    assert TranscriptionClient.close_all(timeout=5) == []
    assert all(c.state is S.DISCONNECTED and not c.thread.is_alive() for c in clients)
    assert set(threading.enumerate()) <= before
    wait_for_sessions(idle_server, 0)


def test_sync_client_transcribes_and_leaves_no_thread(idle_server, manifest) -> None:
    before = set(threading.enumerate())
    with TranscriptionClient(idle_server.ws_url) as client:
        assert client.thread.is_alive() and client.thread.name.startswith("earshot-client-")
        client.stream_file(audio.clip_path("jfk.flac"), realtime=False)
        segments = client.finish()
    assert wer(manifest["jfk.flac"].reference, " ".join(s.text for s in segments)) <= 0.1
    assert client.state is S.DISCONNECTED and not client.thread.is_alive()
    assert set(threading.enumerate()) <= before


def test_sync_close_from_a_callback(idle_server, jfk) -> None:
    holder: list[TranscriptionClient] = []
    client = TranscriptionClient(idle_server.ws_url, on_segments=lambda _: holder[0].close())
    holder.append(client)
    try:
        client.connect()
        client.send_audio(jfk[:SHORT])
        eventually(lambda: client.state, lambda s: s is S.DISCONNECTED,
                   description="the callback's close to land")
        eventually(client.thread.is_alive, lambda alive: not alive,
                   description="the client thread to end by itself")
    finally:
        client.close()


# -- throttling and reconnection -------------------------------------------------


async def test_connection_attempts_are_throttled(idle_server) -> None:
    client = AsyncTranscriptionClient(idle_server.ws_url, min_connect_interval=0.3)
    try:
        for _ in range(2):
            await client.connect()
            await client._teardown("next attempt")
    finally:
        await client.close()
    starts = [t.at for t in client.history if t.new is S.CONNECTING]
    assert starts[1] - starts[0] >= 0.3


async def test_reconnects_after_the_server_is_killed_and_restarted(manifest, jfk) -> None:
    srv = LocalServer().start()
    client = AsyncTranscriptionClient(
        srv.ws_url, reconnect=ReconnectPolicy(attempts=40, deadline=30, initial=0.1, maximum=0.5)
    )
    try:
        await client.connect()
        first_session = client.session_id
        streaming = asyncio.create_task(client.stream(jfk, realtime=True))
        await eventually_async(lambda: client.transcript.completed, timeout=15,
                               description="a completed segment before the kill")
        await asyncio.to_thread(srv.kill)
        await asyncio.to_thread(srv.start)  # same port
        await asyncio.wait_for(streaming, 60)
        segments = await client.finish()
    finally:
        await client.close()
        srv.stop()
    sessions = {r.session_id for r in client.transcript.received}
    assert client.session_id != first_session and first_session in sessions
    assert len(sessions) == 2
    text = " ".join(s.text for s in segments)
    assert wer(manifest["jfk.flac"].reference, text) <= 0.25, text
    assert "country" in text.split()[-1].lower()


# -- WAIT and ERROR ----------------------------------------------------------------


@pytest.fixture(scope="module")
def one_slot() -> Iterator[LocalServer]:
    with LocalServer("--max-clients", "1") as srv:
        yield srv


async def test_wait_is_a_typed_error_with_the_wait_time(one_slot) -> None:
    first = AsyncTranscriptionClient(one_slot.ws_url)
    second = AsyncTranscriptionClient(one_slot.ws_url)
    try:
        await first.connect()
        with pytest.raises(ServerBusy) as caught:
            await second.connect()
        assert caught.value.wait_minutes > 0
        assert second.state is S.DISCONNECTED
    finally:
        await first.close()
        await second.close()


async def test_wait_is_retried_per_policy_until_a_slot_frees(one_slot) -> None:
    first = AsyncTranscriptionClient(one_slot.ws_url)
    second = AsyncTranscriptionClient(
        one_slot.ws_url, reconnect=ReconnectPolicy(attempts=50, deadline=20, maximum=0.3)
    )
    try:
        await first.connect()
        connecting = asyncio.create_task(second.connect())
        await eventually_async(
            lambda: sum(t.new is S.CONNECTING for t in second.history),
            lambda n: n >= 2, description="a refused attempt and a retry",
        )
        await first.close()
        await asyncio.wait_for(connecting, 25)
        assert second.state is S.READY
    finally:
        await first.close()
        await second.close()


async def test_error_is_a_typed_error_with_the_servers_text(server) -> None:
    client = AsyncTranscriptionClient(server.ws_url, language="xx")
    with pytest.raises(ServerRejected) as caught:
        await client.connect()
    assert "only 'en', not 'xx'" in caught.value.message
    assert caught.value.close_code == 1008
    assert client.state is S.DISCONNECTED
    await client.close()


async def test_error_mid_stream_surfaces_on_the_next_call(idle_server) -> None:
    async with AsyncTranscriptionClient(idle_server.ws_url) as client:
        await client.send_audio(np.array([0.0, np.nan], dtype=np.float32))
        await client.wait_for_state(S.DISCONNECTED, timeout=5)
        with pytest.raises(ServerRejected, match="NaN"):
            await client.send_audio(np.zeros(160, dtype=np.float32))


async def test_malformed_server_messages_are_counted_not_fatal() -> None:
    """Stand-in server: the real one never sends garbage, so this one does."""
    async def handler(ws) -> None:
        uid = json.loads(await ws.recv())["uid"]
        await ws.send(json.dumps({"uid": uid, "message": "SERVER_READY", "backend": "x"}))
        for junk in ["not json", "[1]", json.dumps({"uid": uid, "segments": 5}),
                     json.dumps({"uid": uid, "segments": [{"start": "x"}]}),
                     json.dumps({"uid": uid, "status": "WAIT", "message": "soon"}),
                     json.dumps({"uid": "someone-else", "segments": []})]:
            await ws.send(junk)
        await ws.recv()  # END_OF_AUDIO
        segment = {"start": "0.000", "end": "1.000", "text": "hi", "completed": True}
        await ws.send(json.dumps({"uid": uid, "segments": [segment]}))
        await ws.send(json.dumps({"uid": uid, "message": "END_OF_TRANSCRIPT"}))
        await ws.close()

    async with serve(handler, "127.0.0.1", 0) as fake:
        url = f"ws://127.0.0.1:{fake.sockets[0].getsockname()[1]}"
        async with AsyncTranscriptionClient(url) as client:
            segments = await client.finish(timeout=5)
    assert [s.text for s in segments] == ["hi"]
    assert client.malformed_messages == 6


# -- command line ---------------------------------------------------------------------


def test_cli_prints_the_transcript(server, manifest) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "earshot.client.cli", "transcribe",
         str(audio.clip_path("jfk.flac")), "--url", server.ws_url],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert wer(manifest["jfk.flac"].reference, result.stdout) <= 0.1


def test_cli_fails_with_one_line(server) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "earshot.client.cli", "transcribe", "/no/such.wav",
         "--url", server.ws_url], capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("earshot: ")
