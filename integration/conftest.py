"""The real-server suite: by default against the server image under Testcontainers.

``--earshot-target local|url`` runs it against a local process or a deployment
instead (tests that need a server of their own skip on url, saying why);
``--earshot-device cuda`` uses the CUDA image with the GPU (``make
integration-gpu``). The fixtures are earshot's pytest plugin
(``earshot.plugin``: server targets, clients, proxy, leak guard) with the
short names of ``fixtures/``; this file only adds what the scenarios share.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def device(pytestconfig: pytest.Config) -> str | None:
    """The device the server should report (None: a deployment's, unknown)."""
    if pytestconfig.getoption("earshot_target") == "url":
        return pytestconfig.getoption("earshot_device")
    return "cuda" if pytestconfig.getoption("earshot_device") == "cuda" else "cpu"
