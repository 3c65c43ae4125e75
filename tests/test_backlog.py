"""--max-backlog-seconds: past that much untranscribed audio the server stops
reading the session's socket (TCP back-pressure), and nothing is dropped.

The real server in this process with the real model; its passes are held on
an Event for a while (the Transcriber's ``transcribe`` wrapped to wait first:
the only stand-in), so the backlog builds up as fast as the client can send.
The keepalive is short (0.5 s + 0.5 s), so a server that timed its client out
while not reading from it would do so well within the hold.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from earshot import audio
from earshot.protocol import CloseCode
from earshot.server.app import Server
from earshot.server.config import MIN_BACKLOG_SECONDS, ConfigError, ServerConfig, parse_config
from earshot.server.engine import Transcriber
from earshot.server.streaming import StreamSettings
from earshot.server.window import MAX_WINDOW_SECONDS
from earshot.testing import wire
from earshot.testing.waiting import eventually_async
from earshot.testing.wer import wer

MAX_BACKLOG = float(MIN_BACKLOG_SECONDS)  # the least the server accepts
CLIPS = ["jfk.flac", "librivox_ss01_0870.wav", "librivox_ss01_0890.wav",
         "librivox_ss01_0920.wav"] * 2  # 59 s sent at full speed, twice the backlog limit
HOLD = 2.0  # seconds the passes are held once the limit is reached (> the keepalive's 1 s)


@pytest.fixture(scope="module")
def transcriber() -> Transcriber:
    return Transcriber(device="cpu", workers=1)


async def test_over_the_backlog_limit_the_server_stops_reading_and_drops_nothing(
        transcriber: Transcriber, speech_clip: Callable[[str], audio.Speech],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    gate = threading.Event()
    real = transcriber.transcribe

    def held(*args: Any, **kwargs: Any) -> Any:
        assert gate.wait(30), "the test never released the passes"
        return real(*args, **kwargs)

    monkeypatch.setattr(transcriber, "transcribe", held)
    clips = [speech_clip(name) for name in CLIPS]
    samples = np.concatenate([c.samples for c in clips])
    server = Server(ServerConfig(port=0, workers=1, max_backlog_seconds=MAX_BACKLOG,
                                 ping_interval=0.5, ping_timeout=0.5), transcriber)
    await server.start()
    caplog.set_level(logging.INFO, logger="earshot.server")
    try:
        streaming = asyncio.create_task(wire.stream(
            f"ws://127.0.0.1:{server.port}", samples, speed=None, uid="backlog", timeout=90))

        def read_seconds() -> float:
            sessions = server.status()["sessions"]
            return sessions[0]["audio_seconds"] if sessions else 0.0

        await eventually_async(read_seconds, lambda s: s >= MAX_BACKLOG, timeout=20,
                               description="the session's backlog at the limit")
        most = 0.0
        held_since = time.monotonic()

        def held_for() -> float:
            nonlocal most
            most = max(most, read_seconds())
            return time.monotonic() - held_since

        await eventually_async(held_for, lambda t: t >= HOLD, timeout=HOLD + 5,
                               description=f"{HOLD} s of held passes", max_interval=0.05)
        assert not streaming.done(), "the stream ended while its audio was held"
        # one 0.1 s frame past the limit is read before the reader stops
        assert most <= MAX_BACKLOG + 0.1 + 1e-6, most
        gate.set()
        exchange = await asyncio.wait_for(streaming, 90)
    finally:
        gate.set()
        await server.drain()
    assert exchange.close_code == CloseCode.NORMAL, (exchange.close_code, exchange.close_reason)
    assert exchange.final
    ended = [r for r in caplog.records if r.getMessage() == "session ended"]
    assert [r.fields["audio_seconds"] for r in ended] == [round(len(samples) / 16000, 3)]
    assert wer(" ".join(c.reference for c in clips), exchange.text) <= 0.15, exchange.text


def test_a_backlog_limit_below_a_window_and_a_step_is_refused() -> None:
    """Reading stops at the limit; a window must then still move on without new
    audio, which only a full window (and a pass's step) in the backlog guarantees.
    Below that, a session whose held audio has no completed segment yet stopped for
    good (seen with 8 s of jfk: no pass, no read, until max_connection_time)."""
    assert parse_config(["--max-backlog-seconds", str(MIN_BACKLOG_SECONDS)],
                        {}).max_backlog_seconds == MIN_BACKLOG_SECONDS
    assert MAX_WINDOW_SECONDS + StreamSettings().step_seconds <= MIN_BACKLOG_SECONDS
    with pytest.raises(ConfigError, match=rf"--max-backlog-seconds: must be at least "
                                          rf"{MIN_BACKLOG_SECONDS:g}\b"):
        parse_config(["--max-backlog-seconds", "8"], {})
