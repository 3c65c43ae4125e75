"""Capacity (WAIT), max_connection_time (DISCONNECT) and the API key."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from earshot import protocol
from earshot.protocol import CloseCode
from earshot.testing import wire
from earshot.testing.local import LocalServer
from earshot.testing.waiting import wait_for_sessions

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def small_server() -> Iterator[LocalServer]:
    """One slot, sessions of at most 3 s, and an API key."""
    with LocalServer("--max-clients", "1", "--max-connection-time", "3",
                     "--api-key", KEY) as srv:
        yield srv


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


async def test_full_server_answers_wait_and_closes_1013(small_server) -> None:
    async with connect(small_server.ws_url, additional_headers=auth()) as first:
        await first.send(json.dumps(wire.config(uid="first")))
        assert protocol.parse_server_message(await first.recv()).kind == "ready"
        async with connect(small_server.ws_url, additional_headers=auth()) as second:
            await second.send(json.dumps(wire.config(uid="second")))
            reply = protocol.parse_server_message(await second.recv())
            await second.wait_closed()
        assert reply.kind == "wait" and reply.data["uid"] == "second"
        # The only slot frees when the first session's 3 s are up.
        assert 0 < reply.data["message"] <= 3 / 60
        assert second.close_code == CloseCode.TRY_AGAIN_LATER
    wait_for_sessions(small_server, 0, headers=auth())


async def test_max_connection_time_disconnects_with_1001(small_server, jfk) -> None:
    transcript = await wire.stream(
        small_server.ws_url, jfk, speed=1.0, headers=auth(), uid="long"
    )
    assert [m.kind for _, m in transcript.messages][-1] == "disconnect"
    assert transcript.close_code == CloseCode.GOING_AWAY
    elapsed = transcript.messages[-1][0] - transcript.messages[0][0]
    assert 2.5 < elapsed < 4.5
    wait_for_sessions(small_server, 0, headers=auth())


@pytest.mark.parametrize("how", ["bearer", "token"])
async def test_api_key_accepted(small_server, jfk, how) -> None:
    url, headers = small_server.ws_url, {}
    if how == "bearer":
        headers = auth()
    else:
        url += f"/?token={KEY}"
    transcript = await wire.stream(url, jfk[:16000], speed=None, headers=headers)
    assert transcript.final and transcript.close_code == CloseCode.NORMAL


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}], ids=["none", "wrong"])
async def test_api_key_refused_before_upgrade(small_server, headers) -> None:
    with pytest.raises(InvalidStatus) as caught:
        async with connect(small_server.ws_url, additional_headers=headers):
            pass
    assert caught.value.response.status_code == 401
    assert b"API key" in caught.value.response.body


def test_status_needs_the_key_but_health_does_not(small_server) -> None:
    assert small_server.get("/status")[0] == 401
    assert small_server.get("/metrics")[0] == 401
    assert small_server.get(f"/status?token={KEY}")[0] == 200
    assert small_server.get("/healthz")[0] == 200
    assert small_server.get("/readyz")[0] == 200
