"""The wire protocol, stated once: frames, the connection state machines, the transcript.

Like websockets' sans-I/O core, nothing here touches a socket. :mod:`.frames`
holds the shapes of the frames (WhisperLive 0.10's, made exact where
WhisperLive is vague: a session id in SERVER_READY, END_OF_TRANSCRIPT,
meaningful close codes); :mod:`.server` and :mod:`.client` hold which frame may
come when, as the state machines that the server app, the client and the
wire-level harness all drive; :mod:`.ending` the table of endings and close
codes; :mod:`.transcript` the one fold of segments updates.
"""

from earshot.protocol.client import ClientConnection, ClientState, ServerEvent
from earshot.protocol.ending import CLOSE_CODES, Ending, Outcome
from earshot.protocol.frames import (
    BACKEND,
    DISCONNECT,
    END_OF_AUDIO,
    END_OF_TRANSCRIPT,
    ERROR,
    MAX_CONFIG_BYTES,
    MAX_UID_CHARS,
    SAMPLE_RATE,
    SERVER_READY,
    TASKS,
    WAIT,
    AudioFormat,
    ClientConfig,
    CloseCode,
    InvalidState,
    ProtocolError,
    Segment,
    ServerMessage,
    decode_audio,
    disconnect,
    encode_audio,
    end_of_transcript,
    error,
    language,
    parse_config,
    parse_server_message,
    segments,
    server_ready,
    wait,
)
from earshot.protocol.server import (
    AudioEnded,
    AudioReceived,
    ConfigReceived,
    ServerConnection,
    ServerState,
)
from earshot.protocol.transcript import Received, Transcript

__all__ = [
    "BACKEND", "CLOSE_CODES", "DISCONNECT", "END_OF_AUDIO", "END_OF_TRANSCRIPT", "ERROR",
    "MAX_CONFIG_BYTES", "MAX_UID_CHARS", "SAMPLE_RATE", "SERVER_READY", "TASKS", "WAIT",
    "AudioEnded", "AudioFormat", "AudioReceived", "ClientConfig", "ClientConnection",
    "ClientState", "CloseCode", "ConfigReceived", "Ending", "InvalidState", "Outcome",
    "ProtocolError", "Received", "Segment", "ServerConnection", "ServerEvent", "ServerMessage",
    "ServerState", "Transcript", "decode_audio", "disconnect", "encode_audio",
    "end_of_transcript", "error", "language", "parse_config", "parse_server_message",
    "segments", "server_ready", "wait",
]
