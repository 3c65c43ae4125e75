"""The frames of the wire protocol: their shapes, parsing and validation, no I/O.

Everything here turns bytes and text into validated values (or raises
:class:`ProtocolError`) and back. Which frame may come when is the business of
the connection state machines beside this module (:mod:`.server`, :mod:`.client`).

The shapes are WhisperLive 0.10's; where WhisperLive is vague earshot is exact
(a session id in SERVER_READY, an END_OF_TRANSCRIPT message, meaningful close
codes) without breaking clients that ignore what they do not know.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

import numpy as np

SAMPLE_RATE = 16_000
END_OF_AUDIO = b"END_OF_AUDIO"
BACKEND = "faster_whisper"
MAX_CONFIG_BYTES = 64 * 1024
MAX_UID_CHARS = 256
# float32 samples are in [-1, 1]; resampling overshoots a little, but a frame that
# reaches past this holds integer sample values sent as floats (int16 as float32).
MAX_FLOAT_SAMPLE = 2.0
# A segment's times are seconds into a stream; past this (about 115 days) a time is
# not one, and folding it (milliseconds as an int key) would overflow.
MAX_STREAM_SECONDS = 1e7

# Message texts (values of the "message" key).
SERVER_READY = "SERVER_READY"
DISCONNECT = "DISCONNECT"
END_OF_TRANSCRIPT = "END_OF_TRANSCRIPT"
# Status values (values of the "status" key).
WAIT = "WAIT"
ERROR = "ERROR"

TASKS = ("transcribe", "translate")


class CloseCode(IntEnum):
    """Close codes, each with one meaning (RFC 6455 section 7.4.1)."""

    NORMAL = 1000  # transcript complete
    GOING_AWAY = 1001  # server shutdown or max_connection_time (DISCONNECT)
    POLICY = 1008  # bad config, bad audio, protocol violation
    TOO_BIG = 1009  # a frame or the config over its limit
    INTERNAL = 1011  # the server failed
    TRY_AGAIN_LATER = 1013  # at capacity (WAIT)


class AudioFormat(StrEnum):
    """Sample encodings a client may announce with ``audio_format``."""

    FLOAT32 = "float32"
    INT16 = "int16"
    UINT8 = "uint8"

    @property
    def sample_size(self) -> int:
        return {"float32": 4, "int16": 2, "uint8": 1}[self.value]


class ProtocolError(Exception):
    """The peer broke the protocol; ``message`` says how, ``close_code`` how to close."""

    def __init__(self, message: str, close_code: CloseCode = CloseCode.POLICY) -> None:
        super().__init__(message)
        self.message = message
        self.close_code = close_code


class InvalidState(Exception):
    """This side asked its connection for something its state does not allow
    (audio before SERVER_READY, a second end): a bug in the caller, not the peer.

    A sibling of :class:`ProtocolError`, not a kind of it (as in websockets): the
    peer's fault and this side's own are handled apart."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ClientConfig:
    """The first frame of a connection, validated."""

    uid: str
    language: str | None = None
    task: str = "transcribe"
    model: str | None = None
    use_vad: bool = True
    send_last_n_segments: int = 10
    no_speech_thresh: float = 0.45
    clip_audio: bool = False
    same_output_threshold: int = 10
    initial_prompt: str | None = None
    audio_format: AudioFormat = AudioFormat.FLOAT32

    def to_json(self) -> str:
        """The frame a client sends (also used by tests and the client)."""
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["audio_format"] = self.audio_format.value
        return json.dumps(data)


# name -> (accepted types, description for error texts); bool is checked apart
# because bool is a subclass of int in Python.
_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "language": ((str, type(None)), "a string or null"),
    "task": ((str,), "a string"),
    "model": ((str, type(None)), "a string or null"),
    "use_vad": ((bool,), "a boolean"),
    "send_last_n_segments": ((int,), "an integer"),
    "no_speech_thresh": ((int, float), "a number"),
    "clip_audio": ((bool,), "a boolean"),
    "same_output_threshold": ((int,), "an integer"),
    "initial_prompt": ((str, type(None)), "a string or null"),
    "audio_format": ((str,), "a string"),
}


def parse_config(frame: str | bytes) -> ClientConfig:
    """Validate the first frame of a connection. Unknown keys are ignored."""
    if isinstance(frame, bytes):
        raise ProtocolError(
            "expected a JSON config as the first (text) frame, got binary data "
            f"({len(frame)} bytes); send the config before any audio"
        )
    if len(frame.encode()) > MAX_CONFIG_BYTES:
        raise ProtocolError(
            f"config is {len(frame.encode())} bytes, over the {MAX_CONFIG_BYTES}-byte limit",
            CloseCode.TOO_BIG,
        )
    data = _json(frame, "config")
    if not isinstance(data, dict):
        raise ProtocolError(f"config must be a JSON object, got {type(data).__name__}")
    return _config_from_mapping(data)


def _json(text: str, what: str) -> Any:
    """``text`` parsed, or ProtocolError saying why it cannot be (never another error)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"{what} is not valid JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:  # e.g. 20,000 nested arrays: the parser's stack gives out first
        raise ProtocolError(f"{what} is nested too deeply to be a JSON object") from None
    except ValueError as exc:  # Python's limit on integer digits (4,300), met inside the parser
        raise ProtocolError(f"{what} holds a number too long to read ({exc})") from None


def _config_from_mapping(data: Mapping[str, Any]) -> ClientConfig:
    uid = data.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ProtocolError("config needs 'uid', a non-empty string")
    if len(uid) > MAX_UID_CHARS:
        raise ProtocolError(f"'uid' is longer than {MAX_UID_CHARS} characters")
    values: dict[str, Any] = {"uid": uid}
    for name, (types, description) in _FIELDS.items():
        if name not in data:
            continue
        value = data[name]
        is_bool = isinstance(value, bool)
        if not isinstance(value, types) or (is_bool and bool not in types):
            raise ProtocolError(
                f"'{name}' must be {description}, got {json.dumps(value)[:60]}"
            )
        values[name] = value
    if "audio_format" in values:
        values["audio_format"] = _audio_format(values["audio_format"])
    return _checked(ClientConfig(**values))


def _audio_format(name: str) -> AudioFormat:
    try:
        return AudioFormat(name)
    except ValueError:
        known = ", ".join(f.value for f in AudioFormat)
        raise ProtocolError(f"unknown audio_format {name!r}; expected one of {known}") from None


def _checked(config: ClientConfig) -> ClientConfig:
    if config.task not in TASKS:
        raise ProtocolError(f"unknown task {config.task!r}; expected one of {', '.join(TASKS)}")
    if not 1 <= config.send_last_n_segments <= 1000:
        raise ProtocolError("'send_last_n_segments' must be between 1 and 1000")
    if not 1 <= config.same_output_threshold <= 1000:
        raise ProtocolError("'same_output_threshold' must be between 1 and 1000")
    if not (math.isfinite(config.no_speech_thresh) and 0 <= config.no_speech_thresh <= 1):
        raise ProtocolError("'no_speech_thresh' must be between 0 and 1")
    return config


def decode_audio(frame: bytes, fmt: AudioFormat = AudioFormat.FLOAT32) -> np.ndarray:
    """Turn one binary frame into float32 samples in [-1, 1]."""
    if len(frame) % fmt.sample_size:
        raise ProtocolError(
            f"audio frame of {len(frame)} bytes is not a whole number of "
            f"{fmt.value} samples ({fmt.sample_size} bytes each)"
        )
    if fmt is AudioFormat.FLOAT32:
        samples = np.frombuffer(frame, dtype="<f4").astype(np.float32)
        if not np.isfinite(samples).all():
            bad = int((~np.isfinite(samples)).sum())
            raise ProtocolError(f"audio frame holds {bad} NaN or infinite samples")
        peak = float(np.abs(samples).max(initial=0.0))
        if peak > MAX_FLOAT_SAMPLE:
            raise ProtocolError(
                f"float32 samples must be in [-1, 1], but this frame reaches {peak:g}: "
                "are these int16 values sent as float32? Send int16 frames with "
                '"audio_format": "int16" in the config, or divide the samples by 32768'
            )
        return samples
    if fmt is AudioFormat.INT16:
        return np.frombuffer(frame, dtype="<i2").astype(np.float32) / 32768.0
    return (np.frombuffer(frame, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0


def encode_audio(samples: np.ndarray, fmt: AudioFormat = AudioFormat.FLOAT32) -> bytes:
    """Turn float32 samples in [-1, 1] into one binary frame."""
    samples = np.asarray(samples, dtype=np.float32)
    if fmt is AudioFormat.FLOAT32:
        return samples.astype("<f4").tobytes()
    clipped = np.clip(samples, -1.0, 1.0)
    if fmt is AudioFormat.INT16:
        return np.round(clipped * 32767.0).astype("<i2").tobytes()
    return np.clip(np.round(clipped * 128.0 + 128.0), 0, 255).astype(np.uint8).tobytes()


@dataclass(frozen=True)
class Segment:
    """A span of transcript; times in seconds from the start of the stream."""

    start: float
    end: float
    text: str
    completed: bool = False

    def to_wire(self) -> dict[str, Any]:
        return {
            "start": f"{self.start:.3f}",
            "end": f"{self.end:.3f}",
            "text": self.text,
            "completed": self.completed,
        }

    @classmethod
    def from_wire(cls, data: Any) -> Segment:
        """A segment of a server message; ProtocolError for anything that is not one."""
        if not isinstance(data, Mapping):
            raise ProtocolError(f"malformed segment {_excerpt(data)}: not a JSON object")
        try:
            start, end = _stream_time(data["start"]), _stream_time(data["end"])
            return cls(start, end, str(data["text"]), bool(data.get("completed", False)))
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ProtocolError(f"malformed segment {_excerpt(data)}: {exc!r}") from None


def _stream_time(value: Any) -> float:
    seconds = float(value)  # a number or a numeric string, as WhisperLive sends
    if not (math.isfinite(seconds) and abs(seconds) <= MAX_STREAM_SECONDS):
        raise ValueError(f"{_excerpt(value)} is not a time in a stream")
    return seconds


def _excerpt(value: Any) -> str:
    """A short text of a hostile value for an error message (no huge or deep repr)."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # a very deep value; an int past the digit limit
        text = f"<a {type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


# Server -> client messages. Every one carries the client's uid.


def _dump(uid: str, **fields: Any) -> str:
    return json.dumps({"uid": uid, **fields})


def server_ready(uid: str, session_id: str) -> str:
    return _dump(uid, message=SERVER_READY, backend=BACKEND, session_id=session_id)


def wait(uid: str, minutes: float) -> str:
    return _dump(uid, status=WAIT, message=round(minutes, 2))


def error(uid: str, text: str) -> str:
    return _dump(uid, status=ERROR, message=text)


def language(uid: str, code: str, probability: float) -> str:
    return _dump(uid, language=code, language_prob=round(probability, 4))


def segments(uid: str, items: list[Segment]) -> str:
    return _dump(uid, segments=[s.to_wire() for s in items])


def disconnect(uid: str) -> str:
    return _dump(uid, message=DISCONNECT)


def end_of_transcript(uid: str) -> str:
    return _dump(uid, message=END_OF_TRANSCRIPT)


@dataclass(frozen=True)
class ServerMessage:
    """A parsed server message: ``kind`` is one of the names below, ``data`` the JSON."""

    kind: str  # ready | wait | error | language | segments | disconnect | end | unknown
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def segments(self) -> list[Segment]:
        return [Segment.from_wire(s) for s in self.data.get("segments", [])]


def parse_server_message(text: str | bytes) -> ServerMessage:
    """Classify one server frame; raises ProtocolError for one that is not a JSON object."""
    if isinstance(text, bytes):
        raise ProtocolError(f"server sent a binary frame ({len(text)} bytes)")
    data = _json(text, "server message")
    if not isinstance(data, dict):
        raise ProtocolError("server message is not a JSON object")
    status, message = data.get("status"), data.get("message")
    if status == WAIT:
        kind = "wait"
    elif status == ERROR:
        kind = "error"
    elif message == SERVER_READY:
        kind = "ready"
    elif message == DISCONNECT:
        kind = "disconnect"
    elif message == END_OF_TRANSCRIPT:
        kind = "end"
    elif "segments" in data:
        if not isinstance(data["segments"], list):
            raise ProtocolError("'segments' is not a list")
        kind = "segments"
    elif "language" in data:
        kind = "language"
    else:
        kind = "unknown"
    return ServerMessage(kind, data)


def uid_of(frame: str | bytes) -> str | None:
    """The uid of a config that failed validation, if it has one, to echo back."""
    try:
        data = json.loads(frame)
    except (ValueError, TypeError, RecursionError):
        return None
    uid = data.get("uid") if isinstance(data, dict) else None
    return uid[:MAX_UID_CHARS] if isinstance(uid, str) else None
