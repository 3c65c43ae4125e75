"""What only the container can show: the image built, labelled, started, drained on
stop, restarted on the same published port, paused and killed.

These need the container target (``server_image`` skips elsewhere); the
scenarios that work on any target are in the other modules.
"""

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
from earshot.testing.waiting import eventually, wait_for_container_status
from earshot.testing.wer import wer

JFK = "jfk.flac"


@pytest.fixture
def container(server_image: str, server_factory) -> WhisperLiveContainer:
    """A container of the test's own (the container target only)."""
    return server_factory()


def test_the_container_is_labelled_and_published_on_loopback_only(server, server_image) -> None:
    assert isinstance(server, WhisperLiveContainer)
    assert server.get_wrapped_container().labels.get("org.earshot.managed") == "true"
    assert server.port_bindings() == [{"HostIp": "127.0.0.1", "HostPort": str(server.port)}]
    assert server.ws_url == f"ws://127.0.0.1:{server.port}"


async def test_stop_drains_the_session_and_exits_0(container) -> None:
    async with connect(container.ws_url, additional_headers=container.auth_headers()) as ws:
        await ws.send(json.dumps(wire.config(uid=wire.uid("drained"))))
        assert protocol.parse_server_message(await ws.recv()).kind == "ready"
        await ws.send(protocol.encode_audio(audio.load_clip(JFK)[:32000]))
        result: dict[str, float | int] = {}

        def stop() -> None:
            started = time.monotonic()
            result["code"] = container.stop()
            result["seconds"] = time.monotonic() - started

        stopper = threading.Thread(target=stop)
        stopper.start()
        kinds = [protocol.parse_server_message(m).kind async for m in ws]
        await asyncio.to_thread(stopper.join, 15)
    assert kinds and kinds[-1] == "disconnect"
    assert ws.close_code == CloseCode.GOING_AWAY
    assert result["code"] == 0
    assert result["seconds"] < 5


async def test_restart_keeps_serving_on_the_same_url(container) -> None:
    samples, url, headers = audio.load_clip(JFK), container.ws_url, container.auth_headers()
    first = await wire.stream(url, samples, speed=None, headers=headers)
    await asyncio.to_thread(container.restart)
    second = await wire.stream(url, samples, speed=None, headers=headers)
    await asyncio.to_thread(container.kill)
    await asyncio.to_thread(container.start)
    third = await wire.stream(url, samples, speed=None, headers=headers)
    assert container.ws_url == url
    assert first.final and second.final and third.final
    assert len({first.session_id, second.session_id, third.session_id}) == 3
    assert wer(audio.load_manifest()[JFK].reference, third.text) <= 0.10


def test_stopped_container_starts_again(container) -> None:
    assert container.stop() == 0
    assert container.exit_code() == 0
    container.start()
    assert container.get("/readyz")[0] == 200


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


def test_pause_kill_and_their_effects(container) -> None:
    container.pause()
    wait_for_container_status(container, "paused")
    with pytest.raises(OSError):  # a frozen server answers nothing
        container.get("/readyz", timeout=0.5)
    container.unpause()
    assert container.get("/readyz")[0] == 200
    container.kill()
    wait_for_container_status(container, "exited")
    assert container.exit_code() == 137
