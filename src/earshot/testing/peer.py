"""Upstream WhisperLive 0.10 (the "peer") in a container, to compare earshot with.

``build_peer_image()`` builds ``Dockerfile.peer`` (WhisperLive 0.10.0 from the
package registry, faster-whisper backend, bundled tiny.en) or reuses it: the tag
carries a digest of the Dockerfile, our launcher, the base image's id and the
torch wheel used. The build context is ``build/peer/``, staged here: the launcher
and, where pip's configured find-links hold one, a CPU torch wheel (else the
image gets the registry's torch, which is the CUDA build and several GB).

``PeerContainer`` is a testcontainers ``DockerContainer`` for that image, published
on 127.0.0.1 like ``WhisperLiveContainer``; ``PeerContainer.from_checkout()``
prepares Docker and builds (or reuses) the image. WhisperLive has no readiness
endpoint: the container is ready when a WebSocket handshake to its port succeeds
(``HandshakeWaitStrategy``; its model loads only when the first session's config
arrives, before that SERVER_READY).

    python -m earshot.testing.peer      # prints the tag, building if needed
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from testcontainers.core.waiting_utils import WaitStrategy, WaitStrategyTarget
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect

from earshot.testing.container import (
    POLL_INTERVAL,
    PORT,
    ContainerExited,
    ServerContainer,
    raise_if_exited,
)
from earshot.testing.image import (
    LABEL,
    ROOT,
    ImageError,
    ensure_base,
    ensure_engine,
    image_id,
    print_tag,
    remove_older,
    say,
)

DOCKERFILE = ROOT / "Dockerfile.peer"
LAUNCHER = ROOT / "scripts" / "peer" / "serve_whisperlive.py"
CONTEXT = ROOT / "build" / "peer"  # ignored by git; rebuilt on every build
REPOSITORY = "earshot-peer"
# Both base images (the public one and the debootstrap one) carry Python 3.11.
TORCH_WHEEL = re.compile(r"torch-[^-]+\+cpu[^-]*-cp311-cp311-.*x86_64\.whl")


def find_cpu_torch() -> Path | None:
    """A CPU torch wheel for the image: $EARSHOT_TORCH_WHEEL, else one in pip's find-links."""
    if given := os.environ.get("EARSHOT_TORCH_WHEEL"):
        if not Path(given).is_file():
            raise ImageError(f"EARSHOT_TORCH_WHEEL={given} is not a file")
        return Path(given)
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                            capture_output=True, text=True).stdout
    places = re.findall(r"find-links='([^']*)'", listed)
    places.append(os.environ.get("PIP_FIND_LINKS", ""))
    for place in " ".join(places).split():
        folder = Path(place.removeprefix("file://"))
        if not folder.is_dir():
            continue  # only local folders (a URL would need pip to fetch from it)
        wheels = sorted(p for p in folder.iterdir() if TORCH_WHEEL.fullmatch(p.name))
        if wheels:
            return wheels[-1]
    return None


def _stage(torch_wheel: Path | None) -> None:
    """Fill build/peer/ with the launcher and (if any) the torch wheel, nothing else."""
    wheels = CONTEXT / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(LAUNCHER, CONTEXT / LAUNCHER.name)
    for old in wheels.iterdir():
        if torch_wheel is None or old.name != torch_wheel.name:
            old.unlink()
    if torch_wheel is not None:
        target = wheels / torch_wheel.name
        if not target.is_file() or target.stat().st_size != torch_wheel.stat().st_size:
            shutil.copyfile(torch_wheel, target)


def input_digest(base_id: str, torch_wheel: Path | None) -> str:
    """sha256 over the Dockerfile, the launcher, the base image and the torch wheel's name."""
    digest = hashlib.sha256(f"{base_id}\0{torch_wheel.name if torch_wheel else 'registry'}\0"
                            .encode())
    for file in (DOCKERFILE, LAUNCHER):
        digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()


def build_peer_image() -> str:
    """The tag of an up-to-date peer image, building it if needed."""
    if not DOCKERFILE.is_file():
        raise ImageError(f"{DOCKERFILE} not found: build the peer from an earshot checkout")
    ensure_engine()
    base = ensure_base()
    torch_wheel = find_cpu_torch()
    tag = f"{REPOSITORY}:{input_digest(image_id(base) or base, torch_wheel)[:12]}"
    if image_id(tag):
        return tag
    _stage(torch_wheel)
    torch_from = torch_wheel.name if torch_wheel else "the registry (CUDA build, several GB)"
    say(f"building {tag} on {base}, torch from {torch_from} (a few minutes)")
    build = [
        "docker", "build", "--network", "host", "--file", str(DOCKERFILE),
        "--build-arg", f"BASE_IMAGE={base}", "--label", f"{LABEL}=true",
        "--tag", tag, str(CONTEXT),
    ]
    # Build output is progress: stderr, so stdout carries only the tag.
    if subprocess.run(build, stdout=sys.stderr).returncode != 0:
        raise ImageError(f"docker build of {tag} failed (output above)")
    remove_older(REPOSITORY, tag)
    return tag


class HandshakeWaitStrategy(WaitStrategy):
    """A testcontainers wait until a WebSocket handshake with the container succeeds,
    stopping as soon as the container exits. (A TCP connect is not enough: until the
    server listens, Docker's proxy accepts connections and drops them.)"""

    def __init__(self, port: int = PORT, headers: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.with_poll_interval(POLL_INTERVAL)
        self._port = port
        self._headers = dict(headers or {})
        self.awaits = "a WebSocket handshake"  # what a failure says it waited for

    def wait_until_ready(self, container: WaitStrategyTarget) -> None:
        url = f"ws://{container.get_container_host_ip()}:{container.get_exposed_port(self._port)}"
        last = "no attempt"

        def settled() -> bool:  # ready, or exited (raised below)
            nonlocal last
            try:
                raise_if_exited(container)
                with connect(url, open_timeout=2, close_timeout=1,
                             additional_headers=self._headers):
                    return True
            except ContainerExited:
                return True
            except (OSError, TimeoutError, WebSocketException) as exc:
                last = f"{type(exc).__name__}: {exc}"
                return False

        if not self._poll(settled):
            raise TimeoutError(f"no WebSocket handshake with {url} within "
                               f"{self._startup_timeout:g} s (last: {last})")
        raise_if_exited(container)


class PeerContainer(ServerContainer):
    """WhisperLive 0.10's server in a container, removed on exit from ``with``."""

    controllable = False  # no fault helpers; start it, use it, remove it
    kind = "peer"
    # WhisperLive serves no /status: the inherited server_status() raises, saying
    # what the port answered, as on every target without one.

    def __init__(
        self,
        image: str,
        *,
        max_clients: int = 4,
        max_connection_time: float = 600,
        api_key: str | None = None,
        env: dict[str, str] | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        """``api_key`` makes WhisperLive require it (``Authorization: Bearer``,
        ``?token=``); None (the default) accepts every client."""
        settings = {"MAX_CLIENTS": max_clients, "MAX_CONNECTION_TIME": max_connection_time,
                    "API_KEY": api_key}
        variables = {f"WHISPERLIVE_{name}": str(value) for name, value in settings.items()
                     if value is not None}
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        super().__init__(image, env={**variables, **(env or {})}, api_key=api_key,
                         startup_timeout=startup_timeout,
                         wait=HandshakeWaitStrategy(PORT, headers))

    @classmethod
    def from_checkout(cls, **options: Any) -> PeerContainer:
        """``prepare()``, then the container for the peer image, built now if its
        inputs changed (minutes the first time); not started."""
        cls.prepare()
        return cls(build_peer_image(), **options)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description="Build or reuse the WhisperLive 0.10 peer image "
                                        "and print its tag.").parse_args(argv)
    return print_tag(build_peer_image)



if __name__ == "__main__":
    sys.exit(main())
