"""The CUDA image on a host without a GPU.

The image builds anywhere (its CUDA 12 libraries come from wheels). Started
without a GPU, ``--device cuda`` (also the image's default: EARSHOT_DEVICE=cuda)
stops at once with exit code 2 and one line naming the missing GPU, and
``--device auto`` serves on the CPU and says so in /status. These containers
are given no GPU, so both hold on a GPU host too. The image is built at
collection (``whisperlive_cuda_image`` in earshot/plugin/server.py), outside every test's
timeout; the tests need the container target.

``make integration`` (the job of every change) leaves them out (``-m "not
cuda_image"``): on a fresh machine the image's build alone takes minutes. ``make
test`` and the GPU runner's ``make integration-gpu`` run them.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from earshot import audio
from earshot.testing import wire
from earshot.testing.container import LABEL, OWNER, ContainerNotReady, WhisperLiveContainer
from earshot.testing.wer import wer

JFK = "jfk.flac"
NO_GPU = "earshot-server: --device cuda: no CUDA GPU found"
pytestmark = pytest.mark.cuda_image


@pytest.mark.parametrize(
    ("settings", "command"),
    [({}, None), ({"device": "cuda"}, None), ({}, "--device cuda")],
    ids=["image-default", "EARSHOT_DEVICE=cuda", "--device-cuda"],
)
def test_cuda_without_a_gpu_exits_2_with_one_line(
    cuda_image: str, settings: dict[str, str], command: str | None
) -> None:
    server = WhisperLiveContainer(cuda_image, **settings)
    if command:
        server.with_command(command)
    try:
        # The readiness wait gives up as soon as the container exits.
        with pytest.raises(ContainerNotReady, match="exited with 2"):
            server.start()
        labels = server.get_wrapped_container().labels
        code, log = server.exit_code(), server.log_text()
    finally:
        server.stop()
    assert (labels.get(LABEL), labels.get(OWNER)) == ("true", str(os.getpid()))
    assert code == 2
    lines = log.splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{log}"
    assert lines[0].startswith(NO_GPU), lines[0]
    assert "use --device auto or cpu" in lines[0]


def test_auto_serves_on_the_cpu_and_says_so(cuda_image: str) -> None:
    clip = audio.load_clip(JFK)
    with WhisperLiveContainer(cuda_image, device="auto") as server:
        status = server.server_status()
        transcript = asyncio.run(wire.stream(server.ws_url, clip, speed=None))
    assert (status["device"], status["compute_type"]) == ("cpu", "int8")
    assert transcript.final
    assert wer(audio.load_manifest()[JFK].reference, transcript.text) <= 0.10

