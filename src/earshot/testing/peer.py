"""Upstream WhisperLive 0.10 (the "peer") in a container, to compare earshot with.

``build_peer_image()`` builds ``Dockerfile.peer`` (WhisperLive 0.10.0 from the
package registry, faster-whisper backend, bundled tiny.en) or reuses it: the tag
carries a digest of the Dockerfile, our launcher, the base image's id and the
torch wheel used. The build context is ``build/peer/``, staged here: the launcher
and, where pip's configured find-links hold one, a CPU torch wheel (else the
image gets the registry's torch, which is the CUDA build and several GB).

``PeerContainer`` is a testcontainers ``DockerContainer`` for that image, published
on 127.0.0.1 like ``WhisperLiveContainer``. WhisperLive has no readiness endpoint:
the container is ready when a WebSocket handshake to its port succeeds (its model
loads only when the first session's config arrives, before that SERVER_READY).

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
from pathlib import Path
from typing import Any

from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect

from earshot.testing.container import (
    OWNER,
    ContainerNotReady,
    free_port,
    releasing,
    ryuk_available,
)
from earshot.testing.http import HttpEndpoints
from earshot.testing.image import (
    LABEL,
    ROOT,
    ImageError,
    ensure_base,
    ensure_engine,
    image_id,
    say,
)
from earshot.testing.waiting import WaitTimeout, eventually

DOCKERFILE = ROOT / "Dockerfile.peer"
LAUNCHER = ROOT / "scripts" / "peer" / "serve_whisperlive.py"
CONTEXT = ROOT / "build" / "peer"  # ignored by git; rebuilt on every build
REPOSITORY = "earshot-peer"
PORT = 9090
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
    listed = subprocess.run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}",
                             REPOSITORY], capture_output=True, text=True).stdout.split()
    if old := [name for name in listed if name != tag]:  # rmi refuses an image in use: fine
        subprocess.run(["docker", "rmi", *old], capture_output=True)
    return tag


class PeerContainer(DockerContainer, HttpEndpoints):
    """WhisperLive 0.10's server in a container, removed on exit from ``with``."""

    controllable = False  # no fault helpers; start it, use it, remove it
    host = "127.0.0.1"  # the port is published on loopback only

    def __init__(
        self,
        image: str | None = None,
        *,
        max_clients: int = 4,
        max_connection_time: float = 600,
        api_key: str | None = None,
        env: dict[str, str] | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        """``api_key`` makes WhisperLive require it (``Authorization: Bearer``,
        ``?token=``); None (the default) accepts every client."""
        if not ryuk_available():
            testcontainers_config.ryuk_disabled = True
        super().__init__(image or build_peer_image())
        settings = {"MAX_CLIENTS": max_clients, "MAX_CONNECTION_TIME": max_connection_time,
                    "API_KEY": api_key}
        for name, value in settings.items():
            if value is not None:
                self.with_env(f"WHISPERLIVE_{name}", str(value))
        for name, value in (env or {}).items():
            self.with_env(name, value)
        self.api_key = api_key
        self.startup_timeout = startup_timeout
        self.port = free_port()
        self.ports[f"{PORT}/tcp"] = ("127.0.0.1", self.port)
        self.with_kwargs(labels={LABEL: "true", OWNER: str(os.getpid())})

    @releasing
    def start(self) -> PeerContainer:
        super().start()
        self.wait_ready()
        return self

    def remove(self) -> None:
        """Remove the container whatever its state (what the context manager does)."""
        super().stop(force=True, delete_volume=True)
        self._container = None

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _require(self) -> Any:
        if self._container is None:
            raise RuntimeError("the container is not started")
        return self._container

    @releasing
    def wait_ready(self) -> None:
        """Until a WebSocket handshake succeeds, under a deadline; fail with the logs."""

        def probe() -> str:
            container = self._require()
            container.reload()
            state = container.attrs["State"]
            if state["Status"] in ("exited", "dead"):
                raise ContainerNotReady(self._report(f"exited with {state['ExitCode']}"))
            try:
                with connect(self.ws_url, open_timeout=2, close_timeout=1,
                             additional_headers=self.auth_headers()):
                    return "handshake ok"
            except (OSError, TimeoutError, WebSocketException) as exc:
                # Until the server listens, Docker's proxy accepts and drops connections.
                return f"no handshake ({type(exc).__name__}: {exc})"

        try:
            eventually(probe, lambda seen: seen == "handshake ok",
                       timeout=self.startup_timeout, max_interval=0.5,
                       description="a WebSocket handshake with the peer")
        except WaitTimeout as exc:
            raise ContainerNotReady(self._report(str(exc))) from None

    def _report(self, what: str) -> str:
        container = self._require()
        status = container.attrs.get("State", {}).get("Status")
        return (f"peer container {container.short_id} {what} (status {status}); "
                f"last log lines:\n{self.log_tail()}")

    # WhisperLive serves no /status; this is HttpEndpoints' (it raises, saying what
    # the port answered), as on every target. Docker's state: get_wrapped_container().
    status = HttpEndpoints.status  # type: ignore[assignment]

    @releasing
    def log_text(self) -> str:
        stdout, stderr = self.get_logs()
        return (stdout + stderr).decode(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_text().splitlines()[-lines:])
        except Exception as exc:  # the container may be gone already
            return f"(no logs: {exc})"


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description="Build or reuse the WhisperLive 0.10 peer image "
                                        "and print its tag.").parse_args(argv)
    try:
        print(build_peer_image())
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
