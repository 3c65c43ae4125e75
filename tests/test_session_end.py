"""How a session ends, on the real server in this process with the real model.

A failed inference pass, or a failure while applying its result (a bug of the
server's own), ends the session at once, with ERROR and close 1011,
while the client is still streaming: not at END_OF_AUDIO, and not after the
backlog fills. The fault is injected into a real, loaded Transcriber (its
``transcribe`` replaced by one that raises): the only stand-in here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from earshot.protocol import ClientConfig, ClientConnection, ClientState, CloseCode, Ending
from earshot.server.app import Server
from earshot.server.config import ServerConfig
from earshot.server.engine import Transcriber
from earshot.server.streaming import TranscriptStream
from earshot.testing.waiting import eventually_async


class PassFailed(RuntimeError):
    """The injected fault."""


@pytest.fixture(scope="module")
def transcriber() -> Transcriber:
    return Transcriber(device="cpu", workers=1)


# Where the fault is injected, and the ERROR text the client must get.
FAULTS = {
    "the pass": "failed to transcribe",
    "applying its result": "the server failed",  # a bug of the server's own, after the pass
}


@pytest.fixture(params=list(FAULTS))
async def failing_server(request: pytest.FixtureRequest, transcriber: Transcriber,
                         monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Server]:
    def fail(*args: object, **kwargs: object) -> None:
        raise PassFailed("injected: the model crashed")

    if request.param == "the pass":
        monkeypatch.setattr(transcriber, "transcribe", fail)
    else:
        monkeypatch.setattr(TranscriptStream, "apply", fail)
    server = Server(ServerConfig(port=0, workers=1), transcriber)
    await server.start()
    try:
        yield server, FAULTS[request.param]
    finally:
        await server.drain()


async def test_a_failed_pass_ends_the_session_at_once_with_1011(
        failing_server: tuple[Server, str], jfk: np.ndarray) -> None:
    server, says = failing_server
    client = ClientConnection("fails")
    url = f"ws://127.0.0.1:{server.port}"
    async with asyncio.timeout(30), connect(url) as ws:
        await ws.send(client.send_config(ClientConfig(uid="fails")))
        client.receive(await ws.recv())
        assert client.state is ClientState.STREAMING
        for piece in np.array_split(jfk, 110):  # 0.1 s frames; never END_OF_AUDIO
            try:
                await ws.send(client.send_audio(piece))
            except ConnectionClosed:  # the server ended it while audio was flowing
                break
        replies = []
        with contextlib.suppress(ConnectionClosed):  # 1011 ends the iteration with an error
            async for frame in ws:
                replies.append(frame)
    for frame in replies:
        client.receive(frame)
    outcome = client.closed(ws.close_code, ws.close_reason or "")
    assert client.refusal is not None and client.refusal.kind == "error", replies
    assert says in client.refusal.data["message"]
    assert outcome.ending is Ending.SERVER_ERROR and ws.close_code == CloseCode.INTERNAL
    assert not client.final
    await eventually_async(lambda: server.sessions, lambda s: s == {}, timeout=10,
                           description="the ended session gone from the server")
