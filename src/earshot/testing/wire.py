"""Drive a server at the wire level: one stream in, every message out, timed.

This is deliberately no client library (that is :mod:`earshot.client`): it
sends exactly the frames a test means, malformed configs included, and keeps
every reply. It still drives the protocol's ``ClientConnection``, so what
counts as ready, final or refused, and the folding of segments, are the
client's own rules; a reply out of order is recorded in ``violations``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection as WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from earshot import audio
from earshot.client.ids import PROCESS_PREFIX, new_id
from earshot.protocol import (
    AudioFormat,
    ClientConnection,
    ClientState,
    InvalidState,
    ProtocolError,
    Segment,
    ServerMessage,
    Transcript,
)

# After END_OF_AUDIO, a server silent this long has said all it will say.
QUIET_SECONDS = 10.0


def uid(name: str) -> str:
    """A readable uid that still marks the session as this process's own."""
    return f"{PROCESS_PREFIX}-{name}"


def is_own(uid: str) -> bool:
    """Whether this process sent ``uid`` (through the client or these helpers):
    on a shared server, the sessions a test run may count as its own."""
    return uid.startswith(PROCESS_PREFIX)


@dataclass
class Exchange:
    """Everything one stream got back, with monotonic receive times."""

    messages: list[tuple[float, ServerMessage]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)  # replies the protocol refused
    first_audio_at: float | None = None
    end_of_audio_at: float | None = None
    close_code: int | None = None
    close_reason: str = ""
    closed_at: float | None = None  # when the connection ended (None: still open)

    def of_kind(self, kind: str) -> list[ServerMessage]:
        return [m for _, m in self.messages if m.kind == kind]

    def first_time(self, kind: str, nonempty: bool = False) -> float | None:
        for at, m in self.messages:
            if m.kind == kind and (not nonempty or any(s.text.strip() for s in m.segments)):
                return at
        return None

    @property
    def accepted(self) -> bool:
        """The server answered the config with SERVER_READY (one the protocol took)."""
        return bool(self.of_kind("ready"))

    @property
    def session_id(self) -> str | None:
        ready = self.of_kind("ready")
        return ready[0].data.get("session_id") if ready else None

    @property
    def completed(self) -> list[Segment]:
        """Every completed segment seen in any update, in order, once each."""
        return Transcript.fold(m.segments for m in self.of_kind("segments")).completed

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.completed)

    @property
    def heard(self) -> str:
        """The completed segments plus the latest update's unfinished ones: all the
        text a client has, also from a server that never marks its last segment
        completed (one without END_OF_TRANSCRIPT)."""
        updates = self.of_kind("segments")
        done = self.completed
        last_end = done[-1].end if done else -1.0
        tail = [s for s in (updates[-1].segments if updates else [])
                if not s.completed and s.start >= last_end - 0.05]
        return " ".join(s.text.strip() for s in [*done, *tail] if s.text.strip())

    @property
    def final(self) -> bool:
        return bool(self.of_kind("end"))

    def latency(self, start: float | None, end: float | None) -> float | None:
        return None if start is None or end is None else end - start


def config(uid: str | None = None, **overrides: Any) -> dict[str, Any]:
    """The config WhisperLive 0.10's client sends, with ``overrides`` applied."""
    data = {
        "uid": uid or new_id(),
        "language": "en",
        "task": "transcribe",
        "model": "tiny.en",
        "use_vad": False,
        "send_last_n_segments": 10,
        "no_speech_thresh": 0.45,
        "clip_audio": False,
        "same_output_threshold": 10,
    }
    data.update(overrides)
    return data


def record(exchange: Exchange, connection: ClientConnection, frame: str | bytes) -> None:
    """Keep one reply: in ``messages`` when the protocol takes it, else in ``violations``."""
    try:
        event = connection.receive(frame)
    except ProtocolError as exc:
        exchange.violations.append(exc.message)
        return
    exchange.messages.append((time.monotonic(), event.message))


async def receive_all(ws: WebSocket, exchange: Exchange, connection: ClientConnection) -> None:
    """Collect every message until the server closes."""
    async for frame in ws:
        record(exchange, connection, frame)
    exchange.closed_at = time.monotonic()


async def stream(
    url: str,
    samples: np.ndarray,
    *,
    speed: float | None = 1.0,
    chunk_ms: float = 100.0,
    audio_format: AudioFormat = AudioFormat.FLOAT32,
    headers: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    quiet: float = QUIET_SECONDS,
    **config_overrides: Any,
) -> Exchange:
    """Stream ``samples`` (paced at ``speed`` x real time; None: as fast as possible),
    send END_OF_AUDIO and collect replies until the server closes, or until it
    has sent nothing for ``quiet`` seconds (a server without END_OF_TRANSCRIPT
    may never close; ``close_code`` then stays None)."""
    exchange = Exchange()
    cfg = config(**config_overrides)
    if audio_format is not AudioFormat.FLOAT32:
        cfg["audio_format"] = audio_format.value
    connection = ClientConnection(str(cfg["uid"]))
    async with asyncio.timeout(timeout), connect(
        url, additional_headers=headers, max_size=None, open_timeout=10
    ) as ws:
        await ws.send(connection.send_config(cfg))
        record(exchange, connection, await ws.recv())
        if connection.state is not ClientState.STREAMING:
            await ws.wait_closed()
        else:
            receiver = asyncio.create_task(receive_all(ws, exchange, connection))
            try:
                await _send_audio(ws, exchange, connection, samples, speed, chunk_ms)
                await _closed_or_quiet(receiver, exchange, quiet)
            finally:
                receiver.cancel()
                await asyncio.gather(receiver, return_exceptions=True)
        exchange.close_code = ws.close_code
        exchange.close_reason = ws.close_reason or ""
    return exchange


async def _closed_or_quiet(receiver: asyncio.Task[None], exchange: Exchange,
                           quiet: float) -> None:
    """Until the receiver ends (the server closed) or a ``quiet`` window passes
    without a message."""
    while True:
        seen = len(exchange.messages)
        done, _ = await asyncio.wait({receiver}, timeout=quiet)
        if done:
            receiver.result()
            return
        if len(exchange.messages) == seen:
            return


async def _send_audio(
    ws: WebSocket,
    exchange: Exchange,
    connection: ClientConnection,
    samples: np.ndarray,
    speed: float | None,
    chunk_ms: float,
) -> None:
    """Send the audio, then END_OF_AUDIO; stops quietly once the server has ended
    the session (DISCONNECT, ERROR: the replies tell why) or closed."""
    pieces = audio.chunks(samples, chunk_ms)
    source = audio.paced(pieces, speed) if speed is not None else _aiter(pieces)
    try:
        async for piece in source:
            exchange.first_audio_at = exchange.first_audio_at or time.monotonic()
            await ws.send(connection.send_audio(piece))
        exchange.end_of_audio_at = time.monotonic()
        await ws.send(connection.send_end_of_audio())
    except (ConnectionClosed, InvalidState):
        pass


async def _aiter(items: list[np.ndarray]) -> Any:
    for item in items:
        yield item
