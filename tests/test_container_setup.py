"""What the container module promises before any container runs: making one has no
side effects, prepare() readies Docker once per process, and the settings and the
image's own promises (its user, its health check) are what the README says. No
Docker engine is needed: testcontainers' client and earshot's own set-up of an
engine are replaced by stand-ins that fail, or count, where a test must show
they are not called, or called once."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from earshot.testing import container as module
from earshot.testing.container import ReadyzWaitStrategy, WhisperLiveContainer

DOCKERFILE = (Path(module.__file__).parent / "docker" / "Dockerfile.server").read_text()


class StandInDockerClient:
    """Stands in for testcontainers' Docker client (whose constructor asks the engine
    its API version): anything that would act on the engine fails the test."""

    def __init__(self, **kwargs: object) -> None:
        pass

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the Docker engine was asked to {name}")


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """No engine is acted on, and earshot's engine set-up refused (a stand-in that fails
    the test if called)."""
    import testcontainers.core.container as tc_container

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the Docker engine was set up")

    monkeypatch.setattr(tc_container, "DockerClient", StandInDockerClient)
    monkeypatch.setattr(module, "ensure_engine", refuse)


def test_making_a_container_calls_no_engine_and_waits_60_s_for_readyz(no_engine) -> None:
    server = WhisperLiveContainer("earshot-server:any", max_clients=2)
    assert server.startup_timeout == 60.0
    assert isinstance(server._readiness, ReadyzWaitStrategy)
    assert server._readiness.awaits == "GET /readyz answering 200"
    assert server._container is None  # made, not started: no container on the engine yet
    assert "EARSHOT_MAX_CLIENTS=2" in [f"{k}={v}" for k, v in server.env.items()]


def test_a_test_container_runs_without_the_images_health_check(no_engine) -> None:
    """Readiness is the wait strategy; the image's check would start a process in the
    container every 5 s: CPU, and a process joining the cgroup a pause() freezes."""
    assert WhisperLiveContainer("t")._kwargs["healthcheck"] == {"test": ["NONE"]}


def test_gpu_requests_every_gpu_and_nothing_else_does(no_engine) -> None:
    requests = WhisperLiveContainer("t", gpu=True)._kwargs["device_requests"]
    assert [(r["Count"], r["Capabilities"]) for r in requests] == [(-1, [["gpu"]])]
    assert "device_requests" not in WhisperLiveContainer("t")._kwargs


@pytest.fixture
def counted_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """prepare()'s one-time state cleared around the test; the engine's set-up counted
    (stand-in), and Ryuk's image absent, as on these machines."""
    calls: list[str] = []
    monkeypatch.setattr(module, "ensure_engine", lambda: calls.append("engine"))
    monkeypatch.setattr(module, "ryuk_available", lambda: False)
    monkeypatch.setattr(module.testcontainers_config, "ryuk_disabled", False)
    module._prepare_docker.cache_clear()
    try:
        yield calls
    finally:
        module._prepare_docker.cache_clear()  # the next real prepare() does the real work


def test_prepare_readies_docker_once_and_turns_ryuk_off_without_its_image(
        counted_engine: list[str]) -> None:
    WhisperLiveContainer.prepare()
    WhisperLiveContainer.prepare()
    assert counted_engine == ["engine"]
    assert module.testcontainers_config.ryuk_disabled is True


def test_the_image_runs_the_server_as_uid_10001_and_checks_its_readyz() -> None:
    assert re.search(r"^USER 10001$", DOCKERFILE, re.M)
    assert re.search(r"useradd[^\n]*--uid 10001", DOCKERFILE)
    healthcheck = DOCKERFILE[DOCKERFILE.index("HEALTHCHECK"):].split("\n\n")[0]
    assert "/readyz" in healthcheck


class FreezerStandIn:
    """Stands in for a Docker container whose pause() fails as the freezer does, a
    given number of times, then pauses."""

    def __init__(self, failures: int, text: str = "OCI runtime pause failed: unable to "
                                                  "freeze: unknown") -> None:
        self.failures, self.text, self.calls = failures, text, 0

    def pause(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            from docker.errors import APIError
            raise APIError(f"500 Server Error: Cannot pause container x: {self.text}")

    @property
    def client(self) -> object:  # what releasing() closes afterwards
        from types import SimpleNamespace
        return SimpleNamespace(api=SimpleNamespace(close=lambda: None))


def _paused_by(container: WhisperLiveContainer, docker_container: FreezerStandIn) -> None:
    container._container = docker_container
    container.pause()


def test_pause_retries_a_freezer_that_could_not_freeze(no_engine) -> None:
    """cgroup v1's freezer can fail to freeze a busy container (runc retries it too):
    that error alone is tried again, within PAUSE_SECONDS."""
    frozen = FreezerStandIn(failures=2)
    _paused_by(WhisperLiveContainer("t"), frozen)
    assert frozen.calls == 3


def test_pause_fails_at_once_on_any_other_error(no_engine) -> None:
    from docker.errors import APIError
    refused = FreezerStandIn(failures=5, text="container x is not running")
    with pytest.raises(APIError, match="is not running"):
        _paused_by(WhisperLiveContainer("t"), refused)
    assert refused.calls == 1


def test_pause_gives_up_on_a_freezer_that_never_freezes(no_engine, monkeypatch) -> None:
    from docker.errors import APIError
    monkeypatch.setattr(module, "PAUSE_SECONDS", 0.3)
    stuck = FreezerStandIn(failures=10_000)
    with pytest.raises(APIError, match="unable to freeze"):
        _paused_by(WhisperLiveContainer("t"), stuck)
    assert 1 < stuck.calls < 10_000


@pytest.mark.parametrize(("gpu", "variant"), [(False, "cpu"), (True, "cuda")])
def test_from_package_builds_the_variant_and_returns_a_container_not_started(
        no_engine, counted_engine: list[str], monkeypatch: pytest.MonkeyPatch, gpu: bool,
        variant: str) -> None:
    asked: list[str] = []
    monkeypatch.setattr(module, "ensure_image", lambda v: asked.append(v) or f"tag-{v}")
    server = WhisperLiveContainer.from_package(gpu=gpu, max_clients=3)
    assert counted_engine == ["engine"]  # prepare() first
    assert asked == [variant] and server.image == f"tag-{variant}"
    assert server._container is None  # not started
    assert ("device_requests" in server._kwargs) is gpu
    assert server.env["EARSHOT_MAX_CLIENTS"] == "3"


def test_the_urls_of_a_started_container_come_from_its_own_port_without_asking_docker(
        no_engine) -> None:
    server = WhisperLiveContainer("t")
    with pytest.raises(RuntimeError, match="not started: no port yet"):
        server.ws_url  # noqa: B018
    server._configure()  # what testcontainers calls before it creates the container
    port = server.port
    assert server.ws_url == f"ws://127.0.0.1:{port}"  # the stand-in client was not asked
    assert server.http_url == f"http://127.0.0.1:{port}"
    assert server.get_exposed_port(9090) == port
    assert server.ports["9090/tcp"] == ("127.0.0.1", port)  # published on loopback only


@pytest.fixture
def stale_engine_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """DOCKER_HOST at a socket file nothing listens on, as a stopped engine leaves
    /var/run/docker.sock: every connect is refused."""
    import socket

    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX) as bound:
        bound.bind(str(path))  # the file stays; nothing will listen
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    return str(path)


def _open_fds() -> dict[str, str]:
    import os

    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the listing's own descriptor, closed by now
    return found


def test_with_no_engine_answering_the_sweeps_hold_no_descriptor(stale_engine_socket) -> None:
    """The leak sweeps ask for earshot's containers on every test's end; where the engine
    is stopped, the Docker SDK's refused connect used to stay open until the garbage
    collector ran (a leaked socket, named by the next test's guard)."""
    import gc

    from earshot.testing import leaks

    gc.disable()  # nothing may depend on it
    try:
        before = _open_fds()
        with pytest.raises(module.EngineUnreachable, match=stale_engine_socket):
            module.labelled_containers()
        with pytest.raises(module.EngineUnreachable):
            module.owners()
        assert leaks.Leftovers.now().containers == frozenset()
        assert leaks.Leftovers.orphans().containers == frozenset()
        assert {fd: to for fd, to in _open_fds().items() if fd not in before} == {}
    finally:
        gc.enable()


def test_the_engine_is_found_where_docker_host_says(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    monkeypatch.setenv("DOCKER_HOST", "tcp://10.1.2.3:2376")
    assert module._engine_address() == (socket.AF_INET, ("10.1.2.3", 2376))
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/user/1000/docker.sock")
    assert module._engine_address() == (socket.AF_UNIX, "/run/user/1000/docker.sock")
    monkeypatch.delenv("DOCKER_HOST")
    assert module._engine_address() == (socket.AF_UNIX, "/var/run/docker.sock")
    monkeypatch.setenv("DOCKER_HOST", "ssh://user@host")
    assert module._engine_address() is None and module.engine_answers()  # the SDK decides
