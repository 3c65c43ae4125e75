"""The server's plain-HTTP endpoints and its API key check, on a real websockets server
in this process (no model: the endpoints answer before any session exists)."""

from __future__ import annotations

import asyncio
import http.client
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.server import serve

from earshot.server.http import Endpoints
from earshot.server.metrics import Metrics

KEY = "the-key"


@pytest.fixture
async def endpoints_port() -> AsyncIterator[int]:
    """The server's Endpoints as the ``process_request`` hook of a websockets server."""
    endpoints = Endpoints(KEY, Metrics(), readiness=lambda: None,
                          status=lambda: {"sessions": []})

    async def handler(ws) -> None:
        await ws.close()

    async with serve(handler, "127.0.0.1", 0, process_request=endpoints) as server:
        yield server.sockets[0].getsockname()[1]


def _get(port: int, path: str, headers: list[tuple[str, str]]) -> int:
    """A GET with exactly these header lines (repeats included): its status."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.putrequest("GET", path)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def _upgrade(key_headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13"),
            *key_headers]


@pytest.mark.parametrize("path", ["/status", "/metrics", "/"])
@pytest.mark.parametrize("values", [(f"Bearer {KEY}", f"Bearer {KEY}"),
                                    ("Bearer wrong", f"Bearer {KEY}")],
                         ids=["the key twice", "a wrong key and the key"])
async def test_two_authorization_headers_are_refused_with_401(endpoints_port, path,
                                                              values) -> None:
    """Which of two keys counts is ambiguous: the request is refused, not a server error."""
    headers = [("Authorization", value) for value in values]
    if path == "/":
        headers = _upgrade(headers)
    assert await asyncio.to_thread(_get, endpoints_port, path, headers) == 401


@pytest.mark.parametrize("path", ["/status", "/metrics"])
async def test_one_authorization_header_with_the_key_is_let_through(endpoints_port,
                                                                    path) -> None:
    headers = [("Authorization", f"Bearer {KEY}")]
    assert await asyncio.to_thread(_get, endpoints_port, path, headers) == 200


async def test_a_repeated_upgrade_header_is_a_bad_request(endpoints_port) -> None:
    headers = [*_upgrade([("Authorization", f"Bearer {KEY}")]), ("Upgrade", "websocket")]
    assert await asyncio.to_thread(_get, endpoints_port, "/", headers) == 400
