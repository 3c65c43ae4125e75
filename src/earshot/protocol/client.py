"""The client's side of one connection: a state machine with no I/O.

It takes what the client means to do (:meth:`ClientConnection.send_config`,
:meth:`~ClientConnection.send_audio`, :meth:`~ClientConnection.send_end_of_audio`)
and gives back the frames to send; it takes the server's frames
(:meth:`~ClientConnection.receive`), folds segments into the transcript and
says what each one meant. A server frame out of order raises
:class:`ProtocolError` and changes nothing, so a client may count it and go on;
an intention out of order raises :class:`InvalidState`::

    IDLE --config--> AWAITING_READY --SERVER_READY--> STREAMING --END_OF_AUDIO--> ENDING
    ENDING --END_OF_TRANSCRIPT--> FINAL      (the server closes with 1000 next)
    AWAITING_READY | STREAMING | ENDING --WAIT, ERROR, DISCONNECT--> REFUSED
    (any of them) --the close--> CLOSED

Messages the protocol does not know (a newer server's) are passed on, never
refused, as WhisperLive's clients do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from earshot.protocol import frames
from earshot.protocol.ending import MAX_TIME_REASON, Ending, Outcome
from earshot.protocol.frames import (
    END_OF_AUDIO,
    AudioFormat,
    ClientConfig,
    CloseCode,
    InvalidState,
    ProtocolError,
    ServerMessage,
)
from earshot.protocol.transcript import Transcript


class ClientState(Enum):
    IDLE = "idle"  # nothing sent yet
    AWAITING_READY = "awaiting ready"  # config sent
    STREAMING = "streaming"  # SERVER_READY received: audio may flow
    ENDING = "ending"  # END_OF_AUDIO sent: the final transcript is coming
    FINAL = "final"  # END_OF_TRANSCRIPT received: the transcript is complete
    REFUSED = "refused"  # WAIT, ERROR or DISCONNECT received: the close follows
    CLOSED = "closed"


S = ClientState
# Which server messages each state takes; "unknown" ones are always passed on.
_ACCEPTS: dict[ClientState, frozenset[str]] = {
    S.AWAITING_READY: frozenset({"ready", "wait", "error"}),
    S.STREAMING: frozenset({"segments", "language", "error", "disconnect"}),
    S.ENDING: frozenset({"segments", "language", "error", "disconnect", "end"}),
}
_REFUSALS = {"wait": Ending.FULL, "disconnect": Ending.SHUTDOWN}


@dataclass(frozen=True)
class ServerEvent:
    """One server message and what it did: ``changed`` when it changed the transcript."""

    message: ServerMessage
    changed: bool = False

    @property
    def kind(self) -> str:
        return self.message.kind


class ClientConnection:
    """One connection (one session, named ``uid``) as the client sees it.

    ``transcript`` may be shared across connections: a client that resumes a
    lost session folds the new session into the same transcript.
    """

    def __init__(
        self,
        uid: str,
        transcript: Transcript | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.uid = uid
        self.state = S.IDLE
        self.transcript = transcript if transcript is not None else Transcript()
        self.audio_format = AudioFormat.FLOAT32
        self.session_id: str | None = None  # the server's, from SERVER_READY
        self.refusal: ServerMessage | None = None  # the WAIT, ERROR or DISCONNECT
        self.outcome: Outcome | None = None
        self._closing = False  # this side began the close
        self._clock = clock

    # -- what the client does ---------------------------------------------------

    def send_config(self, config: ClientConfig | Mapping[str, Any] | str) -> str:
        """The first frame. A mapping or a text is sent as it is, unchecked: the
        harness sends broken configs on purpose (their ``uid`` should be this
        connection's, for the replies to be taken)."""
        self._expect("send the config", S.IDLE)
        if isinstance(config, ClientConfig):
            self.audio_format, text = config.audio_format, config.to_json()
        elif isinstance(config, str):
            text = config
        else:
            self.audio_format, text = _format_of(config), json.dumps(dict(config))
        self.state = S.AWAITING_READY
        return text

    def send_audio(self, samples: np.ndarray) -> bytes:
        """One binary frame of 16 kHz mono samples, in the announced format."""
        self._expect("send audio", S.STREAMING)
        return frames.encode_audio(samples, self.audio_format)

    def send_end_of_audio(self) -> bytes:
        self._expect("send END_OF_AUDIO", S.STREAMING)
        self.state = S.ENDING
        return END_OF_AUDIO

    def close(self) -> None:
        """This side is closing the connection (the outcome is then CLOSED_BY_CLIENT
        unless the server had already ended it)."""
        self._closing = True

    # -- frames from the server ---------------------------------------------------

    def receive(self, frame: str | bytes) -> ServerEvent:
        """What one server frame means. Raises ProtocolError, changing nothing,
        for a frame that is malformed, for another uid, or out of order."""
        message = frames.parse_server_message(frame)
        uid = message.data.get("uid")
        if uid not in (None, self.uid):
            raise ProtocolError(f"message for another uid ({uid!r})")
        if message.kind == "unknown":
            return ServerEvent(message)
        if message.kind not in _ACCEPTS.get(self.state, frozenset()):
            raise ProtocolError(f"{_name(message)} in state {self.state.name}")
        return ServerEvent(message, self._apply(message))

    def _apply(self, message: ServerMessage) -> bool:
        kind = message.kind
        if kind == "segments":
            segments = message.segments  # parsed first: a malformed one changes nothing
            return self.transcript.apply(segments, self._clock(), self.uid)
        if kind == "ready":
            session_id = message.data.get("session_id")
            self.session_id = session_id if isinstance(session_id, str) else None
            self.state = S.STREAMING
        elif kind == "end":
            self.state = S.FINAL
        elif kind in ("wait", "error", "disconnect"):
            self.refusal, self.state = message, S.REFUSED
        return False

    def closed(self, code: int | None, reason: str = "") -> Outcome:
        """The connection closed with ``code`` (None: no close frame): how it ended."""
        if self.outcome is None:
            self.outcome = Outcome(self._ending(code, reason), code, reason)
            self.state = S.CLOSED
        return self.outcome

    def _ending(self, code: int | None, reason: str) -> Ending:
        if self.state is S.FINAL:
            return Ending.COMPLETE
        if self.refusal is not None:
            if self.refusal.kind == "error":
                return Ending.SERVER_ERROR if code == CloseCode.INTERNAL else Ending.CLIENT_ERROR
            if self.refusal.kind == "disconnect" and reason == MAX_TIME_REASON:
                return Ending.MAX_CONNECTION_TIME
            return _REFUSALS[self.refusal.kind]
        return Ending.CLOSED_BY_CLIENT if self._closing else Ending.LOST

    @property
    def final(self) -> bool:
        """The server said the transcript is complete."""
        return self.state is S.FINAL or (self.outcome is not None
                                          and self.outcome.ending is Ending.COMPLETE)

    def _expect(self, action: str, *states: ClientState) -> None:
        if self.state not in states:
            raise InvalidState(f"cannot {action} in state {self.state.name}")


def _format_of(config: Mapping[str, Any]) -> AudioFormat:
    try:
        return AudioFormat(config.get("audio_format", AudioFormat.FLOAT32.value))
    except ValueError:  # a broken config: the server will refuse it before any audio
        return AudioFormat.FLOAT32


def _name(message: ServerMessage) -> str:
    names = {"ready": "SERVER_READY", "wait": "WAIT", "error": "ERROR",
             "disconnect": "DISCONNECT", "end": "END_OF_TRANSCRIPT",
             "segments": "a segments update", "language": "a language message"}
    return names.get(message.kind, message.kind)
