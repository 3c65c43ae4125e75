"""How a session ends: the table of endings, their close codes and last frames.

Every way a connection can end is one :class:`Ending`. The server's
connection turns an ending into an :class:`Outcome` (the frames still to send,
the close code and reason); the client's connection turns the close it saw
into one. Logs and metrics use the ending's value as their label.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from earshot.protocol.frames import CloseCode

MAX_REASON_BYTES = 123  # RFC 6455: a close reason fits in a control frame
# The close reasons that tell the two DISCONNECTs apart (both close 1001).
MAX_TIME_REASON = "max_connection_time reached"
SHUTDOWN_REASON = "server shutting down"


class Ending(Enum):
    COMPLETE = "complete"  # END_OF_TRANSCRIPT, then 1000
    MAX_CONNECTION_TIME = "max connection time"  # DISCONNECT, then 1001
    SHUTDOWN = "server shutting down"  # DISCONNECT, then 1001
    FULL = "wait"  # WAIT, then 1013
    CLIENT_ERROR = "client error"  # ERROR, then 1008 (or 1009 for a size limit)
    SERVER_ERROR = "server error"  # ERROR, then 1011
    CLOSED_BY_CLIENT = "closed by client"  # the client closed: nothing left to send
    LOST = "connection lost"  # the connection died: nothing left to send


# The close codes each ending may carry; None: the other side closed or the
# connection died, so this side sends no close of its own.
CLOSE_CODES: dict[Ending, frozenset[CloseCode | None]] = {
    Ending.COMPLETE: frozenset({CloseCode.NORMAL}),
    Ending.MAX_CONNECTION_TIME: frozenset({CloseCode.GOING_AWAY}),
    Ending.SHUTDOWN: frozenset({CloseCode.GOING_AWAY}),
    Ending.FULL: frozenset({CloseCode.TRY_AGAIN_LATER}),
    Ending.CLIENT_ERROR: frozenset({CloseCode.POLICY, CloseCode.TOO_BIG}),
    Ending.SERVER_ERROR: frozenset({CloseCode.INTERNAL}),
    Ending.CLOSED_BY_CLIENT: frozenset({None}),
    Ending.LOST: frozenset({None}),
}


@dataclass(frozen=True)
class Outcome:
    """One connection's end: why, the last frames to send, then the close."""

    ending: Ending
    close_code: int | None  # a CloseCode from this side; the other side's may be any
    reason: str = ""  # the close frame's reason, or what the other side said
    frames: tuple[str, ...] = ()
    message: str = ""  # what went wrong, in full (a close reason is cut to 123 bytes)

    @property
    def label(self) -> str:
        return self.ending.value


def close_reason(text: str) -> str:
    """``text`` cut to what fits a close frame, on a character boundary."""
    return text.encode()[:MAX_REASON_BYTES].decode(errors="ignore")
