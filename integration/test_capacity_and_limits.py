"""Capacity (WAIT), max_connection_time (DISCONNECT), the API key and the keepalive.

Each test starts a server of its own with the settings it is about
(``server_factory``), on whatever target the suite runs: the container by
default, or a local process.
"""

from __future__ import annotations

import asyncio
import json
import socket
from contextlib import closing

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response
from websockets.uri import parse_uri

from earshot import protocol
from earshot.client import ConnectionState, ReconnectPolicy, ServerBusy
from earshot.protocol import CloseCode
from earshot.testing import wire
from earshot.testing.waiting import (
    eventually_async,
    wait_for_sessions,
    wait_for_sessions_async,
)

S = ConnectionState
KEY = "s3cret-key"
SESSION_SECONDS = 3


@pytest.fixture
def small_server(server_factory):
    """One slot and sessions of at most 3 s."""
    return server_factory(max_clients=1, max_connection_time=SESSION_SECONDS)


@pytest.fixture
def keyed_server(server_factory):
    return server_factory(api_key=KEY)


# -- capacity --------------------------------------------------------------------------


@pytest.mark.extension("close_codes")
async def test_full_server_answers_wait_and_closes_1013(small_server) -> None:
    headers = small_server.auth_headers()
    async with connect(small_server.ws_url, additional_headers=headers) as first:
        await first.send(json.dumps(wire.config(uid=wire.uid("first"))))
        assert protocol.parse_server_message(await first.recv()).kind == "ready"
        async with connect(small_server.ws_url, additional_headers=headers) as second:
            await second.send(json.dumps(wire.config(uid=wire.uid("second"))))
            reply = protocol.parse_server_message(await second.recv())
            await second.wait_closed()
        assert reply.kind == "wait" and reply.data["uid"] == wire.uid("second")
        # The only slot frees when the first session's 3 s are up.
        assert 0 < reply.data["message"] <= SESSION_SECONDS / 60
        assert second.close_code == CloseCode.TRY_AGAIN_LATER
    await wait_for_sessions_async(small_server, 0)


async def test_wait_is_a_typed_error_with_the_wait_time(small_server, client_factory) -> None:
    first = client_factory(server=small_server)
    second = client_factory(server=small_server)
    await first.connect()
    with pytest.raises(ServerBusy) as caught:
        await second.connect()
    assert caught.value.wait_minutes > 0
    assert second.state is S.DISCONNECTED and first.state is S.READY


@pytest.mark.extension("status", "session_id")
async def test_waiting_client_is_admitted_once_a_slot_frees(small_server, client_factory) -> None:
    first = client_factory(server=small_server)
    second = client_factory(server=small_server, reconnect=ReconnectPolicy(
        attempts=100, deadline=20, initial=0.05, maximum=0.3))
    await first.connect()
    connecting = asyncio.create_task(second.connect())
    await eventually_async(lambda: sum(t.new is S.CONNECTING for t in second.history),
                           lambda n: n >= 2, description="a refused attempt and a retry")
    assert second.state is not S.READY
    await first.close()
    await asyncio.wait_for(connecting, 25)
    assert second.state is S.READY
    status = await wait_for_sessions_async(small_server, 1)
    assert status["sessions"][0]["uid"] == second.session_id


@pytest.mark.extension("close_codes")
async def test_max_connection_time_disconnects_with_1001(small_server, jfk) -> None:
    transcript = await wire.stream(small_server.ws_url, jfk, speed=1.0, uid=wire.uid("long"),
                                   headers=small_server.auth_headers())
    assert [m.kind for _, m in transcript.messages][-1] == "disconnect"
    assert transcript.close_code == CloseCode.GOING_AWAY
    elapsed = transcript.messages[-1][0] - transcript.messages[0][0]
    # The server's timer, seen from here: bounded below by the limit, above by
    # the limit plus a loaded machine's scheduling (not by a tight margin).
    assert SESSION_SECONDS - 0.5 < elapsed < SESSION_SECONDS + 3
    await wait_for_sessions_async(small_server, 0)


# -- the API key -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["bearer", "token"])
@pytest.mark.extension("end_of_transcript")
async def test_api_key_accepted(keyed_server, jfk, how) -> None:
    url, headers = keyed_server.ws_url, {}
    if how == "bearer":
        headers = {"Authorization": f"Bearer {KEY}"}
    else:
        url += f"/?token={KEY}"
    transcript = await wire.stream(url, jfk[:16000], speed=None, headers=headers)
    assert transcript.final and transcript.close_code == CloseCode.NORMAL


@pytest.mark.parametrize(("query", "headers"), [
    ("", {}),
    ("", {"Authorization": "Bearer wrong"}),
    ("/?token=wrong", {}),
    ("/?token=", {}),
    (f"/?token={KEY}x", {}),
], ids=["none", "wrong bearer", "wrong token", "empty token", "token with a suffix"])
async def test_api_key_refused_before_upgrade(keyed_server, query, headers) -> None:
    with pytest.raises(InvalidStatus) as caught:
        async with connect(keyed_server.ws_url + query, additional_headers=headers):
            pass
    assert caught.value.response.status_code == 401
    assert b"API key" in caught.value.response.body


@pytest.mark.extension("status", "readyz", "metrics")
def test_status_needs_the_key_but_health_does_not(keyed_server) -> None:
    assert keyed_server.get("/status", headers={"Authorization": ""})[0] == 401
    assert keyed_server.get("/metrics", headers={"Authorization": ""})[0] == 401
    assert keyed_server.get("/status?token=wrong", headers={"Authorization": ""})[0] == 401
    assert keyed_server.get(f"/status?token={KEY}", headers={"Authorization": ""})[0] == 200
    assert keyed_server.get("/status")[0] == 200  # the target's own Bearer header
    assert keyed_server.get("/healthz", headers={"Authorization": ""})[0] == 200
    assert keyed_server.get("/readyz", headers={"Authorization": ""})[0] == 200


@pytest.mark.extension("end_of_transcript")
async def test_the_client_sends_the_key(keyed_server, client_factory, jfk) -> None:
    client = client_factory(server=keyed_server)  # the factory passes the server's key
    await client.connect()
    await client.stream(jfk[:16000], realtime=False)
    assert await client.finish()


@pytest.mark.extension("end_of_transcript")
async def test_without_a_key_anyone_may_connect(server_factory, jfk) -> None:
    open_server = server_factory(api_key=None)
    assert open_server.get("/status")[0] == 200
    transcript = await wire.stream(open_server.ws_url + "/?token=ignored", jfk[:16000],
                                   speed=None, headers={"Authorization": "Bearer ignored"})
    assert transcript.final and transcript.close_code == CloseCode.NORMAL


# -- the keepalive -------------------------------------------------------------------------


def silent_client(server) -> socket.socket:
    """A client that opens a session, sends audio, then never reads or answers a ping."""
    proto = ClientProtocol(parse_uri(server.ws_url))
    request = proto.connect()
    for name, value in server.auth_headers().items():
        request.headers[name] = value
    proto.send_request(request)
    sock = socket.create_connection((server.host, server.port), timeout=5)
    sock.sendall(b"".join(proto.data_to_send()))
    while not any(isinstance(e, Response) for e in proto.events_received()):
        proto.receive_data(sock.recv(4096))
    proto.send_text(json.dumps(wire.config(uid=wire.uid("silent"))).encode())
    proto.send_binary(protocol.encode_audio(np.zeros(1600, dtype=np.float32)))
    sock.sendall(b"".join(proto.data_to_send()))
    return sock


@pytest.mark.extension("status")
def test_client_that_goes_silent_is_freed_within_the_keepalive(server_factory) -> None:
    srv = server_factory(ping_interval=1, ping_timeout=1)
    with closing(silent_client(srv)):
        wait_for_sessions(srv, 1)
        # A ping after 1 s, 1 s to answer it, then the server's 2 s closing
        # handshake timeout: freed 4 s in (measured 4.0 s); 6 s allowed for load.
        status = wait_for_sessions(srv, 0, timeout=6)
    assert status["capacity"]["active"] == 0
