"""The real-server suite: by default against the server image under Testcontainers.

``--earshot-target local|url`` runs it against a local process or a deployment
instead (tests that need their own container then skip, saying why);
``--earshot-device cuda`` uses the CUDA image with the GPU (``make
integration-gpu``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from earshot.testing.container import WhisperLiveContainer, labelled_containers, remove_labelled
from earshot.testing.image import ensure_image

IMAGE = pytest.StashKey[str]()


def _gpu(config: pytest.Config) -> bool:
    return config.getoption("earshot_device") == "cuda"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Build (or reuse) the image before any test, outside every test's timeout."""
    if session.config.getoption("earshot_target") == "container":
        session.config.stash[IMAGE] = ensure_image("cuda" if _gpu(session.config) else "cpu")


@pytest.fixture(scope="session")
def server_image(pytestconfig: pytest.Config) -> str:
    if IMAGE not in pytestconfig.stash:
        pytest.skip("container tests need --earshot-target container")
    return pytestconfig.stash[IMAGE]


@pytest.fixture(scope="session")
def device(pytestconfig: pytest.Config) -> str | None:
    """The device the server should report (None: a deployment's, unknown)."""
    if pytestconfig.getoption("earshot_target") == "url":
        return pytestconfig.getoption("earshot_device")
    return "cuda" if _gpu(pytestconfig) else "cpu"


@pytest.fixture
def own_container(pytestconfig: pytest.Config,
                  server_image: str) -> Iterator[WhisperLiveContainer]:
    """A container of the test's own, for fault tests (stop, restart, kill)."""
    with WhisperLiveContainer(server_image, gpu=_gpu(pytestconfig)) as server:
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
