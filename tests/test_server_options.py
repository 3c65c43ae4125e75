"""Server options and the client config keys the server does not take from a client.

The real server with the real model: in this process (sharing one loaded
Transcriber) where the test drives the wire, and as a process where the
option is a command-line flag whose effect is the process's log.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest
from websockets.asyncio.client import connect

from earshot import audio
from earshot.server.app import Server
from earshot.server.config import ServerConfig, parse_config
from earshot.server.engine import Transcriber
from earshot.server.streaming import TranscriptStream
from earshot.server.window import WindowResult
from earshot.testing import wire
from earshot.testing.local import LocalServer
from earshot.testing.waiting import eventually_async, wait_for_sessions


@pytest.fixture(scope="module")
def transcriber() -> Transcriber:
    return Transcriber(device="cpu", workers=1)


@pytest.fixture
async def one_slot_server(transcriber: Transcriber) -> AsyncIterator[Server]:
    server = Server(ServerConfig(port=0, workers=1, max_clients=1), transcriber)
    await server.start()
    try:
        yield server
    finally:
        await server.drain()


# -- O22: what a WhisperLive client asks for in its config, the server ignores ----------

# What WhisperLive 0.10's client may send about the server itself.
CLIENT_ASKS = {"max_clients": 4, "max_connection_time": 1, "model": "large-v3"}


async def test_a_clients_max_clients_and_other_server_keys_are_ignored(
        one_slot_server: Server) -> None:
    url = f"ws://127.0.0.1:{one_slot_server.port}"
    async with connect(url) as first:
        await first.send(json.dumps(wire.config(uid="first", **CLIENT_ASKS)))
        ready = json.loads(await first.recv())
        assert ready["message"] == "SERVER_READY", ready
        # the server's own max_clients (1) applies, not the client's 4
        async with connect(url) as second:
            await second.send(json.dumps(wire.config(uid="second", **CLIENT_ASKS)))
            refused = json.loads(await second.recv())
        assert refused["status"] == "WAIT", refused
        # its own max_connection_time (600 s), not the client's 1 s: the slot frees
        # in about ten minutes
        assert 9.5 < refused["message"] <= 10, refused
        status = one_slot_server.status()
        assert status["model"] == one_slot_server.transcriber.model_name  # not large-v3
        assert status["model"].endswith("model") and "large" not in status["model"]


# -- S6: the last N completed segments, on the wire ---------------------------------------


async def test_segments_carry_the_last_n_completed_the_client_asked_for(
        one_slot_server: Server, speech_clip: Callable[[str], audio.Speech]) -> None:
    names = ["jfk.flac", "librivox_ss01_0870.wav", "librivox_ss01_0890.wav",
             "librivox_ss01_0920.wav"]
    samples = np.concatenate([speech_clip(n).samples for n in names])
    exchange = await wire.stream(f"ws://127.0.0.1:{one_slot_server.port}", samples,
                                 speed=None, uid="last-one", send_last_n_segments=1,
                                 timeout=60)
    assert exchange.final
    updates = [m.segments for m in exchange.of_kind("segments")]
    assert updates
    for segments in updates:
        assert sum(s.completed for s in segments) <= 1, segments
        assert sum(not s.completed for s in segments) <= 1, segments
    completed = {(s.start, s.text) for segments in updates for s in segments if s.completed}
    assert len(completed) >= 2, completed  # more than one, but never two in one update


# -- O11: the first pass, then 0.2 s more until a pass hears words -------------------------


def test_first_pass_seconds_comes_from_the_flag_and_the_early_step_is_0_2_s() -> None:
    settings = parse_config(["--first-pass-seconds", "1.5"], {}).stream_settings()
    assert settings.first_pass_seconds == 1.5
    stream = TranscriptStream(settings)
    stream.add_audio(audio.silence(1.4))
    assert not stream.wants_pass()
    stream.add_audio(audio.silence(0.1))
    assert stream.wants_pass()  # 1.5 s in: the first pass
    stream.apply(stream.next_job(), WindowResult(no_speech=True))  # heard nothing
    stream.add_audio(audio.silence(0.19))
    assert not stream.wants_pass()
    stream.add_audio(audio.silence(0.01))
    assert stream.wants_pass()  # 0.2 s more: the next pass (the default early step)


# -- O20: --log-level ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_log_level_warning_logs_warnings_only(jfk: np.ndarray) -> None:
    # The port is given: LocalServer finds a free one from the 'listening' line (info).
    with LocalServer("--log-level", "warning", port=free_port()) as srv:
        ok = await wire.stream(srv.ws_url, jfk[:8000], speed=None, uid="quiet")
        refused = await wire.stream(srv.ws_url, jfk[:1600], speed=None, uid="bad",
                                    language="xx")
        assert ok.final and refused.close_code == 1008
        await asyncio.to_thread(wait_for_sessions, srv, 0)
        await eventually_async(srv.log_text, lambda log: "client error" in log, timeout=5,
                               description="the refused config's warning in the log")
    lines = [line for line in srv.log_text().splitlines() if line.strip()]
    assert lines and all(" WARNING " in line or " ERROR " in line for line in lines), lines
    assert not any(e in srv.log_text() for e in ("listening", "session started", "ready"))
