"""The client's states against the real server, and the server freeing every session.

Every transition of the client's table is walked over a real socket; close()
ends DISCONNECTED from each state (seed 000: a cleanup that returned early
when its socket was None left clients half-open, and no test noticed). The
server's side is observed through /status, by the uid each session sent.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading

import numpy as np
import pytest
from websockets.asyncio.client import connect

from earshot import audio, protocol
from earshot.client import (
    AsyncTranscriptionClient,
    ClientClosed,
    ConnectionLost,
    ConnectionState,
    ServerRejected,
)
from earshot.client.ids import PROCESS_PREFIX
from earshot.testing import wire
from earshot.testing.proxy import Timeout
from earshot.testing.waiting import (
    eventually,
    eventually_async,
    wait_for_sessions,
    wait_for_sessions_async,
    wait_for_state,
)
from earshot.testing.wer import wer

S = ConnectionState
SHORT = 32000  # 2 s of audio
HOLD = Timeout(0)  # the proxy holds every byte of that direction, forever


@pytest.mark.extension("end_of_transcript", "session_id")
async def test_a_full_session_walks_the_designed_states(idle_server, client_factory, jfk) -> None:
    seen = []
    client = client_factory(on_state=seen.append)
    await client.connect()
    assert client.state is S.READY and client.server_session_id
    await client.stream(jfk[:SHORT], realtime=False)
    segments = await client.finish()
    assert segments and client.state is S.DISCONNECTED
    path = [(t.old, t.new) for t in seen]
    assert path[:3] == [(S.DISCONNECTED, S.CONNECTING), (S.CONNECTING, S.CONNECTED),
                        (S.CONNECTED, S.READY)], path
    # The server closes with 1000 after END_OF_TRANSCRIPT; if the client's own
    # teardown gets there first, it passes through CLOSING.
    assert path[3:] in ([(S.READY, S.DISCONNECTED)],
                        [(S.READY, S.CLOSING), (S.CLOSING, S.DISCONNECTED)]), path
    assert [t.at for t in seen] == sorted(t.at for t in seen)
    assert client.history == seen


@pytest.mark.extension("session_id")
async def test_handshake_gives_server_ready_with_a_session_id(idle_server) -> None:
    async with connect(idle_server.ws_url, additional_headers=idle_server.auth_headers()) as ws:
        await ws.send(json.dumps(wire.config(uid=wire.uid("hello"))))
        ready = protocol.parse_server_message(await ws.recv())
    assert ready.kind == "ready"
    assert ready.data["uid"] == wire.uid("hello")
    assert ready.data["backend"] == "faster_whisper"
    assert len(ready.data["session_id"]) == 32


@pytest.mark.extension("session_id")
async def test_session_ids_are_unique_per_connection(idle_server) -> None:
    async def session_id() -> str:
        async with connect(idle_server.ws_url,
                           additional_headers=idle_server.auth_headers()) as ws:
            await ws.send(json.dumps(wire.config(uid=wire.uid("same"))))
            return protocol.parse_server_message(await ws.recv()).data["session_id"]

    ids = await asyncio.gather(*(session_id() for _ in range(8)))
    assert len(set(ids)) == 8


# -- close() from every state ------------------------------------------------------------


async def _hold_in_connecting(client: AsyncTranscriptionClient, proxy) -> asyncio.Task:
    """The upgrade request never reaches the server: the client stays CONNECTING."""
    proxy.add(HOLD, "upstream")
    connecting = asyncio.create_task(client.connect())
    await client.wait_for_state(S.CONNECTING, timeout=5)
    return connecting


async def _hold_in_connected(client: AsyncTranscriptionClient, proxy) -> asyncio.Task:
    """SERVER_READY is held back: the socket is open, the session never ready."""
    def hold_replies(transition) -> None:
        if transition.new is S.CONNECTED:  # before the config is even sent
            proxy.add(HOLD, "downstream")

    client.add_state_listener(hold_replies)
    connecting = asyncio.create_task(client.connect())
    await client.wait_for_state(S.CONNECTED, timeout=5)
    return connecting


@pytest.mark.parametrize("state", ["never connected", "connecting", "connected", "ready",
                                   "streaming", "closing", "lost", "closed"])
@pytest.mark.extension("status")
async def test_close_from_each_state_ends_disconnected(idle_server, proxy, client_factory,
                                                       jfk, state) -> None:
    client = client_factory(f"ws://127.0.0.1:{proxy.port}", open_timeout=30)
    pending: asyncio.Task | None = None
    if state == "connecting":
        pending = await _hold_in_connecting(client, proxy)
    elif state == "connected":
        pending = await _hold_in_connected(client, proxy)
    elif state != "never connected":
        await client.connect()
    if state == "streaming":
        pending = asyncio.create_task(client.stream(jfk, realtime=True))
        await eventually_async(lambda: client.partial or client.transcript.completed,
                               description="text from the stream", timeout=15)
    elif state == "lost":
        await asyncio.to_thread(proxy.down)
        await client.wait_for_state(S.DISCONNECTED, timeout=5)
    elif state == "closed":
        await client.close()
    uid = client.session_id
    if state == "closing":  # a second close() lands while the first is CLOSING
        seconds: list[asyncio.Task] = []
        client.add_state_listener(lambda t: t.new is S.CLOSING and seconds.append(
            asyncio.ensure_future(client.close())))
        await asyncio.wait_for(client.close(), 10)
        await asyncio.wait_for(asyncio.gather(*seconds), 10)
        assert len(seconds) == 1
    else:
        await asyncio.wait_for(client.close(), 10)
    assert client.state is S.DISCONNECTED
    assert client not in AsyncTranscriptionClient.active_instances()
    if pending is not None:
        with pytest.raises(ClientClosed):  # the documented error, never a CancelledError
            await pending
    if uid is not None and state != "lost":
        await wait_for_sessions_async(idle_server, 0, uids={uid})


@pytest.mark.extension("status")
async def test_close_from_inside_a_callback(idle_server, client_factory, jfk) -> None:
    async def close_on_first_text(client: AsyncTranscriptionClient) -> None:
        await client.close()

    client = client_factory(on_segments=close_on_first_text)
    await client.connect()
    with pytest.raises(ClientClosed):  # the owner ended it: not a lost connection
        await client.stream(jfk, realtime=True)
    # The stream fails as soon as the close begins; the close itself, running
    # in the callback, lands within its own bound.
    await client.wait_for_state(S.DISCONNECTED, timeout=client.close_timeout + 1)
    await client.close()  # again, from outside: nothing left to do
    assert client.state is S.DISCONNECTED
    await wait_for_sessions_async(idle_server, 0, uids={client.session_id})


# -- the server frees what the client leaves -----------------------------------------------


@pytest.mark.extension("status", "session_id")
async def test_server_frees_the_session_after_a_client_close(idle_server, client_factory,
                                                             jfk) -> None:
    client = client_factory()
    await client.connect()
    await client.send_audio(jfk[:SHORT])
    status = await wait_for_sessions_async(idle_server, 1, uids={client.session_id})
    [session] = [s for s in status["sessions"] if s["uid"] == client.session_id]
    assert session["session_id"] == client.server_session_id
    await client.close()
    await wait_for_sessions_async(idle_server, 0, uids={client.session_id})


CRASHING_CLIENT = """
import asyncio, sys
from earshot import audio
from earshot.client import AsyncTranscriptionClient, core

core.PROCESS_PREFIX = sys.argv[3]  # its session counts as the test run's own

async def main():
    client = AsyncTranscriptionClient(sys.argv[1], api_key=sys.argv[2] or None)
    await client.connect()
    print(client.session_id, flush=True)
    await client.stream(audio.load_clip("jfk.flac"), realtime=True)

asyncio.run(main())
"""


@pytest.mark.extension("status")
async def test_server_frees_the_session_after_a_client_crash(idle_server) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHING_CLIENT, idle_server.ws_url, idle_server.api_key or "",
        PROCESS_PREFIX,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        uid = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
        assert uid, "the client process printed no session id"
        await wait_for_sessions_async(idle_server, 1, uids={uid})
        process.kill()  # no close frame, no goodbye: the process is just gone
    finally:
        if process.returncode is None:
            process.kill()
        await asyncio.wait_for(process.wait(), 10)
    await wait_for_sessions_async(idle_server, 0, uids={uid}, timeout=5)


@pytest.mark.extension("status")
async def test_server_frees_the_session_after_a_network_cut(idle_server, proxy,
                                                            client_factory, jfk) -> None:
    client = client_factory(f"ws://127.0.0.1:{proxy.port}")
    await client.connect()
    streaming = asyncio.create_task(client.stream(jfk, realtime=True))
    await wait_for_sessions_async(idle_server, 1, uids={client.session_id})
    await asyncio.to_thread(proxy.down)
    await wait_for_sessions_async(idle_server, 0, uids={client.session_id}, timeout=5)
    with pytest.raises(ConnectionLost):
        await asyncio.wait_for(streaming, 10)
    assert client.state is S.DISCONNECTED


@pytest.mark.extension("status", "session_id")
async def test_status_lists_a_streaming_session_then_drops_it(idle_server, jfk) -> None:
    async with connect(idle_server.ws_url, additional_headers=idle_server.auth_headers()) as ws:
        await ws.send(json.dumps(wire.config(uid=wire.uid("watched"))))
        session_id = protocol.parse_server_message(await ws.recv()).data["session_id"]
        await ws.send(protocol.encode_audio(jfk[:SHORT]))
        status = await eventually_async(
            lambda: asyncio.to_thread(idle_server.server_status),
            lambda s: any(x["audio_seconds"] >= 2.0 for x in s["sessions"]),
            description="the session's 2 s of audio in /status",
        )
    [session] = [s for s in status["sessions"] if s["uid"] == wire.uid("watched")]
    assert session["session_id"] == session_id
    assert session["age_seconds"] > 0 and session["backlog_seconds"] >= 0
    assert status["capacity"]["active"] >= 1
    await wait_for_sessions_async(idle_server, 0, uids={wire.uid("watched")})


# -- what the server says, typed ---------------------------------------------------------------


@pytest.mark.extension("close_codes")
async def test_error_is_a_typed_error_with_the_servers_text(server, client_factory) -> None:
    client = client_factory(language="xx")
    with pytest.raises(ServerRejected) as caught:
        await client.connect()
    assert "only 'en', not 'xx'" in caught.value.message
    assert caught.value.close_code == 1008
    assert client.state is S.DISCONNECTED


@pytest.mark.extension("close_codes")
async def test_error_mid_stream_surfaces_on_the_next_call(idle_server, client_factory) -> None:
    client = client_factory()
    await client.connect()
    await client.send_audio(np.array([0.0, np.nan], dtype=np.float32))
    await client.wait_for_state(S.DISCONNECTED, timeout=5)
    with pytest.raises(ServerRejected, match="NaN"):
        await client.send_audio(np.zeros(160, dtype=np.float32))


# -- HTTP and logs ---------------------------------------------------------------------------------


@pytest.mark.extension("readyz", "status", "metrics")
def test_http_endpoints(server, device) -> None:
    assert server.get("/healthz") == (200, b"ok\n")
    assert server.get("/readyz") == (200, b"ready\n")
    status = server.server_status()
    assert {"version", "model", "device", "compute_type", "capacity", "sessions"} <= set(status)
    assert status["capacity"]["max_clients"] >= 1 and status["model"]
    if device is not None:
        assert status["device"] == device
        assert status["compute_type"] == ("float16" if device == "cuda" else "int8")
    code, body = server.get("/metrics")
    assert code == 200 and b"earshot_sessions_active" in body
    code, body = server.get("/nope")
    assert code == 404 and b"/status" in body


@pytest.mark.extension("session_id")
async def test_one_log_line_per_connection_event_with_ids(idle_server, pytestconfig,
                                                          jfk) -> None:
    if pytestconfig.getoption("earshot_target") == "url":
        pytest.skip("a deployment's log is not readable from here")
    transcript = await wire.stream(idle_server.ws_url, jfk[:16000], speed=None,
                                   uid=wire.uid("logged"), headers=idle_server.auth_headers())
    sid = transcript.session_id
    lines = await asyncio.to_thread(
        eventually,
        lambda: [line for line in idle_server.log_text().splitlines() if sid in line],
        lambda found: len(found) >= 2,
        description="start and end log lines for the session",
    )
    assert "session started" in lines[0] and f"uid={wire.uid('logged')}" in lines[0]
    assert "session ended" in lines[-1] and "outcome=complete" in lines[-1]


# -- the synchronous client -------------------------------------------------------------------


@pytest.mark.extension("end_of_transcript")
def test_sync_client_transcribes_and_leaves_no_thread(idle_server, sync_client_factory,
                                                      manifest) -> None:
    before = set(threading.enumerate())
    client = sync_client_factory()
    with client:
        assert client.thread.is_alive() and client.thread.name.startswith("earshot-client-")
        client.stream_file(audio.clip_path("jfk.flac"), realtime=False)
        segments = client.finish()
    assert wer(manifest["jfk.flac"].reference, " ".join(s.text for s in segments)) <= 0.1
    assert client.state is S.DISCONNECTED and not client.thread.is_alive()
    assert client.loop.is_closed()
    assert set(threading.enumerate()) <= before


@pytest.mark.extension("status")
def test_sync_close_from_a_callback_ends_thread_and_loop(idle_server, sync_client_factory,
                                                         jfk) -> None:
    holder: list = []
    client = sync_client_factory(on_segments=lambda _: holder[0].close())
    holder.append(client)
    client.connect()
    client.send_audio(jfk[:SHORT])
    wait_for_state(client, S.DISCONNECTED)
    eventually(client.thread.is_alive, lambda alive: not alive,
               description="the client thread to end by itself")
    # Nobody calls close() again: the loop must be closed all the same.
    assert client.loop.is_closed()
    wait_for_sessions(idle_server, 0, uids={client.session_id})
