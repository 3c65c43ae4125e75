"""Bad input gets a clear ERROR and a meaningful close; the server keeps serving.

Against the suite's shared server (its handshake timeout is 2 s, see
``earshot/plugin/server.py``); the keepalive case is in test_capacity_and_limits.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from earshot import protocol
from earshot.protocol import CloseCode
from earshot.testing import wire
from earshot.testing.waiting import wait_for_sessions_async
from earshot.testing.wer import wer

CONFIG = json.dumps(wire.config(uid=wire.uid("bad")))
AUDIO = protocol.encode_audio(np.zeros(1600, dtype=np.float32))

# name -> (frames to send, words the ERROR must contain, close code)
BAD_INPUTS: dict[str, tuple[Sequence[str | bytes], str, CloseCode]] = {
    "not json": (["{uid: nope"], "not valid JSON", CloseCode.POLICY),
    "json array": (["[1, 2, 3]"], "must be a JSON object", CloseCode.POLICY),
    "missing uid": (['{"language": "en"}'], "needs 'uid'", CloseCode.POLICY),
    "wrong type": (['{"uid": "bad", "use_vad": "yes"}'], "'use_vad' must be a boolean",
                   CloseCode.POLICY),
    "unknown task": (['{"uid": "bad", "task": "poem"}'], "unknown task", CloseCode.POLICY),
    "unknown language": (['{"uid": "bad", "language": "xx"}'], "only 'en', not 'xx'",
                         CloseCode.POLICY),
    "language the model lacks": (['{"uid": "bad", "language": "de"}'], "only 'en', not 'de'",
                                 CloseCode.POLICY),
    "unknown format": (['{"uid": "bad", "audio_format": "mp3"}'], "unknown audio_format",
                       CloseCode.POLICY),
    "deeply nested config": (["[" * 20_000 + "]" * 20_000], "nested too deeply",
                             CloseCode.POLICY),
    "number too long": (['{"uid": "bad", "send_last_n_segments": ' + "9" * 5000 + "}"],
                        "number too long", CloseCode.POLICY),
    "int16 values sent as float32": ([CONFIG, np.array([0, 12000, -8000], "<f4").tobytes()],
                                     '"audio_format": "int16"', CloseCode.POLICY),
    "huge config": ([json.dumps({"uid": "bad", "pad": "x" * 70_000})], "65536-byte limit",
                    CloseCode.TOO_BIG),
    "audio first": ([AUDIO], "send the config before any audio", CloseCode.POLICY),
    "text mid-stream": ([CONFIG, AUDIO, "hello"], "unexpected text frame", CloseCode.POLICY),
    "partial sample": ([CONFIG, AUDIO[:-1]], "not a whole number", CloseCode.POLICY),
    "nan samples": ([CONFIG, np.array([0, np.nan], "<f4").tobytes()], "NaN or infinite",
                    CloseCode.POLICY),
    "inf samples": ([CONFIG, np.array([np.inf, 0], "<f4").tobytes()], "NaN or infinite",
                    CloseCode.POLICY),
    "huge frame": ([CONFIG, b"\x00" * (1024 * 1024 + 4)], "over the 1048576-byte limit",
                   CloseCode.TOO_BIG),
}


async def exchange(server, frames: Sequence[str | bytes]) -> tuple[list, int | None, str]:
    """Send ``frames``, then read until the server closes."""
    messages = []
    async with asyncio.timeout(15), connect(server.ws_url, max_size=None,
                                            additional_headers=server.auth_headers()) as ws:
        try:
            for frame in frames:
                await ws.send(frame)
            async for text in ws:
                messages.append(protocol.parse_server_message(text))
        except ConnectionClosed:
            pass
        return messages, ws.close_code, ws.close_reason or ""


@pytest.mark.parametrize("case", list(BAD_INPUTS))
@pytest.mark.extension("close_codes")
async def test_bad_input_gets_error_and_close_code(idle_server, case) -> None:
    frames, words, code = BAD_INPUTS[case]
    messages, close_code, reason = await exchange(idle_server, frames)
    errors = [m for m in messages if m.kind == "error"]
    assert errors, f"no ERROR for {case}; got {[m.data for m in messages]}"
    assert words in errors[-1].data["message"]
    assert close_code == code, (close_code, reason)
    if frames and frames[0] == CONFIG:
        assert all(m.data["uid"] == wire.uid("bad") for m in messages)


@pytest.mark.extension("close_codes")
async def test_config_never_sent_times_out(idle_server) -> None:
    messages, close_code, _ = await exchange(idle_server, [])
    assert [m.kind for m in messages] == ["error"]
    assert "no config received within" in messages[0].data["message"]
    assert close_code == CloseCode.POLICY


@pytest.mark.extension("status")
async def test_client_that_aborts_mid_stream_is_freed(idle_server) -> None:
    ws = await connect(idle_server.ws_url, additional_headers=idle_server.auth_headers())
    await ws.send(CONFIG)
    await ws.recv()
    await ws.send(AUDIO)
    await wait_for_sessions_async(idle_server, 1, uids={wire.uid("bad")})
    ws.transport.abort()  # no close frame, no FIN handshake: the client is just gone
    await wait_for_sessions_async(idle_server, 0, uids={wire.uid("bad")}, timeout=5)


@pytest.mark.extension("end_of_transcript")
async def test_healthy_stream_is_unharmed_by_every_bad_client(idle_server, manifest, jfk) -> None:
    # Twice real time: live while the bad clients come and go (they are done in a
    # second or two), in half the time and passes of the speaker's own pace.
    healthy = asyncio.create_task(wire.stream(idle_server.ws_url, jfk, speed=2.0,
                                              uid=wire.uid("good"),
                                              headers=idle_server.auth_headers()))
    bad = [exchange(idle_server, frames) for frames, _, _ in BAD_INPUTS.values()]
    bad.append(exchange(idle_server, []))  # never sends a config
    results = await asyncio.gather(*bad)
    transcript = await healthy
    assert all(code in (CloseCode.POLICY, CloseCode.TOO_BIG) for _, code, _ in results)
    assert transcript.final and transcript.close_code == CloseCode.NORMAL
    assert wer(manifest["jfk.flac"].reference, transcript.text) <= 0.10, transcript.text
