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
    """The suite's shared container (a worker's handle of it, under xdist), as Docker
    reports it."""
    assert server.get_wrapped_container().labels.get("org.earshot.managed") == "true"
    assert server.port_bindings() == [{"HostIp": "127.0.0.1", "HostPort": str(server.port)}]
    assert server.ws_url == f"ws://127.0.0.1:{server.port}"


def test_the_server_runs_as_an_unprivileged_user(server, server_image) -> None:
    """The image's user is not root, and the server process runs as it."""
    assert server.get_wrapped_container().attrs["Config"]["User"] not in ("", "0", "root")
    code, out = server.exec(["id", "-u"])
    assert code == 0 and int(out) != 0, out
    code, out = server.exec(["stat", "-c", "%u", "/proc/1"])  # the server: the entrypoint
    assert code == 0 and int(out) != 0, out


def test_start_returns_once_readyz_answers_200_with_the_model_loaded(server_image) -> None:
    """Readiness is /readyz answering 200, which the server does once its model is
    loaded: the moment start() returns, both hold."""
    with WhisperLiveContainer(server_image) as fresh:
        assert fresh.get("/readyz")[0] == 200
        status = fresh.server_status()
        assert status["model"] and status["device"] == "cpu"


def test_a_server_never_ready_fails_at_its_deadline_saying_what_was_awaited(
        server_image) -> None:
    """A server that never answers /readyz (here: it listens on another port) fails
    start() at startup_timeout, naming what was awaited, its state and its logs."""
    started = time.monotonic()
    with pytest.raises(ContainerNotReady) as caught, WhisperLiveContainer(
        server_image, port=9091, startup_timeout=3
    ):
        pass
    took = time.monotonic() - started
    message = str(caught.value)
    assert "not ready within 3 s" in message and "GET /readyz answering 200" in message
    assert "(status running" in message and "listening" in message
    assert took < 30, f"gave up after {took:.1f} s, not at its 3 s deadline"


async def test_stop_drains_the_session_and_exits_0(container) -> None:
    async with connect(container.ws_url, additional_headers=container.auth_headers()) as ws:
        await ws.send(json.dumps(wire.config(uid=wire.uid("drained"))))
        assert protocol.parse_server_message(await ws.recv()).kind == "ready"
        await ws.send(protocol.encode_audio(audio.load_clip(JFK)[:32000]))
        result: dict[str, float | int] = {}

        def stop() -> None:
            started = time.monotonic()
            result["code"] = container.terminate()
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
    """After a restart and after kill then start, Docker publishes the server on the
    same host port, on loopback only (asked of Docker each time, not of the object)."""
    samples, url, headers = audio.load_clip(JFK), container.ws_url, container.auth_headers()
    published = [{"HostIp": "127.0.0.1", "HostPort": str(container.port)}]
    first = await wire.stream(url, samples, speed=None, headers=headers)
    await asyncio.to_thread(container.restart)
    assert container.port_bindings() == published
    second = await wire.stream(url, samples, speed=None, headers=headers)
    await asyncio.to_thread(container.kill)
    await asyncio.to_thread(container.start)
    assert container.port_bindings() == published
    third = await wire.stream(url, samples, speed=None, headers=headers)
    assert container.ws_url == url
    assert first.final and second.final and third.final
    assert len({first.session_id, second.session_id, third.session_id}) == 3
    assert wer(audio.load_manifest()[JFK].reference, third.text) <= 0.10


def test_stopped_container_starts_again(container) -> None:
    published = [{"HostIp": "127.0.0.1", "HostPort": str(container.port)}]
    assert container.terminate() == 0
    assert container.exit_code() == 0
    container.start()
    assert container.get("/readyz")[0] == 200
    assert container.port_bindings() == published


def test_containers_are_labelled_and_removed(server_image: str) -> None:
    with WhisperLiveContainer(server_image) as server:
        container_id = server.get_wrapped_container().id
        assert container_id in labelled_containers()
    eventually(labelled_containers, lambda ids: container_id not in ids,
               description=f"container {container_id[:12]} to be removed")


def test_a_server_that_cannot_start_fails_with_its_logs(server_image: str) -> None:
    """It gives up as soon as the container exits, long before its 60 s deadline."""
    started = time.monotonic()
    with pytest.raises(ContainerNotReady) as caught, WhisperLiveContainer(
        server_image, device="tpu"
    ):
        pass
    took = time.monotonic() - started
    message = str(caught.value)
    assert "exited with 2 while awaiting GET /readyz answering 200" in message
    assert "(status exited" in message
    assert "--device: unknown device 'tpu'" in message
    assert took < 30, f"gave up after {took:.1f} s: it waited for the deadline"


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
