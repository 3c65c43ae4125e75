"""The server's side of one connection: a state machine with no I/O.

It takes the frames the client sent (:meth:`ServerConnection.receive`) and
what the server means to do (:meth:`~ServerConnection.accept`,
:meth:`~ServerConnection.segments`, :meth:`~ServerConnection.end`...), and
gives back the events to act on and the frames to send. Whatever comes out of
order raises: :class:`ProtocolError` when the client broke the protocol,
:class:`InvalidState` when the server itself asked for something too early or
too late. The server app only moves frames between this and the socket::

    CONFIG --config--> ADMISSION --accept--> STREAMING --END_OF_AUDIO--> FINISHING
    (any of them) --end--> ENDED    (the first end wins; later ones return None)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from earshot.protocol import frames
from earshot.protocol.ending import (
    MAX_TIME_REASON,
    SHUTDOWN_REASON,
    Ending,
    Outcome,
    close_reason,
)
from earshot.protocol.frames import (
    END_OF_AUDIO,
    ClientConfig,
    CloseCode,
    InvalidState,
    ProtocolError,
    Segment,
)


class ServerState(Enum):
    CONFIG = "config"  # waiting for the client's config
    ADMISSION = "admission"  # the config is valid: the server accepts, refuses or rejects it
    STREAMING = "streaming"  # SERVER_READY sent: audio flows
    FINISHING = "finishing"  # END_OF_AUDIO received: the final transcript is under way
    ENDED = "ended"  # an outcome is decided: its frames, then the close


@dataclass(frozen=True)
class ConfigReceived:
    config: ClientConfig


@dataclass(frozen=True)
class AudioReceived:
    samples: np.ndarray


@dataclass(frozen=True)
class AudioEnded:
    """END_OF_AUDIO: transcribe what is left, then end COMPLETE."""


ClientEvent = ConfigReceived | AudioReceived | AudioEnded

S = ServerState
# The states from which each ending may be taken (ENDED never: the first end wins).
_ENDS_FROM: dict[Ending, frozenset[ServerState]] = {
    Ending.COMPLETE: frozenset({S.FINISHING}),
    Ending.FULL: frozenset({S.ADMISSION}),
    Ending.MAX_CONNECTION_TIME: frozenset({S.STREAMING, S.FINISHING}),
    Ending.SHUTDOWN: frozenset({S.STREAMING, S.FINISHING}),
    Ending.CLIENT_ERROR: frozenset({S.CONFIG, S.ADMISSION, S.STREAMING, S.FINISHING}),
    Ending.SERVER_ERROR: frozenset({S.CONFIG, S.ADMISSION, S.STREAMING, S.FINISHING}),
    Ending.CLOSED_BY_CLIENT: frozenset({S.CONFIG, S.ADMISSION, S.STREAMING, S.FINISHING}),
    Ending.LOST: frozenset({S.CONFIG, S.ADMISSION, S.STREAMING, S.FINISHING}),
}


class ServerConnection:
    """One client connection as the server sees it."""

    def __init__(self, max_frame_bytes: int | None = None) -> None:
        """``max_frame_bytes``: audio frames above it are refused with 1009."""
        self.state = S.CONFIG
        self.config: ClientConfig | None = None
        self.uid = ""  # echoed in every message (from a rejected config, when it has one)
        self.outcome: Outcome | None = None
        self._max_frame_bytes = max_frame_bytes
        self._language_sent = False

    @property
    def ended(self) -> bool:
        return self.state is S.ENDED

    # -- frames from the client -----------------------------------------------

    def receive(self, frame: str | bytes) -> ClientEvent | None:
        """What one frame from the client means; None once the connection has ended
        (frames that arrive after the server decided to end are dropped)."""
        if self.state is S.CONFIG:
            return self._receive_config(frame)
        if self.state is S.STREAMING:
            return self._receive_audio(frame)
        if self.state is S.FINISHING:
            raise ProtocolError("a frame after END_OF_AUDIO: the stream has ended")
        if self.state is S.ADMISSION:
            raise InvalidState("a frame was read before the config was answered")
        return None

    def _receive_config(self, frame: str | bytes) -> ConfigReceived:
        try:
            config = frames.parse_config(frame)
        except ProtocolError:
            self.uid = frames.uid_of(frame) or ""
            raise
        self.config, self.uid, self.state = config, config.uid, S.ADMISSION
        return ConfigReceived(config)

    def _receive_audio(self, frame: str | bytes) -> AudioReceived | AudioEnded:
        assert self.config is not None  # set on the way to STREAMING
        if frame in (END_OF_AUDIO, END_OF_AUDIO.decode()):
            self.state = S.FINISHING
            return AudioEnded()
        if isinstance(frame, str):
            raise ProtocolError(
                f"unexpected text frame in mid-stream ({len(frame)} characters); "
                "after the config only binary audio and END_OF_AUDIO are accepted"
            )
        limit = self._max_frame_bytes
        if limit is not None and len(frame) > limit:
            raise ProtocolError(
                f"audio frame of {len(frame)} bytes is over the {limit}-byte limit",
                CloseCode.TOO_BIG,
            )
        return AudioReceived(frames.decode_audio(frame, self.config.audio_format))

    # -- what the server does ---------------------------------------------------

    def accept(self, session_id: str) -> str:
        """Admit the session: the SERVER_READY frame, naming ``session_id``."""
        self._expect("accept the session", S.ADMISSION)
        self.state = S.STREAMING
        return frames.server_ready(self.uid, session_id)

    def language(self, code: str, probability: float) -> str | None:
        """The detected language the first time; None afterwards (it is sent once)."""
        self._expect("send the language", S.STREAMING, S.FINISHING)
        if self._language_sent:
            return None
        self._language_sent = True
        return frames.language(self.uid, code, probability)

    def segments(self, items: list[Segment]) -> str:
        """A transcript update: the last completed segments and the partial."""
        self._expect("send segments", S.STREAMING, S.FINISHING)
        return frames.segments(self.uid, items)

    def end(
        self,
        ending: Ending,
        message: str = "",
        *,
        close_code: CloseCode | None = None,
        wait_minutes: float = 0.0,
    ) -> Outcome | None:
        """End the connection: the outcome with its last frames and close code.

        The first end decides; a later one (a timer firing as the transcript
        completes) returns None. ``message`` is the ERROR text of the error
        endings (and what is known of a lost connection); ``close_code`` picks
        1009 over 1008 for a client error; ``wait_minutes`` goes with WAIT.
        """
        if self.state is S.ENDED:
            return None
        self._expect(f"end it as {ending.name}", *_ENDS_FROM[ending])
        self.outcome = self._outcome(ending, message, close_code, wait_minutes)
        self.state = S.ENDED
        return self.outcome

    def reject(self, error: ProtocolError) -> Outcome | None:
        """End with the client's error: ERROR saying what was wrong, its close code."""
        return self.end(Ending.CLIENT_ERROR, error.message, close_code=error.close_code)

    def _outcome(self, ending: Ending, message: str, close_code: CloseCode | None,
                 wait_minutes: float) -> Outcome:
        uid = self.uid
        if ending is Ending.COMPLETE:
            return Outcome(ending, CloseCode.NORMAL, "transcript complete",
                           (frames.end_of_transcript(uid),))
        if ending in (Ending.MAX_CONNECTION_TIME, Ending.SHUTDOWN):
            reason = MAX_TIME_REASON if ending is Ending.MAX_CONNECTION_TIME else SHUTDOWN_REASON
            return Outcome(ending, CloseCode.GOING_AWAY, reason, (frames.disconnect(uid),))
        if ending is Ending.FULL:
            return Outcome(ending, CloseCode.TRY_AGAIN_LATER, "server full, try again later",
                           (frames.wait(uid, wait_minutes),))
        if ending is Ending.CLIENT_ERROR:
            code = close_code or CloseCode.POLICY
            if code not in (CloseCode.POLICY, CloseCode.TOO_BIG):
                raise InvalidState(f"a client error closes with 1008 or 1009, not {int(code)}")
            return Outcome(ending, code, close_reason(message), (frames.error(uid, message),),
                           message)
        if ending is Ending.SERVER_ERROR:
            return Outcome(ending, CloseCode.INTERNAL, close_reason(message),
                           (frames.error(uid, message),), message)
        # closed by the client, or lost: nothing left to send
        return Outcome(ending, None, message, message=message)

    def _expect(self, action: str, *states: ServerState) -> None:
        if self.state not in states:
            raise InvalidState(f"cannot {action} in state {self.state.name}")
