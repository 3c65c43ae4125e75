"""The streaming client against stand-ins: servers that hang, refuse, close at
once or misbehave on purpose, which the real one never does. Each stand-in is
named as such; the client against the real server is in integration/."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator

import numpy as np
import pytest
from websockets.asyncio.server import serve
from websockets.utils import accept_key

from earshot.client import (
    AsyncTranscriptionClient,
    ClientClosed,
    ConnectError,
    ConnectionLost,
    ConnectionState,
    ReconnectPolicy,
)
from earshot.testing.waiting import eventually_async

S = ConnectionState


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


async def test_close_before_connecting_is_idempotent() -> None:
    client = AsyncTranscriptionClient("ws://127.0.0.1:9")
    await client.close()
    await client.close()
    assert client.state is S.DISCONNECTED and client.history == []


async def test_close_while_connecting(silent_tcp) -> None:
    client = AsyncTranscriptionClient(silent_tcp, open_timeout=30)
    connecting = asyncio.create_task(client.connect())
    await client.wait_for_state(S.CONNECTING, timeout=5)
    await asyncio.wait_for(client.close(), 5)
    assert client.state is S.DISCONNECTED
    with pytest.raises(ClientClosed):  # what connect() documents, not a CancelledError
        await connecting


async def test_a_connect_cancelled_by_its_owner_is_cancelled(silent_tcp) -> None:
    """Only close()'s own cancellation becomes ClientClosed; anyone else's goes on."""
    client = AsyncTranscriptionClient(silent_tcp, open_timeout=30)
    connecting = asyncio.create_task(client.connect())
    await client.wait_for_state(S.CONNECTING, timeout=5)
    connecting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await connecting
    assert client.state is S.DISCONNECTED
    await client.close()


async def test_close_while_connected_before_ready(mute_server) -> None:
    client = AsyncTranscriptionClient(mute_server, open_timeout=30)
    connecting = asyncio.create_task(client.connect())
    await client.wait_for_state(S.CONNECTED, timeout=5)
    await asyncio.wait_for(client.close(), 5)
    assert client.state is S.DISCONNECTED
    with pytest.raises(ClientClosed):  # what connect() documents, not a CancelledError
        await connecting


async def test_no_server_ready_in_time_is_a_connect_error(mute_server) -> None:
    client = AsyncTranscriptionClient(mute_server, open_timeout=0.5)
    with pytest.raises(ConnectError, match=r"no SERVER_READY within 0\.5 s"):
        await client.connect()
    assert client.state is S.DISCONNECTED
    await client.close()


def hostile_replies(uid: str) -> list[str]:
    """What a hostile server may send mid-stream: each is counted, none is fatal."""
    def segments(*items: object) -> str:
        return json.dumps({"uid": uid, "segments": list(items)})

    return ["not json", "[1]", json.dumps({"uid": uid, "segments": 5}),
            segments({"start": "x"}),
            json.dumps({"uid": uid, "status": "WAIT", "message": "soon"}),
            json.dumps({"uid": "someone-else", "segments": []}),
            segments(5),  # a segment that is not an object
            segments({"start": 1e306, "end": 1e306, "text": "x", "completed": True}),
            segments({"start": 10 ** 400, "end": 1, "text": "x", "completed": True}),
            "[" * 100_000 + "]" * 100_000,  # nested past the parser's stack
            json.dumps({"uid": uid, "x": 0}).replace("0", "9" * 5000)]  # past the digit limit


async def test_malformed_server_messages_are_counted_not_fatal() -> None:
    """Stand-in server: the real one never sends garbage, so this one does."""
    async def handler(ws) -> None:
        uid = json.loads(await ws.recv())["uid"]
        await ws.send(json.dumps({"uid": uid, "message": "SERVER_READY", "backend": "x"}))
        for junk in hostile_replies(uid):
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
    assert client.malformed_messages == len(hostile_replies("u"))


# -- close() cuts every wait short ------------------------------------------------------


async def test_close_during_the_reconnect_backoff_stops_connect() -> None:
    """Nothing listens: connect() retries with a 30 s backoff; close() ends it at once,
    and the client never reaches READY afterwards."""
    with socket.socket() as unused:  # a port that refuses: bound, never listening
        unused.bind(("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{unused.getsockname()[1]}"
        client = AsyncTranscriptionClient(url, reconnect=ReconnectPolicy(
            attempts=10, deadline=120, initial=30, maximum=30, jitter=0))
        connecting = asyncio.create_task(client.connect())
        await eventually_async(lambda: [t for t in client.history if t.new is S.DISCONNECTED],
                               description="a refused first attempt")
        await asyncio.wait_for(client.close(), 5)
        with pytest.raises(ClientClosed):
            await asyncio.wait_for(connecting, 5)
    assert client.state is S.DISCONNECTED
    assert sum(t.new is S.CONNECTING for t in client.history) == 1


async def test_close_during_the_throttle_delay_stops_connect(mute_server) -> None:
    client = AsyncTranscriptionClient(mute_server, min_connect_interval=60, open_timeout=0.2)
    with pytest.raises(ConnectError):
        await client.connect()  # books the first slot; the stand-in never says READY
    connecting = asyncio.create_task(client.connect())  # waits 60 s for its slot
    await asyncio.wait_for(client.close(), 5)
    with pytest.raises(ClientClosed):
        await asyncio.wait_for(connecting, 5)
    assert client.state is S.DISCONNECTED
    assert sum(t.new is S.CONNECTING for t in client.history) == 1


# -- a connection closed while the config is sent ----------------------------------------


@pytest.fixture
async def closes_at_once() -> AsyncIterator[str]:
    """Stand-in: completes the upgrade and sends a close frame in the same write, so
    the connection is closed before the client can send its config."""
    writers = []

    async def upgrade_then_close(reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        request = await reader.readuntil(b"\r\n\r\n")
        key = re.search(rb"Sec-WebSocket-Key: *(\S+)", request, re.I).group(1).decode()
        accept = accept_key(key).encode()
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                     + bytes([0x88, 0x02, 0x03, 0xE8]))  # Close, code 1000
        await writer.drain()

    server = await asyncio.start_server(upgrade_then_close, "127.0.0.1", 0)
    try:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_connection_closed_while_the_config_is_sent_is_a_typed_error(
    closes_at_once,
) -> None:
    client = AsyncTranscriptionClient(closes_at_once)
    with pytest.raises(ConnectionLost):  # not websockets' ConnectionClosed
        await client.connect()
    assert client.state is S.DISCONNECTED
    await client.close()


# -- reconnection without resume -----------------------------------------------------------


@pytest.fixture
async def forgetful_server() -> AsyncIterator[str]:
    """Stand-in: each session confirms one segment at 0-1 s of its own audio; the
    first session then drops the connection, the second finishes normally."""
    sessions = []

    async def handler(ws) -> None:
        uid = json.loads(await ws.recv())["uid"]
        sessions.append(uid)
        await ws.send(json.dumps({"uid": uid, "message": "SERVER_READY", "backend": "x"}))
        await ws.recv()  # the first audio frame
        text = f"session {len(sessions)}"
        segment = {"start": "0.000", "end": "1.000", "text": text, "completed": True}
        await ws.send(json.dumps({"uid": uid, "segments": [segment]}))
        if len(sessions) == 1:
            await ws.close(1011, "gone")
            return
        while await ws.recv() != b"END_OF_AUDIO":
            pass
        await ws.send(json.dumps({"uid": uid, "message": "END_OF_TRANSCRIPT"}))
        await ws.close()

    async with serve(handler, "127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_a_new_session_without_resume_continues_the_timeline(forgetful_server) -> None:
    """Without resume, the new session's times start where the sent audio ended,
    so its segments land after the old ones instead of overwriting them."""
    client = AsyncTranscriptionClient(forgetful_server, resume=False, reconnect=ReconnectPolicy(
        attempts=5, initial=0.01, maximum=0.05))
    try:
        await client.connect()
        await client.send_audio(np.zeros(32000, dtype=np.float32))  # 2 s
        await client.wait_for_state(S.DISCONNECTED, timeout=5)
        await client.stream(np.zeros(16000, dtype=np.float32), realtime=False)  # 1 s more
        segments = await client.finish(timeout=5)
    finally:
        await client.close()
    assert [(s.start, s.text) for s in segments] == [(0.0, "session 1"), (2.0, "session 2")]


# -- a second loss during the replay ------------------------------------------------------


@pytest.fixture
async def twice_lost_server() -> AsyncIterator[tuple[str, list[int]]]:
    """Stand-in: the first session is lost (the connection dropped, no close
    handshake) after 5 audio frames; the second right after SERVER_READY, so the
    client loses it while it replays; the third counts every sample it gets until
    END_OF_AUDIO, then finishes. Nothing is ever completed, so all the audio stays
    unconfirmed. Yields the URL and the samples each session received.

    (A close handshake here would stall: a handler that stops reading leaves the
    client's close frame queued behind its audio until the close timeout.)"""
    received: list[int] = []

    async def handler(ws) -> None:
        uid = json.loads(await ws.recv())["uid"]
        session = len(received)
        received.append(0)
        await ws.send(json.dumps({"uid": uid, "message": "SERVER_READY", "backend": "x"}))
        if session == 1:
            ws.transport.abort()  # lost again, while the client replays
            return
        while (frame := await ws.recv()) != b"END_OF_AUDIO":
            received[session] += len(frame) // 4
            if session == 0 and received[session] >= 5 * 1600:
                ws.transport.abort()  # lost
                return
        await ws.send(json.dumps({"uid": uid, "message": "END_OF_TRANSCRIPT"}))
        await ws.close()

    async with serve(handler, "127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}", received


async def test_a_second_loss_during_the_replay_loses_no_audio(twice_lost_server) -> None:
    """The unconfirmed audio stays kept until a session confirms it: a session lost
    while the replay is under way is followed by one that gets all of it again."""
    url, received = twice_lost_server
    client = AsyncTranscriptionClient(url, reconnect=ReconnectPolicy(
        attempts=10, initial=0.01, maximum=0.05))
    speech = np.full(32000, 0.1, dtype=np.float32)  # 2 s: 20 frames of 0.1 s
    try:
        await client.connect()
        await client.stream(speech, realtime=False)
        await client.finish(timeout=10)
    finally:
        await client.close()
    assert len(received) == 3, received
    assert received[2] == len(speech), received


def test_the_wire_helper_records_each_hostile_reply_as_a_violation() -> None:
    """The validator probes foreign servers through earshot.testing.wire: a hostile
    reply is a recorded violation there, never an exception out of the probe."""
    from earshot.protocol import ClientConfig, ClientConnection
    from earshot.testing import wire

    connection = ClientConnection("u")
    connection.send_config(ClientConfig(uid="u"))
    exchange = wire.Exchange()
    wire.record(exchange, connection, json.dumps({"uid": "u", "message": "SERVER_READY"}))
    for junk in hostile_replies("u"):
        wire.record(exchange, connection, junk)
    assert [m.kind for _, m in exchange.messages] == ["ready"]
    assert len(exchange.violations) == len(hostile_replies("u"))


@pytest.mark.parametrize("said", [10 ** 400, "inf", -3, "soon", None])
def test_a_wait_without_a_sound_estimate_is_server_busy_with_zero_minutes(said) -> None:
    from earshot.client.errors import ServerBusy, ended_error
    from earshot.protocol import ClientConfig, ClientConnection

    connection = ClientConnection("u")
    connection.send_config(ClientConfig(uid="u"))
    connection.receive(json.dumps({"uid": "u", "status": "WAIT", "message": said}))
    error = ended_error(connection, 1013)
    assert isinstance(error, ServerBusy) and error.wait_minutes == 0.0


# -- the synchronous client's bounds ---------------------------------------------------------


def test_the_sync_connect_waits_out_the_reconnect_policy_and_no_longer() -> None:
    """Its bound covers the policy's deadline: it ends with the policy's own error
    (nothing listens), not with its own timeout while the core still retries; and
    it ends then, within the core's own bound, not the sync call's margin beyond it."""
    import time

    from earshot.client import TranscriptionClient

    policy = ReconnectPolicy(attempts=1000, deadline=6, initial=0.2, maximum=0.2, jitter=0)
    with socket.socket() as unused:  # bound, never listening: every attempt is refused
        unused.bind(("127.0.0.1", 0))
        client = TranscriptionClient(f"ws://127.0.0.1:{unused.getsockname()[1]}",
                                     open_timeout=0.1, reconnect=policy)
        try:
            started = time.monotonic()
            with pytest.raises(ConnectError):
                client.connect()
            took = time.monotonic() - started
            # The core's own bound (the deadline, a last backoff, one attempt), with 1 s
            # for a loaded machine: well short of the sync call's 5 s margin beyond it.
            assert policy.deadline <= took <= client._core.connect_timeout + 1.0
        finally:
            client.close()


@pytest.fixture
async def disconnecting_server() -> AsyncIterator[str]:
    """Stand-in: SERVER_READY, then DISCONNECT at the first audio frame, and its close
    (1001) a moment later, as a draining server sends them: the client's next send
    falls between the two."""
    async def handler(ws) -> None:
        uid = json.loads(await ws.recv())["uid"]
        await ws.send(json.dumps({"uid": uid, "message": "SERVER_READY", "backend": "x",
                                  "session_id": "s-1"}))
        await ws.recv()
        await ws.send(json.dumps({"uid": uid, "message": "DISCONNECT"}))
        await asyncio.sleep(0.5)  # pacing: the close follows the message
        await ws.close(1001, "server shutting down")

    async with serve(handler, "127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_a_send_between_disconnect_and_its_close_carries_the_close_code(
        disconnecting_server) -> None:
    """The error a DISCONNECT gives carries the close that follows it (1001), not None:
    the client waits for that close (within its close timeout) before raising."""
    client = AsyncTranscriptionClient(disconnecting_server, close_timeout=5)
    await client.connect()
    try:
        with pytest.raises(ConnectionLost) as caught:
            await client.send_audio(np.zeros(1600, dtype=np.float32))
            await eventually_async(lambda: client._link.protocol.refusal, timeout=5,
                                   description="the DISCONNECT")
            await client.send_audio(np.zeros(1600, dtype=np.float32))
        assert caught.value.close_code == 1001 and "DISCONNECT" in str(caught.value)
    finally:
        await client.close()


# -- pacing ------------------------------------------------------------------------------


@pytest.fixture
async def listening_server() -> AsyncIterator[tuple[str, list[int]]]:
    """Stand-in: SERVER_READY, then counts the audio frames it gets until the close."""
    frames: list[int] = []

    async def handler(ws) -> None:
        uid = json.loads(await ws.recv())["uid"]
        await ws.send(json.dumps({"uid": uid, "message": "SERVER_READY", "backend": "x"}))
        async for message in ws:
            if isinstance(message, bytes):
                frames.append(len(message))

    async with serve(handler, "127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}", frames


@pytest.mark.parametrize(("realtime", "speed", "paced_at"), [
    (True, 1.0, [1.0]), (True, 2.5, [2.5]), (False, 2.5, [])])
async def test_stream_paces_at_its_speed(listening_server, monkeypatch, realtime, speed,
                                         paced_at) -> None:
    """``speed`` reaches the pacing (and nothing paces a stream that is not real
    time); every chunk is sent either way."""
    from earshot import audio
    url, frames = listening_server
    seen: list[float] = []
    real_paced = audio.paced

    def paced(pieces, speed=1.0, clock=None):
        seen.append(speed)
        return real_paced(pieces, speed, clock=lambda: 0.0)  # every piece due at once

    monkeypatch.setattr("earshot.client.core.audio.paced", paced)
    async with AsyncTranscriptionClient(url) as client:
        await client.stream(np.zeros(16000, dtype=np.float32), realtime=realtime, speed=speed)
        await eventually_async(lambda: len(frames), lambda n: n == 10, timeout=5,
                               description="the ten 100 ms chunks at the stand-in")
    assert seen == paced_at


@pytest.mark.parametrize("speed", [0.0, -1.0, float("nan")])
async def test_a_speed_not_above_zero_is_refused_before_anything_is_sent(speed) -> None:
    client = AsyncTranscriptionClient("ws://127.0.0.1:9")
    with pytest.raises(ValueError, match="speed must be above 0"):
        await client.stream(np.zeros(1600, dtype=np.float32), speed=speed)
    assert client.state is S.DISCONNECTED
