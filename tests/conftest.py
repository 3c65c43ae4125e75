"""Fixtures for earshot's own tests: real servers in subprocesses, real speech."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from earshot import audio
from earshot.testing.local import LocalServer
from earshot.testing.waiting import wait_for_sessions

# The shared server answers quickly when a test misbehaves on purpose.
SHARED_FLAGS = (
    "--max-clients", "16",
    "--handshake-timeout", "1",
    "--ping-interval", "1",
    "--ping-timeout", "1",
)


@pytest.fixture(scope="session")
def server() -> Iterator[LocalServer]:
    """One real server for the tests that need no special settings."""
    with LocalServer(*SHARED_FLAGS) as srv:
        yield srv


@pytest.fixture
def idle_server(server: LocalServer) -> Iterator[LocalServer]:
    """The shared server, with no session before the test and none left after it."""
    wait_for_sessions(server, 0)
    yield server
    wait_for_sessions(server, 0)


@pytest.fixture(scope="session")
def manifest() -> dict[str, audio.Clip]:
    return audio.load_manifest()


@pytest.fixture(scope="session")
def jfk() -> np.ndarray:
    return audio.load_clip("jfk.flac")
