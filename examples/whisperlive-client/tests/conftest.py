"""The project's own fixture: WhisperLive 0.10's ``Client``, made and closed here.

earshot's plugin gives the rest: ``whisperlive_server`` (the server container),
``proxy``, ``speech_clip``, the waits, and the leak guard (on for every test
through ``earshot_leak_guard = true`` in pyproject.toml).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import websocket
from whisper_live.client import Client

from earshot.testing.waiting import eventually

# WhisperLive's client runs `run_forever()` with no timeout: without a default
# one, a server that accepts TCP but never answers the handshake hangs it, and
# its close() with it. Process-wide, so it is restored after each test.
SOCKET_TIMEOUT = 10.0
READY_TIMEOUT = 30.0


class ClientFailed(RuntimeError):
    """The client saw an error or a closed connection before SERVER_READY."""


def ready(client: Client) -> bool:
    """True once SERVER_READY came; raises (ending the wait at once) on an error."""
    if client.recording:
        return True
    if client.server_error or not client.ws_thread.is_alive():
        raise ClientFailed(f"no SERVER_READY: {getattr(client, 'error_message', 'closed')}")
    return False


@pytest.fixture
def whisperlive_client(tmp_path: Path) -> Iterator[Callable[[str, int], Client]]:
    """``whisperlive_client(host, port)``: WhisperLive's Client, once SERVER_READY came.

    Closed at teardown with the client's own ``close_websocket()``, which joins
    its thread without a timeout (the test's timeout bounds it).
    """
    made: list[Client] = []
    previous = websocket.getdefaulttimeout()
    websocket.setdefaulttimeout(SOCKET_TIMEOUT)

    def make(host: str, port: int) -> Client:
        client = Client(host, port, lang="en", model="tiny.en", use_vad=False,
                        log_transcription=False, srt_file_path=str(tmp_path / "out.srt"),
                        transcription_callback=lambda text, segments: None)  # no printing
        made.append(client)
        eventually(lambda: ready(client), timeout=READY_TIMEOUT,
                   description=f"SERVER_READY for WhisperLive's client at {host}:{port}")
        return client

    yield make
    try:
        for client in made:
            client.close_websocket()
            Client.INSTANCES.pop(client.uid, None)  # a class-level registry that keeps every client
    finally:
        websocket.setdefaulttimeout(previous)
