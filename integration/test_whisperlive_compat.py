"""The exact message sequence WhisperLive 0.10's Python client sends, replayed."""

from __future__ import annotations

import asyncio
import json
import re
import uuid

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from earshot import audio
from earshot.testing.wer import wer
from earshot.testing.wire import QUIET_SECONDS

CHUNK = 4096  # samples per frame, as the WhisperLive client reads its input
THREE_DECIMALS = re.compile(r"^\d+\.\d{3}$")


def whisperlive_config(uid: str) -> str:
    """The on_open payload of WhisperLive 0.10's Client, key for key."""
    return json.dumps({
        "uid": uid,
        "language": "en",
        "task": "transcribe",
        "model": "small",  # the client's default; the server uses its own model
        "use_vad": True,
        "max_clients": 4,
        "max_connection_time": 600,
        "send_last_n_segments": 10,
        "no_speech_thresh": 0.45,
        "clip_audio": False,
        "same_output_threshold": 10,
        "initial_prompt": None,
    })


def whisperlive_frames(samples: np.ndarray) -> list[bytes]:
    """int16 PCM converted to float32 the way the client's bytes_to_float_array does."""
    pcm = np.clip(np.round(samples * 32767), -32768, 32767).astype(np.int16)
    return [
        (pcm[i : i + CHUNK].astype(np.float32) / 32768.0).tobytes()
        for i in range(0, len(pcm), CHUNK)
    ]


async def test_whisperlive_client_sequence(idle_server, manifest) -> None:
    uid = str(uuid.uuid4())
    replies = []
    async with connect(idle_server.ws_url, additional_headers=idle_server.auth_headers()) as ws:
        await ws.send(whisperlive_config(uid))
        replies.append(json.loads(await ws.recv()))
        for frame in whisperlive_frames(audio.load_clip("jfk.flac")):
            await ws.send(frame)
        await ws.send(b"END_OF_AUDIO")
        try:  # until the server closes; a server that never does fails at the end
            while True:
                replies.append(json.loads(await asyncio.wait_for(ws.recv(), QUIET_SECONDS)))
        except (ConnectionClosed, TimeoutError):
            pass
    assert replies[0]["message"] == "SERVER_READY"
    assert replies[0]["backend"] == "faster_whisper"
    assert all(r["uid"] == uid for r in replies), [r for r in replies if r.get("uid") != uid]
    updates = [r["segments"] for r in replies if "segments" in r]
    assert updates, (f"after END_OF_AUDIO the server closed (code {ws.close_code}) without "
                     f"sending any segments: all {len(manifest['jfk.flac'].reference.split())} "
                     "words lost")
    for segment in (s for update in updates for s in update):
        assert THREE_DECIMALS.match(segment["start"]) and THREE_DECIMALS.match(segment["end"])
        assert isinstance(segment["text"], str) and isinstance(segment["completed"], bool)
    # What WhisperLive's client shows: the last update's segments, completed or not.
    text = " ".join(s["text"] for s in updates[-1])
    assert wer(manifest["jfk.flac"].reference, text) <= 0.10, text
    assert ws.close_code == 1000, (f"after END_OF_AUDIO the server did not close normally: "
                                   f"close code {ws.close_code}")
