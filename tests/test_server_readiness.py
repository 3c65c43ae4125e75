"""/readyz: ready only once the model is loaded and while the server accepts.

The real server in this process; its model load is held on an Event (a
subclass of Server whose ``_load_model`` waits, then returns a real loaded
Transcriber: the only stand-in here), so the "loading model" phase lasts as
long as the test needs. A drain is held open by a TCP connection the server
accepted before the drain and on which the request comes only afterwards.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator

import pytest

from earshot.server.app import Server
from earshot.server.config import ServerConfig
from earshot.server.engine import Transcriber
from earshot.testing.http import HttpEndpoints
from earshot.testing.waiting import eventually_async


@pytest.fixture(scope="module")
def transcriber() -> Transcriber:
    return Transcriber(device="cpu", workers=1)


class HeldModelServer(Server):
    """A Server whose model load waits for ``release`` (then the real model)."""

    def __init__(self, config: ServerConfig, model: Transcriber) -> None:
        super().__init__(config)
        self.release = threading.Event()
        self._model = model

    def _load_model(self) -> Transcriber:
        assert self.release.wait(30), "the test never released the model load"
        return self._model


class Endpoints(HttpEndpoints):
    """The project's HTTP helper pointed at the in-process server."""

    host = "127.0.0.1"

    def __init__(self, port: int) -> None:
        self.port = port


async def readyz(server: Server) -> tuple[int, bytes]:
    assert server.port is not None
    return await asyncio.to_thread(Endpoints(server.port).get, "/readyz")


@pytest.fixture
async def held_server(transcriber: Transcriber) -> AsyncIterator[HeldModelServer]:
    server = HeldModelServer(ServerConfig(port=0, workers=1), transcriber)
    starting = asyncio.create_task(server.start())
    try:
        await eventually_async(lambda: server.port, timeout=10,
                               description="the server listening (its port known)")
        yield server
    finally:
        server.release.set()
        await starting
        if not server.draining:
            await server.drain()


async def test_readyz_is_503_loading_model_until_the_model_is_loaded(
        held_server: HeldModelServer) -> None:
    assert await readyz(held_server) == (503, b"loading model\n")
    assert await readyz(held_server) == (503, b"loading model\n")  # still, however often
    held_server.release.set()
    await eventually_async(lambda: readyz(held_server), lambda r: r[0] != 503, timeout=10,
                           description="/readyz once the model load is released")
    assert await readyz(held_server) == (200, b"ready\n")


async def test_readyz_is_503_draining_during_a_drain(held_server: HeldModelServer) -> None:
    held_server.release.set()
    await eventually_async(lambda: readyz(held_server), lambda r: r[0] == 200, timeout=10,
                           description="/readyz 200 before the drain")
    assert held_server.port is not None and held_server._ws_server is not None
    ws_server = held_server._ws_server
    early = await asyncio.to_thread(socket.create_connection,
                                    ("127.0.0.1", held_server.port), 5)
    with early:
        # accepted by the server (not just queued by the kernel) before the drain starts
        await eventually_async(lambda: len(ws_server.handler_tasks), timeout=10,
                               description="the early connection accepted by the server")
        draining = asyncio.create_task(held_server.drain())
        await eventually_async(lambda: held_server.draining, timeout=5,
                               description="the drain begun")
        early.sendall(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        early.settimeout(5)
        answer = await asyncio.to_thread(_read_response, early)
    assert answer.startswith(b"HTTP/1.1 503 "), answer
    assert answer.endswith(b"\r\n\r\ndraining\n"), answer
    await asyncio.wait_for(draining, 10)


def _read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data
