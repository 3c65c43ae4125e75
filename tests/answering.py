"""A stand-in TCP server for the tests (tests reach only 127.0.0.1): each ``answer()``
takes one connection on a thread of its own and hands the socket to a behaviour;
leaving the ``with`` closes the listener and joins every thread.

    with Answering("clip-source-stand-in") as server:
        server.answer(lambda conn: conn.sendall(b"HTTP/1.1 200 OK\\r\\n..."))
        ... connect to server.port ...
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

Behaviour = Callable[[socket.socket], None]


class Answering:
    def __init__(self, name: str) -> None:
        self.name = name
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.port: int = self.listener.getsockname()[1]
        self._threads: list[threading.Thread] = []

    def answer(self, behaviour: Behaviour) -> None:
        """Take the next connection and give it to ``behaviour`` (errors on it ignored:
        the client may hang up first)."""
        def once() -> None:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # closed before anyone connected
                return
            with conn:
                conn.settimeout(10)
                with contextlib.suppress(OSError):
                    behaviour(conn)

        thread = threading.Thread(target=once, name=self.name)
        thread.start()
        self._threads.append(thread)

    def __enter__(self) -> Answering:
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()
        for thread in self._threads:
            thread.join(15)
