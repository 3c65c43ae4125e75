"""docker-compose.yml works by itself: `up` builds the image from Dockerfile.server
with the repository's root as the context, and the server it starts transcribes.

Needs a Docker engine and a compose command (`make test` ensures both: make
engine, make compose); the base image comes from ensure-base-image.sh, as for
every image earshot builds here (no registry to pull one from).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from earshot import audio
from earshot.client import TranscriptionClient
from earshot.testing import image
from earshot.testing.container import free_port
from earshot.testing.http import ServerUnreachable
from earshot.testing.targets import UrlServer
from earshot.testing.waiting import eventually

ROOT = Path(__file__).resolve().parents[1]


def compose_command() -> list[str]:
    """Docker's compose plugin, else docker-compose (what the Makefile picks)."""
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    if plugin.returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise AssertionError("no docker compose and no docker-compose: run make compose")


def _readyz(server: UrlServer) -> int | None:
    """/readyz's status, None while nothing answers (the container still starting)."""
    try:
        return server.get("/readyz", timeout=2)[0]
    except ServerUnreachable:
        return None


@pytest.fixture
def compose_project(tmp_path: Path) -> Iterator[tuple[list[str], dict[str, str]]]:
    """The compose command for a project of this test's own, on a free port, with
    an image tag of its own; `down` removes its container, network and image."""
    name = f"earshot-compose-test-{os.getpid()}"
    env = {**os.environ, "EARSHOT_IMAGE": f"earshot-server:{name}",
           "EARSHOT_BASE_IMAGE": image.ensure_base(), "EARSHOT_PORT": str(free_port())}
    command = [*compose_command(), "--project-directory", str(ROOT),
               "--file", str(ROOT / "docker-compose.yml"), "--project-name", name]
    try:
        yield command, env
    finally:
        subprocess.run([*command, "down", "--rmi", "all", "--volumes", "--remove-orphans"],
                       env=env, capture_output=True, timeout=120, check=True)
    left = subprocess.run(["docker", "ps", "-aq", "--filter",
                           f"label=com.docker.compose.project={name}"],
                          capture_output=True, text=True, timeout=30, check=True).stdout
    assert not left.strip(), f"compose left containers behind: {left.split()}"


@pytest.mark.timeout(600)  # a cold build cache installs the dependencies (minutes)
def test_compose_up_alone_builds_from_dockerfile_server_and_serves(compose_project) -> None:
    command, env = compose_project
    up = subprocess.run([*command, "up", "--detach", "--build", "server"], env=env,
                        capture_output=True, text=True, timeout=540)
    assert up.returncode == 0, up.stdout + up.stderr
    server = UrlServer(f"ws://127.0.0.1:{env['EARSHOT_PORT']}")  # compose's, reached by URL
    eventually(lambda: _readyz(server), lambda code: code == 200, timeout=60,
               description=f"{server.http_url}/readyz answering 200")
    with TranscriptionClient(server.ws_url) as client:
        client.stream_file(audio.clip_path("jfk.flac"), realtime=False)
        text = " ".join(s.text for s in client.finish(timeout=30))
    assert "country" in text.lower(), text
    built = subprocess.run(["docker", "image", "inspect", "--format",
                            "{{index .Config.Labels \"org.earshot.managed\"}}",
                            env["EARSHOT_IMAGE"]], capture_output=True, text=True, timeout=30)
    assert built.stdout.strip() == "true", built.stderr  # built here, by compose, labelled
