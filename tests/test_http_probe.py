"""earshot.testing.http: every way a server fails to answer is a failed probe
(ServerUnreachable), never an exception of the HTTP library. Stand-ins: TCP servers
on 127.0.0.1 that misbehave on purpose, which the real server never does."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from answering import Answering  # pytest puts tests/ on the path

from earshot.testing.http import HttpEndpoints, ServerUnreachable


class Target(HttpEndpoints):
    host = "127.0.0.1"

    def __init__(self, port: int) -> None:
        self.port = port


def _hang_up(conn: socket.socket) -> None:
    conn.recv(4096)  # the request, then close without a word: RemoteDisconnected


def _say_nothing(conn: socket.socket) -> None:
    conn.recv(4096)
    conn.recv(4096)  # until the client gives up (read timeout) and closes


def _garble(conn: socket.socket) -> None:
    conn.recv(4096)
    conn.sendall(b"\x00\x01 this is not HTTP\r\n\r\n")  # BadStatusLine


def _cut_the_body(conn: socket.socket) -> None:
    conn.recv(4096)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a few bytes")


@pytest.fixture
def stand_in(request: pytest.FixtureRequest) -> Iterator[int]:
    """A TCP server that answers one connection with ``request.param``."""
    with Answering("http-stand-in") as server:
        server.answer(request.param)
        yield server.port


@pytest.mark.parametrize("stand_in", [_hang_up, _say_nothing, _garble, _cut_the_body],
                         ids=["hangs up", "says nothing", "not HTTP", "body cut short"],
                         indirect=True)
def test_a_server_that_fails_to_answer_is_unreachable(stand_in: int) -> None:
    with pytest.raises(ServerUnreachable, match="GET /readyz"):
        Target(stand_in).get("/readyz", timeout=0.5)
