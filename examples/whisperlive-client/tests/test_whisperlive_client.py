"""WhisperLive 0.10's own Python client against earshot's real server.

The server is the container the plugin starts (``whisperlive_server``); the
speech is a manifest clip with its reference transcript (``speech_clip``);
every test runs under the leak guard, so a thread the client leaves fails it.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from whisper_live.client import Client

from earshot.testing.proxy import Proxy
from earshot.testing.waiting import eventually
from earshot.testing.wer import wer

CLIP = "jfk.flac"
RATE = 16_000
CHUNK = 4096  # samples a message, as WhisperLive's client sends a file
# The bundled tiny.en scores 0.0 on this clip whole-file; streamed, a word may differ.
MAX_WER = 0.15
FINAL_TIMEOUT = 30.0


def stream(client: Client, samples: np.ndarray, seconds: float | None = None) -> None:
    """Send ``samples`` (or their first ``seconds``) at real time, as a microphone would."""
    if seconds is not None:
        samples = samples[: int(seconds * RATE)]
    start = time.monotonic()
    for offset in range(0, len(samples), CHUNK):
        delay = start + offset / RATE - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing at real time, not a wait for a condition
        client.send_packet_to_server(samples[offset:offset + CHUNK].astype(np.float32).tobytes())


def final_transcript(client: Client) -> str:
    """END_OF_AUDIO, then the server's final segments; it closes after them."""
    client.send_packet_to_server(Client.END_OF_AUDIO.encode())
    eventually(lambda: not client.ws_thread.is_alive(), timeout=FINAL_TIMEOUT,
               description="the final transcript and the server's close "
                           "(WhisperLive's client thread ending)")
    return " ".join(segment["text"].strip() for segment in client.transcript)


def test_a_streamed_clip_comes_back_as_its_transcript(
        whisperlive_server, whisperlive_client, speech_clip) -> None:
    speech = speech_clip(CLIP)
    client = whisperlive_client(whisperlive_server.host, whisperlive_server.port)
    stream(client, speech.samples)
    text = final_transcript(client)
    assert wer(speech.reference, text) <= MAX_WER, f"heard {text!r}"


def test_the_same_over_a_cellular_link(
        whisperlive_server, proxy: Proxy, whisperlive_client, speech_clip) -> None:
    """150 ms each way with 50 ms jitter and 1 Mbit/s, through earshot's proxy."""
    proxy.apply_profile("cellular")
    speech = speech_clip(CLIP)
    client = whisperlive_client("127.0.0.1", proxy.port)
    stream(client, speech.samples)
    text = final_transcript(client)
    assert wer(speech.reference, text) <= MAX_WER, f"heard {text!r}"
    assert proxy.connections_total == 1  # it really went through the proxy


def test_closing_mid_stream_leaves_no_thread(
        whisperlive_server, whisperlive_client, speech_clip) -> None:
    """The client's own close_websocket() while audio flows: its connection
    thread ends (and the leak guard checks that nothing else stays)."""
    client = whisperlive_client(whisperlive_server.host, whisperlive_server.port)
    stream(client, speech_clip(CLIP).samples, seconds=2.0)
    client.close_websocket()
    assert not client.ws_thread.is_alive()


LEFT_OPEN = """
import pytest
from whisper_live.client import Client
from earshot.testing.waiting import eventually

kept = []

def test_leaves_its_client_open(whisperlive_server):
    client = Client(whisperlive_server.host, whisperlive_server.port, lang="en",
                    use_vad=False, log_transcription=False,
                    transcription_callback=lambda text, segments: None)
    kept.append(client)
    eventually(lambda: client.recording, description="SERVER_READY")

@pytest.mark.leaks_allowed("closes what the first test left")
def test_cleanup():
    kept.pop().close_websocket()
"""


def test_a_client_left_open_is_named_by_the_leak_guard(pytester: pytest.Pytester) -> None:
    """Without close, WhisperLive's connection thread stays: the guard fails that
    test and names the thread (an inner session, with its own server)."""
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\nearshot_leak_guard = true\n")
    pytester.makepyfile(test_left_open=LEFT_OPEN)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider",
                                           timeout=240)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_leaves_its_client_open*",
                                 "*still held*", "*thread '*run_forever*'*"])
