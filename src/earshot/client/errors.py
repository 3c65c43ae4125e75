"""What can go wrong, as types a caller can catch one by one."""

from __future__ import annotations

import math
from typing import Any

from earshot.protocol import ClientConnection


class ClientError(Exception):
    """Base of every error the client raises on purpose."""


class ConnectError(ClientError):
    """The connection could not be opened (refused, handshake failed, timed out)."""


class ServerBusy(ClientError):
    """The server answered WAIT: it is full. ``wait_minutes`` is its estimate."""

    def __init__(self, wait_minutes: float) -> None:
        super().__init__(f"server is full; a slot frees in about {wait_minutes:g} minutes")
        self.wait_minutes = wait_minutes


class ServerRejected(ClientError):
    """The server answered ERROR; ``message`` is its text, ``close_code`` how it closed."""

    def __init__(self, message: str, close_code: int | None = None) -> None:
        suffix = f" (close {close_code})" if close_code else ""
        super().__init__(f"server error: {message}{suffix}")
        self.message = message
        self.close_code = close_code


class ConnectionLost(ClientError):
    """The session ended before its transcript was final (server gone, DISCONNECT)."""

    def __init__(self, reason: str, close_code: int | None = None) -> None:
        super().__init__(reason + (f" (close {close_code})" if close_code else ""))
        self.reason = reason
        self.close_code = close_code


class ClientClosed(ClientError):
    """close() was called while the client was connecting, waiting or streaming.

    A sibling of ConnectionLost, not a kind of it: the session is over either
    way, but here the owner asked for the end, so nothing retries it and a
    caller that handles lost connections need not carve it out.
    """

    def __init__(self, reason: str = "the client was closed") -> None:
        super().__init__(reason)
        self.reason = reason


class TranscriptTimeout(ClientError, TimeoutError):
    """The final transcript did not arrive in time; the text says what was seen."""


class ThreadLeak(ClientError):
    """The synchronous client's event-loop thread would not stop in time."""


def ended_error(protocol: ClientConnection, close_code: int | None) -> ClientError:
    """Why the server ended a session: what it said before closing (WAIT, ERROR,
    DISCONNECT), or just the close."""
    refusal = protocol.refusal
    if refusal is None:
        return ConnectionLost("the server closed the connection", close_code)
    said = refusal.data.get("message")
    if refusal.kind == "wait":
        return ServerBusy(_minutes(said))
    if refusal.kind == "error":
        return ServerRejected(str(said), close_code)
    return ConnectionLost("the server ended the session (DISCONNECT)", close_code)


def _minutes(value: Any) -> float:
    """WAIT's estimate in minutes; 0 for one that is not a finite, positive number."""
    try:
        minutes = float(value or 0)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return minutes if math.isfinite(minutes) and minutes > 0 else 0.0
