"""The server in a container, started by Testcontainers.

``WhisperLiveContainer`` is a testcontainers ``DockerContainer`` for the image
that ``Dockerfile.server`` builds (built or reused on demand). It publishes
the server's port on 127.0.0.1 only and builds its URLs from that, so tests
never dial a bridge address. Readiness is /readyz answering 200, polled with
tenacity under a deadline; a container that does not get there fails with its
state and last log lines.

Fault helpers act on the running container: ``stop()`` (SIGTERM, the server
drains) and ``start()`` again, ``restart()``, ``pause()``/``unpause()`` and
``kill()``. The container is removed by ``remove()``, which the context manager
calls on exit. Every container carries the ``org.earshot.managed`` label, so
``remove_labelled()`` can sweep what a crashed run left behind.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import docker
from docker.errors import NotFound
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer

from earshot.testing.http import HttpEndpoints
from earshot.testing.image import LABEL, ensure_image
from earshot.testing.waiting import WaitTimeout, eventually

PORT = 9090
F = TypeVar("F", bound=Callable[..., Any])


class ContainerNotReady(RuntimeError):
    """The server in the container did not become ready; the text says what was seen."""


class PortNotPublished(RuntimeError):
    """The server port has no host binding (yet)."""


def _ryuk_available() -> bool:
    """Ryuk (testcontainers' reaper) needs its image; without a registry it is absent."""
    client = docker.from_env()
    try:
        client.images.get(testcontainers_config.ryuk_image)
        return True
    except NotFound:
        return False
    finally:
        client.close()


def _releasing(method: F) -> F:
    """Close the Docker API's pooled connections after the call.

    The pool's sockets would otherwise stay open between calls, and a test's
    leak guard would rightly count them as descriptors the test took.
    """

    @functools.wraps(method)
    def wrapper(self: WhisperLiveContainer, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        finally:
            if self._container is not None:
                self._container.client.api.close()

    return wrapper  # type: ignore[return-value]


class WhisperLiveContainer(DockerContainer, HttpEndpoints):
    controllable = True
    host = "127.0.0.1"  # the port is published on loopback only

    def __init__(
        self,
        image: str | None = None,
        *,
        model: str | None = None,
        device: str | None = None,
        max_clients: int | None = None,
        max_connection_time: float | None = None,
        api_key: str | None = None,
        env: dict[str, str] | None = None,
        gpu: bool = False,
        startup_timeout: float = 60.0,
    ) -> None:
        if not _ryuk_available():
            # Without its image Ryuk cannot start; our own label sweep cleans up.
            testcontainers_config.ryuk_disabled = True
        super().__init__(image or ensure_image("cuda" if gpu else "cpu"))
        settings = {
            "EARSHOT_MODEL": model,
            "EARSHOT_DEVICE": device,
            "EARSHOT_MAX_CLIENTS": max_clients,
            "EARSHOT_MAX_CONNECTION_TIME": max_connection_time,
            "EARSHOT_API_KEY": api_key,
            **(env or {}),
        }
        for name, value in settings.items():
            if value is not None:
                self.with_env(name, str(value))
        self.api_key = api_key
        self.startup_timeout = startup_timeout
        # Bind to loopback only, on a free port the engine picks.
        self.ports[f"{PORT}/tcp"] = ("127.0.0.1",)
        kwargs: dict[str, Any] = {"labels": {LABEL: "true"}}
        if gpu:
            kwargs["device_requests"] = [
                docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])
            ]
        self.with_kwargs(**kwargs)

    # -- lifecycle ---------------------------------------------------------

    @_releasing
    def start(self) -> WhisperLiveContainer:
        """Create and start the container, or start it again after stop()."""
        if self._container is None:
            super().start()
        else:
            self._container.start()
        self.wait_ready()
        return self

    @_releasing
    def stop(self, timeout: float = 10.0) -> int:  # type: ignore[override]
        """SIGTERM (the server drains), wait; returns the exit code. Not removed."""
        container = self._require()
        container.stop(timeout=int(timeout))
        return int(container.wait(timeout=timeout + 5)["StatusCode"])

    @_releasing
    def restart(self, timeout: float = 10.0) -> None:
        self._require().restart(timeout=int(timeout))
        self.wait_ready()

    @_releasing
    def pause(self) -> None:
        self._require().pause()

    @_releasing
    def unpause(self) -> None:
        self._require().unpause()

    @_releasing
    def kill(self, signal: str = "SIGKILL") -> None:
        self._require().kill(signal=signal)

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

    # -- readiness ---------------------------------------------------------

    @_releasing
    def wait_ready(self) -> None:
        """Poll /readyz until 200, under a deadline; fail with state and logs."""

        def probe() -> str:
            container = self._require()
            container.reload()
            state = container.attrs["State"]
            if state["Status"] in ("exited", "dead"):
                raise ContainerNotReady(self._report(f"exited with {state['ExitCode']}"))
            try:
                code, body = self.get("/readyz")
            except (OSError, PortNotPublished) as exc:
                return f"no answer ({exc})"
            return f"/readyz {code} {body[:40]!r}"

        try:
            eventually(probe, lambda seen: seen.startswith("/readyz 200"),
                       timeout=self.startup_timeout, max_interval=0.5,
                       description="the container's /readyz to answer 200")
        except WaitTimeout as exc:
            raise ContainerNotReady(self._report(str(exc))) from None

    def _report(self, what: str) -> str:
        container = self._require()
        state = container.attrs.get("State", {})
        return (
            f"server container {container.short_id} {what} "
            f"(status {state.get('Status')}, health "
            f"{state.get('Health', {}).get('Status', 'n/a')}); last log lines:\n"
            f"{self.log_tail()}"
        )

    # -- access ------------------------------------------------------------

    @property
    @_releasing
    def port(self) -> int:
        container = self._require()
        container.reload()
        bindings = container.attrs["NetworkSettings"]["Ports"].get(f"{PORT}/tcp") or []
        for binding in bindings:
            if binding.get("HostIp") in ("127.0.0.1", "") and binding.get("HostPort"):
                return int(binding["HostPort"])
        raise PortNotPublished(f"port {PORT} is not published (yet)")

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    # The server's /status, as on every target. This shadows testcontainers'
    # ``status`` property (Docker's state, read only by its wait strategies,
    # which this class does not use); Docker's state is get_wrapped_container().status.
    status = HttpEndpoints.status  # type: ignore[assignment]

    @_releasing
    def exit_code(self) -> int | None:
        container = self._require()
        container.reload()
        state = container.attrs["State"]
        return None if state["Running"] else int(state["ExitCode"])

    @_releasing
    def log_text(self) -> str:
        stdout, stderr = self.get_logs()
        return (stdout + stderr).decode(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_text().splitlines()[-lines:])
        except Exception as exc:  # the container may be gone already
            return f"(no logs: {exc})"


def labelled_containers() -> list[str]:
    """Ids of containers, running or not, that carry earshot's label."""
    client = docker.from_env()
    try:
        return [c.id for c in client.containers.list(all=True, filters={"label": LABEL})]
    finally:
        client.close()


def remove_labelled() -> int:
    """Remove every earshot-labelled container (a crashed run's leftovers)."""
    client = docker.from_env()
    try:
        found = client.containers.list(all=True, filters={"label": LABEL})
        for container in found:
            container.remove(force=True)
        return len(found)
    finally:
        client.close()
