"""The server image in a container: transcribe, drain on stop, survive restarts."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from websockets.asyncio.client import connect

from earshot import audio, protocol
from earshot.protocol import CloseCode
from earshot.testing import wire
from earshot.testing.container import (
    ContainerNotReady,
    WhisperLiveContainer,
    labelled_containers,
)
from earshot.testing.waiting import eventually, wait_for_container_status, wait_for_sessions
from earshot.testing.wer import wer

JFK = "jfk.flac"


async def test_server_transcribes_speech(server) -> None:
    clip = audio.load_manifest()[JFK]
    transcript = await wire.stream(server.ws_url, audio.load_clip(JFK), speed=1.0)
    assert transcript.final and transcript.close_code == CloseCode.NORMAL
    assert wer(clip.reference, transcript.text) <= 0.10, transcript.text
    wait_for_sessions(server, 0)


def test_server_reports_its_model_and_health(server, device) -> None:
    assert server.get("/healthz") == (200, b"ok\n")
    assert server.get("/readyz")[0] == 200
    status = server.status()
    assert status["capacity"]["max_clients"] >= 1 and status["model"]
    if device is not None:
        assert status["device"] == device
        assert status["compute_type"] == ("float16" if device == "cuda" else "int8")


def test_the_container_is_labelled(server, server_image) -> None:
    assert isinstance(server, WhisperLiveContainer)
    assert server.get_wrapped_container().labels.get("org.earshot.managed") == "true"


async def test_stop_drains_the_session_and_exits_0(own_container: WhisperLiveContainer) -> None:
    async with connect(own_container.ws_url) as ws:
        await ws.send(json.dumps(wire.config(uid="drained")))
        assert protocol.parse_server_message(await ws.recv()).kind == "ready"
        await ws.send(protocol.encode_audio(audio.load_clip(JFK)[:32000]))
        result: dict[str, float | int] = {}

        def stop() -> None:
            started = time.monotonic()
            result["code"] = own_container.stop()
            result["seconds"] = time.monotonic() - started

        stopper = threading.Thread(target=stop)
        stopper.start()
        kinds = [protocol.parse_server_message(m).kind async for m in ws]
        await asyncio.to_thread(stopper.join, 15)
    assert kinds and kinds[-1] == "disconnect"
    assert ws.close_code == CloseCode.GOING_AWAY
    assert result["code"] == 0
    assert result["seconds"] < 5


async def test_restart_keeps_serving(own_container: WhisperLiveContainer) -> None:
    samples = audio.load_clip(JFK)
    first = await wire.stream(own_container.ws_url, samples, speed=None)
    own_container.restart()
    second = await wire.stream(own_container.ws_url, samples, speed=None)
    assert first.final and second.final
    assert first.session_id != second.session_id
    assert wer(audio.load_manifest()[JFK].reference, second.text) <= 0.10


def test_stopped_container_starts_again(own_container: WhisperLiveContainer) -> None:
    assert own_container.stop() == 0
    assert own_container.exit_code() == 0
    own_container.start()
    assert own_container.get("/readyz")[0] == 200


def test_containers_are_labelled_and_removed(server_image: str) -> None:
    with WhisperLiveContainer(server_image) as server:
        container_id = server.get_wrapped_container().id
        assert container_id in labelled_containers()
    eventually(labelled_containers, lambda ids: container_id not in ids,
               description=f"container {container_id[:12]} to be removed")


def test_a_server_that_cannot_start_fails_with_its_logs(server_image: str) -> None:
    with pytest.raises(ContainerNotReady) as caught, WhisperLiveContainer(
        server_image, device="tpu"
    ):
        pass
    message = str(caught.value)
    assert "exited with 2" in message
    assert "--device: unknown device 'tpu'" in message


def test_pause_kill_and_their_effects(own_container: WhisperLiveContainer) -> None:
    own_container.pause()
    wait_for_container_status(own_container, "paused")
    with pytest.raises(OSError):  # a frozen server answers nothing
        own_container.get("/readyz", timeout=0.5)
    own_container.unpause()
    assert own_container.get("/readyz")[0] == 200
    own_container.kill()
    wait_for_container_status(own_container, "exited")
    assert own_container.exit_code() == 137
