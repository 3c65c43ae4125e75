"""The server in a container: a Testcontainers module.

``ServerContainer`` is a testcontainers ``DockerContainer`` with what every
server container earshot starts shares: the labels, the server's port
published on 127.0.0.1 only, readiness through a testcontainers wait strategy
under ``startup_timeout``, removal on exit, and logs in every readiness
failure. ``WhisperLiveContainer`` runs the image that ``Dockerfile.server``
builds; the peer image's ``PeerContainer`` (earshot.testing.peer) is one too.

Making one has no side effects. What does (a Docker engine installed and
started if none answers, testcontainers' reaper turned off where its image is
absent, the image built) is an explicit step: ``ServerContainer.prepare()``,
once per process, or ``WhisperLiveContainer.from_package()``, which prepares,
builds or reuses the image and returns the container, not yet started.

The host port is picked when the container is first created and stored: it
stays the same across terminate/start, restart and kill/start (Docker would publish
a new random port at each start), so a URL stays valid, and ``ws_url`` and
``http_url`` never ask Docker. Readiness is /readyz answering 200, awaited by
testcontainers' ``HttpWaitStrategy``, which here also gives up as soon as the
container exits; a container that does not get ready raises
``ContainerNotReady`` with what was awaited, its state and last log lines.

Fault helpers act on the running container: ``terminate()`` (SIGTERM, the
server drains; the container is kept) and ``start()`` again, ``restart()``,
``pause()``/``unpause()`` and ``kill()``. ``stop()`` keeps testcontainers'
meaning: it removes the container, as the context manager does on exit. Every
container carries the ``org.earshot.managed`` label, so
``remove_labelled(mine=False)`` can sweep what a crashed run left behind.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Self, TypeVar

import docker
from docker.errors import APIError, NotFound
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
)
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import HttpWaitStrategy
from testcontainers.core.waiting_utils import WaitStrategy, WaitStrategyTarget

from earshot.testing.http import HttpEndpoints
from earshot.testing.image import LABEL, ensure_engine, ensure_image
from earshot.testing.targets import as_env

PORT = 9090
# Which process made a container: a test session judges only its own, so two
# sessions at once (xdist workers, two users) never count or remove each other's.
OWNER = "org.earshot.owner"
POLL_INTERVAL = 0.25  # seconds between readiness probes (testcontainers' default is 1 s)
F = TypeVar("F", bound=Callable[..., Any])


class ContainerNotReady(RuntimeError):
    """The server in the container did not become ready; the text says what was seen."""


class ContainerExited(RuntimeError):
    """The container exited while its readiness was awaited (no point waiting on)."""


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now (the engine binds it next)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class EngineUnreachable(docker.errors.DockerException):
    """No Docker engine answers at DOCKER_HOST (or Docker's default socket)."""


def _engine_url() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _engine_address() -> tuple[socket.AddressFamily, Any] | None:
    """Where the Docker CLI and SDK connect: a unix socket or a TCP address (None: a
    scheme the SDK alone knows, such as ssh://)."""
    url = _engine_url()
    if url.startswith("unix://"):
        return socket.AF_UNIX, url.removeprefix("unix://")
    if url.startswith("tcp://"):
        host, _, port = url.removeprefix("tcp://").rstrip("/").rpartition(":")
        return socket.AF_INET, (host or "127.0.0.1", int(port or 2375))
    return None


def engine_answers(timeout: float = 2.0) -> bool:
    """Whether the engine's socket takes a connection, tried on a socket closed at once."""
    address = _engine_address()
    if address is None:
        return True  # the SDK will say
    family, where = address
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout)
        try:
            probe.connect(where)
        except OSError:
            return False
    return True


@contextmanager
def docker_client() -> Iterator[docker.DockerClient]:
    """A Docker SDK client, closed on exit; EngineUnreachable, holding nothing, where no
    engine answers. (``docker.from_env()`` asks the engine's version at once, and when
    that connect is refused it leaves its socket open for the garbage collector: a
    stopped engine's stale socket made the leak sweeps leak a descriptor.)"""
    if not engine_answers():
        raise EngineUnreachable(f"no Docker engine answers at {_engine_url()}")
    client = docker.from_env()
    try:
        yield client
    finally:
        client.close()


def ryuk_available() -> bool:
    """Ryuk (testcontainers' reaper) needs its image; without a registry it is absent."""
    with docker_client() as client:
        try:
            client.images.get(testcontainers_config.ryuk_image)
            return True
        except NotFound:
            return False


@functools.cache  # the engine and the reaper setting hold for the process's life
def _prepare_docker() -> None:
    ensure_engine()
    if not ryuk_available():
        # Without its image Ryuk cannot start; earshot's label sweep cleans up instead.
        testcontainers_config.ryuk_disabled = True


def raise_if_exited(container: WaitStrategyTarget) -> None:
    """ContainerExited if Docker reports the container exited (or dead)."""
    wrapped = container.get_wrapped_container()
    wrapped.reload()
    state = wrapped.attrs["State"]
    if state["Status"] in ("exited", "dead"):
        raise ContainerExited(f"exited with {state['ExitCode']}")


class ReadyzWaitStrategy(HttpWaitStrategy):
    """testcontainers' HTTP wait for ``GET /readyz`` answering 200, which also stops
    as soon as the container exits (``HttpWaitStrategy`` alone would poll a dead
    container until its deadline)."""

    def __init__(self, port: int = PORT, path: str = "/readyz") -> None:
        super().__init__(port, path)
        self.with_poll_interval(POLL_INTERVAL)
        self.awaits = f"GET {path} answering 200"  # what a failure says it waited for
        self._target: WaitStrategyTarget | None = None

    def wait_until_ready(self, container: WaitStrategyTarget) -> None:
        self._target = container
        try:
            super().wait_until_ready(container)
        finally:
            self._target = None

    # The one hook HttpWaitStrategy calls before each request (testcontainers is
    # pinned to 4.15.0 in pyproject, so this private name holds).
    def _try_http_request(self, url: str, headers: dict[str, str], ssl_context: Any) -> bool:
        if self._target is not None:
            raise_if_exited(self._target)
        return super()._try_http_request(url, headers, ssl_context)


PAUSE_SECONDS = 10.0  # how long pause() retries a freezer that could not freeze


def _unable_to_freeze(error: BaseException) -> bool:
    return isinstance(error, APIError) and "unable to freeze" in str(error)


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
    by ``wait`` under ``startup_timeout`` with the logs in the failure, removal on
    exit. Call ``prepare()`` once before the first start."""

    host = "127.0.0.1"  # the port is published on loopback only
    kind = "server"  # how failures name it

    def __init__(self, image: str, *, env: Mapping[str, str], api_key: str | None,
                 startup_timeout: float, wait: WaitStrategy, **docker_kwargs: Any) -> None:
        super().__init__(image, env=dict(env))
        self.api_key = api_key
        self.startup_timeout = startup_timeout
        self._readiness = wait.with_startup_timeout(startup_timeout)
        self.waiting_for(self._readiness)  # testcontainers' start() runs it
        self._port: int | None = None  # picked at the first start (see the module's text)
        self.with_kwargs(labels={LABEL: "true", OWNER: str(os.getpid())}, **docker_kwargs)

    @classmethod
    def prepare(cls) -> None:
        """Ready Docker for earshot's containers, once per process: an engine that
        answers (installed and started where none does, as root on Debian), and
        testcontainers' reaper (Ryuk) turned off, for the whole process, where its
        image is absent (no registry to pull it from)."""
        _prepare_docker()

    # -- where it listens ----------------------------------------------------

    @property
    def port(self) -> int:  # type: ignore[override]
        """The host port the server is published on (stored at the first start)."""
        if self._port is None:
            raise RuntimeError(f"the {self.kind} container is not started: no port yet")
        return self._port

    def _configure(self) -> None:
        # testcontainers calls this before it creates the container.
        if self._port is None:
            self._port = free_port()
        self.ports[f"{PORT}/tcp"] = (self.host, self._port)  # type: ignore[assignment]

    def get_container_host_ip(self) -> str:
        return self.host  # what the URLs use, whatever testcontainers' connection mode

    def get_exposed_port(self, port: int) -> int:
        """The host port of ``port``: the server's as stored, others as Docker says."""
        if int(port) == PORT and self._port is not None:
            return self._port
        return super().get_exposed_port(port)

    # -- lifecycle -----------------------------------------------------------

    @releasing
    def start(self) -> Self:
        """Create and start the container, or start it again after stop(); return
        once it is ready (ContainerNotReady, with its logs, if it does not get there)."""
        with self._failing_with_logs():
            if self._container is None:
                super().start()  # testcontainers: create, start, run the wait strategy
            else:
                self._container.start()
                self._await_ready()
        return self

    @releasing
    def wait_ready(self) -> None:
        """Await readiness again (after a restart, say), as start() does."""
        with self._failing_with_logs():
            self._await_ready()

    def _await_ready(self) -> None:
        self._readiness.wait_until_ready(self)

    def stop(self, force: bool = True, delete_volume: bool = True) -> None:
        """Remove the container whatever its state, as testcontainers' ``stop()`` does
        (what the context manager does on exit). ``terminate()`` stops the server
        and keeps the container, to start it again."""
        super().stop(force=force, delete_volume=delete_volume)
        self._container = None

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _require(self):
        if self._container is None:
            raise RuntimeError("the container is not started")
        return self._container

    @contextmanager
    def _failing_with_logs(self) -> Iterator[None]:
        """A readiness failure as ContainerNotReady: what was awaited, state and logs."""
        awaited = getattr(self._readiness, "awaits", "readiness")
        try:
            yield
        except ContainerExited as exc:
            raise ContainerNotReady(self._report(f"{exc} while awaiting {awaited}")) from None
        except TimeoutError as exc:
            raise ContainerNotReady(self._report(
                f"was not ready within {self.startup_timeout:g} s (awaiting {awaited}): {exc}"
            )) from None

    def _report(self, what: str) -> str:
        container = self._require()
        container.reload()
        state = container.attrs.get("State", {})
        return (
            f"{self.kind} container {container.short_id} {what} "
            f"(status {state.get('Status')}, health "
            f"{state.get('Health', {}).get('Status', 'n/a')}); last log lines:\n"
            f"{self.log_tail()}"
        )

    # -- what it shows -------------------------------------------------------

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
    """earshot's server image in a container, ready when /readyz answers 200.

    ``from_package()`` prepares Docker and builds (or reuses) the image from the
    installed earshot; ``WhisperLiveContainer(image)`` runs a given tag, after
    ``WhisperLiveContainer.prepare()``. ``status`` is Docker's state, as on every
    testcontainers container; the server's /status is ``server_status()``.

    Example:

        .. doctest::

            >>> from earshot.testing.container import WhisperLiveContainer

            >>> with WhisperLiveContainer.from_package(max_clients=2) as server:
            ...     server.ws_url
            ...     server.get("/readyz")[0]
            ...     server.server_status()["capacity"]["max_clients"]
            ...     server.status
            'ws://127.0.0.1:...'
            200
            2
            'running'
    """

    controllable = True

    def __init__(
        self,
        image: str,
        *,
        api_key: str | None = None,
        env: dict[str, str] | None = None,
        gpu: bool = False,
        startup_timeout: float = 60.0,
        **settings: object,
    ) -> None:
        """``settings`` are server options by name (``max_clients=1``, ``device="cpu"``),
        passed as the server's ``EARSHOT_*`` variables; ``env`` adds raw variables;
        ``gpu`` requests every GPU (run the CUDA image then)."""
        gpus = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])] if gpu else None
        # The image's HEALTHCHECK is for deployments; here readiness is the wait
        # strategy, and the check's process, started in the container every 5 s, costs
        # CPU and is one more way for pause() to meet a freezer that cannot freeze
        # while a process joins (opencontainers/runc#2774; pause() retries that).
        super().__init__(image, env={**as_env({**settings, "api_key": api_key}), **(env or {})},
                         api_key=api_key, startup_timeout=startup_timeout,
                         wait=ReadyzWaitStrategy(), healthcheck={"test": ["NONE"]},
                         **({"device_requests": gpus} if gpus else {}))

    @classmethod
    def from_package(cls, *, gpu: bool = False, **options: Any) -> WhisperLiveContainer:
        """``prepare()``, then the container for the image built from the installed
        earshot package (the CUDA image with ``gpu``), built now if its inputs
        changed (minutes the first time); not started. ``options`` as for the class."""
        cls.prepare()
        return cls(ensure_image("cuda" if gpu else "cpu"), gpu=gpu, **options)

    # -- faults --------------------------------------------------------------

    @releasing
    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM (the server drains), wait; returns the exit code. The container is
        kept: ``start()`` runs it again on the same port."""
        container = self._require()
        container.stop(timeout=int(timeout))
        return int(container.wait(timeout=timeout + 5)["StatusCode"])

    @releasing
    def restart(self, timeout: float = 10.0) -> None:
        self._require().restart(timeout=int(timeout))
        self.wait_ready()

    @releasing
    def pause(self) -> None:
        """Freeze every process of the container (Docker's pause: the cgroup freezer).

        cgroup v1's freezer can fail to freeze a busy cgroup ("unable to freeze":
        a task that cannot stop at once, a process joining); runc itself retries and
        calls it "a game of chances" (opencontainers/runc#2791). So that error alone
        is retried, for at most PAUSE_SECONDS; any other fails at once."""
        container = self._require()
        for attempt in Retrying(retry=retry_if_exception(_unable_to_freeze),
                                stop=stop_after_delay(PAUSE_SECONDS),
                                wait=wait_exponential(multiplier=0.05, max=1.0),
                                reraise=True):
            with attempt:
                container.pause()

    @releasing
    def unpause(self) -> None:
        self._require().unpause()

    @releasing
    def kill(self, signal: str = "SIGKILL") -> None:
        self._require().kill(signal=signal)

    # -- access --------------------------------------------------------------

    @releasing
    def port_bindings(self) -> list[dict[str, str]]:
        """How Docker publishes the server's port (HostIp, HostPort), as it reports it."""
        container = self._require()
        container.reload()
        return container.attrs["NetworkSettings"]["Ports"].get(f"{PORT}/tcp") or []

    @releasing
    def exec(self, command: str | list[str]) -> Any:  # type: ignore[override]
        """testcontainers' exec (exit code and output), its API connections released."""
        return super().exec(command)

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
    with docker_client() as client:
        return [c.id for c in client.containers.list(all=True, filters=_filters(mine))]


def owners() -> dict[str, int | None]:
    """Every earshot container's id and the pid of the process that made it."""
    with docker_client() as client:
        found = client.containers.list(all=True, filters=_filters(mine=False))
        return {c.id: int(c.labels[OWNER]) if c.labels.get(OWNER, "").isdigit() else None
                for c in found}


def remove_labelled(ids: Collection[str] | None = None, mine: bool = True) -> int:
    """Remove earshot's containers (this process's, or all; only ``ids`` if given)."""
    with docker_client() as client:
        found = [c for c in client.containers.list(all=True, filters=_filters(mine))
                 if ids is None or c.id in ids]
        for container in found:
            container.remove(force=True)
        return len(found)
