"""The real server with the real model, driven over a real socket."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from websockets.asyncio.client import connect

from earshot import audio, protocol
from earshot.protocol import AudioFormat
from earshot.testing import wire
from earshot.testing.waiting import eventually, eventually_async, wait_for_sessions
from earshot.testing.wer import wer

CLIPS = ["jfk.flac", "librivox_ss01_0870.wav", "librivox_ss01_0890.wav", "librivox_ss01_0920.wav"]
MAX_WER = 0.10


async def test_handshake_gives_server_ready_with_a_session_id(idle_server) -> None:
    async with connect(idle_server.ws_url) as ws:
        await ws.send(json.dumps(wire.config(uid="hello")))
        ready = protocol.parse_server_message(await ws.recv())
    assert ready.kind == "ready"
    assert ready.data["uid"] == "hello"
    assert ready.data["backend"] == "faster_whisper"
    assert len(ready.data["session_id"]) == 32


async def test_session_ids_are_unique_per_connection(idle_server) -> None:
    async def session_id() -> str:
        async with connect(idle_server.ws_url) as ws:
            await ws.send(json.dumps(wire.config(uid="same")))
            return protocol.parse_server_message(await ws.recv()).data["session_id"]

    ids = await asyncio.gather(*(session_id() for _ in range(8)))
    assert len(set(ids)) == 8


@pytest.mark.parametrize("clip", CLIPS)
async def test_real_time_stream_transcribes_clip(idle_server, manifest, clip) -> None:
    transcript = await wire.stream(idle_server.ws_url, audio.load_clip(clip), speed=1.0)
    score = wer(manifest[clip].reference, transcript.text)
    assert score <= MAX_WER, f"WER {score:.3f} for {clip}: {transcript.text!r}"
    assert transcript.first_time("segments", nonempty=True) is not None


async def test_end_of_audio_makes_the_transcript_final(idle_server, jfk) -> None:
    transcript = await wire.stream(idle_server.ws_url, jfk, speed=None)
    kinds = [m.kind for _, m in transcript.messages]
    assert kinds[0] == "ready"
    assert kinds[-1] == "end", kinds
    assert kinds.count("end") == 1
    last_update = transcript.of_kind("segments")[-1]
    assert last_update.segments and all(s.completed for s in last_update.segments)
    assert transcript.close_code == 1000


async def test_audio_faster_than_real_time_loses_nothing(idle_server, manifest) -> None:
    # All four clips back to back, sent as fast as the socket takes them.
    samples = np.concatenate([audio.load_clip(c) for c in CLIPS] + [audio.silence(1)])
    transcript = await wire.stream(idle_server.ws_url, samples, speed=None)
    reference = " ".join(manifest[c].reference for c in CLIPS)
    assert transcript.final
    assert wer(reference, transcript.text) <= MAX_WER, transcript.text


@pytest.mark.parametrize("fmt", [AudioFormat.INT16, AudioFormat.UINT8])
async def test_integer_audio_formats(idle_server, manifest, jfk, fmt) -> None:
    transcript = await wire.stream(idle_server.ws_url, jfk, speed=None, audio_format=fmt)
    # uint8 is 8-bit audio: noisier, so allow a little more error.
    limit = MAX_WER if fmt is AudioFormat.INT16 else 0.2
    assert wer(manifest["jfk.flac"].reference, transcript.text) <= limit, transcript.text


async def test_language_detection_request_gets_a_language_message(idle_server, jfk) -> None:
    transcript = await wire.stream(idle_server.ws_url, jfk[:48000], speed=None, language=None)
    languages = transcript.of_kind("language")
    assert len(languages) == 1
    assert languages[0].data["language"] == "en"
    assert 0 < languages[0].data["language_prob"] <= 1


async def test_vad_stream_skips_silence_and_keeps_speech(idle_server, manifest, jfk) -> None:
    samples = np.concatenate([audio.silence(3), jfk, audio.silence(3)])
    transcript = await wire.stream(idle_server.ws_url, samples, speed=None, use_vad=True)
    assert wer(manifest["jfk.flac"].reference, transcript.text) <= MAX_WER, transcript.text
    assert all(s.start >= 2.0 for s in transcript.completed)


async def test_status_lists_a_streaming_session_then_drops_it(idle_server, jfk) -> None:
    async with connect(idle_server.ws_url) as ws:
        await ws.send(json.dumps(wire.config(uid="watched")))
        session_id = protocol.parse_server_message(await ws.recv()).data["session_id"]
        await ws.send(protocol.encode_audio(jfk[:32000]))
        status = await eventually_async(
            lambda: asyncio.to_thread(idle_server.status),
            lambda s: any(x["audio_seconds"] >= 2.0 for x in s["sessions"]),
            description="the session's 2 s of audio in /status",
        )
    [session] = status["sessions"]
    assert session["uid"] == "watched" and session["session_id"] == session_id
    assert session["age_seconds"] > 0 and session["backlog_seconds"] >= 0
    assert status["capacity"]["active"] == 1
    wait_for_sessions(idle_server, 0)


def test_http_endpoints(server) -> None:
    assert server.get("/healthz") == (200, b"ok\n")
    assert server.get("/readyz") == (200, b"ready\n")
    status = server.status()
    assert {"version", "model", "device", "compute_type", "capacity", "sessions"} <= set(status)
    assert (status["device"], status["compute_type"]) == ("cpu", "int8")
    code, body = server.get("/metrics")
    assert code == 200 and b"earshot_sessions_active" in body
    code, body = server.get("/nope")
    assert code == 404 and b"/status" in body


async def test_one_log_line_per_connection_event_with_ids(idle_server, jfk) -> None:
    transcript = await wire.stream(idle_server.ws_url, jfk[:16000], speed=None, uid="logged")
    sid = transcript.session_id
    lines = eventually(
        lambda: [line for line in idle_server.log_text().splitlines() if sid in line],
        lambda found: len(found) >= 2,
        description="start and end log lines for the session",
    )
    assert "session started" in lines[0] and "uid=logged" in lines[0]
    assert "session ended" in lines[-1] and "outcome=complete" in lines[-1]
