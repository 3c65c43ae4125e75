"""The server in a container, started by Testcontainers.

``ServerContainer`` holds what every server container earshot starts shares
(labels, the pinned loopback port, readiness with a deadline, removal, logs);
the peer image's ``PeerContainer`` (earshot.testing.peer) is one too.
``WhisperLiveContainer`` is a testcontainers ``DockerContainer`` for the image
that ``Dockerfile.server`` builds (built or reused on demand). It publishes
the server's port on 127.0.0.1 only, on a host port picked once when the
object is made, and builds its URLs from that: tests never dial a bridge
address, and a URL stays valid across stop/start, restart and kill/start
(Docker would otherwise publish a new random port each time). Readiness is
/readyz answering 200, polled with tenacity under a deadline; a container
that does not get there fails with its state and last log lines.

Fault helpers act on the running container: ``stop()`` (SIGTERM, the server
drains) and ``start()`` again, ``restart()``, ``pause()``/``unpause()`` and
``kill()``. The container is removed by ``remove()``, which the context manager
calls on exit. Every container carries the ``org.earshot.managed`` label, so
``remove_labelled(mine=False)`` can sweep what a crashed run left behind.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

import docker
from docker.errors import NotFound
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer

from earshot.testing.http import HttpEndpoints
from earshot.testing.image import LABEL, ensure_image
from earshot.testing.targets import as_env
from earshot.testing.waiting import WaitTimeout, eventually

PORT = 9090
# Which process made a container: a test session judges only its own, so two
# sessions at once (xdist workers, two users) never count or remove each other's.
OWNER = "org.earshot.owner"
F = TypeVar("F", bound=Callable[..., Any])


class ContainerNotReady(RuntimeError):
    """The server in the container did not become ready; the text says what was seen."""


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now (the engine binds it next)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ryuk_available() -> bool:
    """Ryuk (testcontainers' reaper) needs its image; without a registry it is absent."""
    client = docker.from_env()
    try:
        client.images.get(testcontainers_config.ryuk_image)
        return True
    except NotFound:
        return False
    finally:
        client.close()


def releasing(method: F) -> F:
    """Close the Docker API's pooled connections after the call.

    The pool's sockets would otherwise stay open between calls, and a test's
    leak guard would rightly count them as descriptors the test took.
    """

    @functools.wraps(method)
    def wrapper(self: ServerContainer, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        finally:
            if self._container is not None:
                self._container.client.api.close()

    return wrapper  # type: ignore[return-value]


class ServerContainer(DockerContainer, HttpEndpoints):
    """What every server container earshot starts shares: the labels, port 9090
    published on loopback on a host port pinned for the object's life, readiness
    awaited under a deadline with the logs in the failure, removal on exit."""

    host = "127.0.0.1"  # the port is published on loopback only
    kind = "server"  # how failures name it

    def __init__(self, image: str, *, env: Mapping[str, str], api_key: str | None,
                 startup_timeout: float, **docker_kwargs: Any) -> None:
        if not ryuk_available():
            # Without its image Ryuk cannot start; our own label sweep cleans up.
            testcontainers_config.ryuk_disabled = True
        super().__init__(image)
        for name, value in env.items():
            self.with_env(name, value)
        self.api_key = api_key
        self.startup_timeout = startup_timeout
        # Loopback only, on a port fixed for this object's life (see the module's text).
        self.port = free_port()
        self.ports[f"{PORT}/tcp"] = ("127.0.0.1", self.port)
        self.with_kwargs(labels={LABEL: "true", OWNER: str(os.getpid())}, **docker_kwargs)

    def remove(self) -> None:
        """Remove the container whatever its state (what the context manager does)."""
        super().stop(force=True, delete_volume=True)
        self._container = None

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _require(self):
        if self._container is None:
            raise RuntimeError("the container is not started")
        return self._container

    def _wait_until_ready(self, check: Callable[[], str], ready: str, what: str) -> None:
        """Poll ``check`` (a line on what it saw) until it starts with ``ready``, under
        ``startup_timeout``; the container exiting or the deadline fails with its logs."""

        def probe() -> str:
            container = self._require()
            container.reload()
            state = container.attrs["State"]
            if state["Status"] in ("exited", "dead"):
                raise ContainerNotReady(self._report(f"exited with {state['ExitCode']}"))
            return check()

        try:
            eventually(probe, lambda seen: seen.startswith(ready),
                       timeout=self.startup_timeout, max_interval=0.5, description=what)
        except WaitTimeout as exc:
            raise ContainerNotReady(self._report(str(exc))) from None

    def _report(self, what: str) -> str:
        container = self._require()
        state = container.attrs.get("State", {})
        return (
            f"{self.kind} container {container.short_id} {what} "
            f"(status {state.get('Status')}, health "
            f"{state.get('Health', {}).get('Status', 'n/a')}); last log lines:\n"
            f"{self.log_tail()}"
        )

    # The server's /status, as on every target. This shadows testcontainers'
    # ``status`` property (Docker's state, read only by its wait strategies,
    # which these classes do not use); Docker's state is get_wrapped_container().status.
    status = HttpEndpoints.status  # type: ignore[assignment]

    @releasing
    def log_text(self) -> str:
        stdout, stderr = self.get_logs()
        return (stdout + stderr).decode(errors="replace")

    @releasing
    def memory_usage(self, page_cache: bool = True) -> int:
        """Bytes of memory the engine accounts to the container now (its cgroup's
        usage); ``page_cache=False`` leaves out the inactive file cache, which the
        kernel may drop (what ``docker stats`` shows)."""
        stats = self._require().stats(stream=False)["memory_stats"]
        cache = 0 if page_cache else int(stats.get("stats", {}).get("inactive_file", 0))
        return int(stats["usage"]) - cache

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_text().splitlines()[-lines:])
        except Exception as exc:  # the container may be gone already
            return f"(no logs: {exc})"


class WhisperLiveContainer(ServerContainer):
    controllable = True

    def __init__(
        self,
        image: str | None = None,
        *,
        api_key: str | None = None,
        env: dict[str, str] | None = None,
        gpu: bool = False,
        startup_timeout: float = 60.0,
        **settings: object,
    ) -> None:
        """``settings`` are server options by name (``max_clients=1``, ``device="cpu"``),
        passed as the server's ``EARSHOT_*`` variables; ``env`` adds raw variables."""
        gpus = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])] if gpu else None
        super().__init__(image or ensure_image("cuda" if gpu else "cpu"),
                         env={**as_env({**settings, "api_key": api_key}), **(env or {})},
                         api_key=api_key, startup_timeout=startup_timeout,
                         **({"device_requests": gpus} if gpus else {}))

    # -- lifecycle ---------------------------------------------------------

    @releasing
    def start(self) -> WhisperLiveContainer:
        """Create and start the container, or start it again after stop()."""
        if self._container is None:
            super().start()
        else:
            self._container.start()
        self.wait_ready()
        return self

    @releasing
    def stop(self, timeout: float = 10.0) -> int:  # type: ignore[override]
        """SIGTERM (the server drains), wait; returns the exit code. Not removed."""
        container = self._require()
        container.stop(timeout=int(timeout))
        return int(container.wait(timeout=timeout + 5)["StatusCode"])

    @releasing
    def restart(self, timeout: float = 10.0) -> None:
        self._require().restart(timeout=int(timeout))
        self.wait_ready()

    @releasing
    def pause(self) -> None:
        self._require().pause()

    @releasing
    def unpause(self) -> None:
        self._require().unpause()

    @releasing
    def kill(self, signal: str = "SIGKILL") -> None:
        self._require().kill(signal=signal)

    # -- readiness ---------------------------------------------------------

    @releasing
    def wait_ready(self) -> None:
        """Poll /readyz until 200, under a deadline; fail with state and logs."""

        def check() -> str:
            try:
                code, body = self.get("/readyz")
            except OSError as exc:
                return f"no answer ({exc})"
            return f"/readyz {code} {body[:40]!r}"

        self._wait_until_ready(check, "/readyz 200", "the container's /readyz to answer 200")

    # -- access ------------------------------------------------------------

    @releasing
    def port_bindings(self) -> list[dict[str, str]]:
        """How Docker publishes the server's port (HostIp, HostPort), as it reports it."""
        container = self._require()
        container.reload()
        return container.attrs["NetworkSettings"]["Ports"].get(f"{PORT}/tcp") or []

    @releasing
    def exit_code(self) -> int | None:
        container = self._require()
        container.reload()
        state = container.attrs["State"]
        return None if state["Running"] else int(state["ExitCode"])


def _filters(mine: bool) -> dict[str, Any]:
    return {"label": [LABEL, f"{OWNER}={os.getpid()}"] if mine else LABEL}


def labelled_containers(mine: bool = True) -> list[str]:
    """Ids of earshot's containers, running or not: this process's, or (``mine=False``) all."""
    client = docker.from_env()
    try:
        return [c.id for c in client.containers.list(all=True, filters=_filters(mine))]
    finally:
        client.close()


def owners() -> dict[str, int | None]:
    """Every earshot container's id and the pid of the process that made it."""
    client = docker.from_env()
    try:
        found = client.containers.list(all=True, filters=_filters(mine=False))
        return {c.id: int(c.labels[OWNER]) if c.labels.get(OWNER, "").isdigit() else None
                for c in found}
    finally:
        client.close()


def remove_labelled(ids: Collection[str] | None = None, mine: bool = True) -> int:
    """Remove earshot's containers (this process's, or all; only ``ids`` if given)."""
    client = docker.from_env()
    try:
        found = [c for c in client.containers.list(all=True, filters=_filters(mine))
                 if ids is None or c.id in ids]
        for container in found:
            container.remove(force=True)
        return len(found)
    finally:
        client.close()
