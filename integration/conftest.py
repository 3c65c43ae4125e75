"""The real-server suite against the server image, started by Testcontainers.

EARSHOT_CONTAINER_VARIANT=cuda runs it against the CUDA image with the GPU
(``make integration-gpu``); the default is the CPU image.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from earshot.testing.container import WhisperLiveContainer, labelled_containers, remove_labelled
from earshot.testing.image import ensure_image

VARIANT = os.environ.get("EARSHOT_CONTAINER_VARIANT", "cpu")
GPU = VARIANT == "cuda"
IMAGE = pytest.StashKey[str]()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Build (or reuse) the image before any test, outside every test's timeout."""
    session.config.stash[IMAGE] = ensure_image(VARIANT)


@pytest.fixture(scope="session")
def server_image(pytestconfig: pytest.Config) -> str:
    return pytestconfig.stash[IMAGE]


@pytest.fixture(scope="session")
def device() -> str:
    """The device the containers' server should report."""
    return "cuda" if GPU else "cpu"


@pytest.fixture(scope="session")
def container(server_image: str) -> Iterator[WhisperLiveContainer]:
    """One server container for the tests that do not stop or restart it."""
    with WhisperLiveContainer(server_image, max_clients=8, gpu=GPU) as server:
        yield server


@pytest.fixture
def own_container(server_image: str) -> Iterator[WhisperLiveContainer]:
    """A container of the test's own, for fault tests (stop, restart, kill)."""
    with WhisperLiveContainer(server_image, gpu=GPU) as server:
        yield server


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No earshot-labelled container may outlive the session: sweep, and fail if any did."""
    try:
        leftovers = labelled_containers()
    except Exception:  # no engine at all: nothing can have been left
        return
    if leftovers:
        remove_labelled()
        print(f"\nerror: {len(leftovers)} earshot container(s) outlived the session: {leftovers}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
