"""earshot's pytest plugin: a real WhisperLive-compatible server for any suite.

``pip install 'earshot[testing]'`` registers it (the ``pytest11`` entry point
``earshot``; ``-p no:earshot`` turns it off). It is inert until a test asks:
no fixture of its own runs, no hook changes a test, unless a test requests
one of these fixtures or the ini option below is set.

- ``whisperlive_server``: the session's server (the container by default;
  ``--earshot-target local|url``), with ``ws_url``, ``host``, ``port``.
- ``whisperlive_server_factory(**settings)``: a server of the test's own with
  server options (``max_clients=1``...); it may be stopped, paused, killed.
- ``whisperlive_idle_server``: the shared server with no session before or
  after the test.
- ``proxy``: a latency proxy in front of the session's server (profiles and toxics).
- ``client_factory`` / ``sync_client_factory``: earshot's clients, each closed
  at teardown and required to end DISCONNECTED.
- ``speech_clip(name)``: a manifest clip with its reference transcript.
- ``leak_guard``: fails a test that leaves a thread, descriptor, child, task,
  container or server session behind, naming it. Opt in per test or module
  with ``@pytest.mark.usefixtures("leak_guard")``, or for every test with the
  ini option ``earshot_leak_guard = true`` (which also checks, at the
  session's end, that nothing the session started is still alive).

The named waits (``wait_for_state``, ``wait_for_transcript``,
``wait_for_sessions``, ``eventually``...) are plain functions in
:mod:`earshot.testing.waiting`. docs/using-earshot.md shows each in use.
"""

from __future__ import annotations

import pytest

from earshot.testing import ast_lock

# Before any test module is imported (and so rewritten): see ast_lock's docstring.
ast_lock.install()

# Plugins that pytest sessions earshot starts in a subprocess (the validator's,
# this repository's pytester runs) leave off. Hypothesis's plugin imports its
# package at the session's end, where pytest's assertion rewriting parses it;
# on CPython 3.11.7 that parse failed at random with "SystemError: AST
# constructor recursion depth mismatch" (about one run in three), the race that
# ast_lock now removes. These sessions run no property test, so it stays off.
INNER_SESSION_ARGS = ("-p", "no:hypothesispytest")

pytest_plugins = [
    "earshot.plugin.notes",
    "earshot.plugin.server",
    "earshot.plugin.audio",
    "earshot.plugin.clients",
    "earshot.plugin.proxy",
    "earshot.plugin.leaks",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("earshot_leak_guard", type="bool", default=False,
                  help="earshot: every test gets the leak guard, and the session's end "
                       "checks that nothing the session started is alive")
