"""Registered only with the ini option ``earshot_leak_guard = true``: every test
gets the leak guard, and the session may leave nothing of its own alive."""

from __future__ import annotations

import pytest

from earshot.testing import leaks

LEFTOVERS = pytest.StashKey[leaks.Leftovers]()


@pytest.fixture(autouse=True)
def _earshot_leak_guard_everywhere(leak_guard: None) -> None:
    """Puts ``leak_guard`` in every test's fixtures (it does the work)."""


def pytest_sessionstart(session: pytest.Session) -> None:
    """Sweep what killed sessions left (their owner is dead), then note what exists."""
    orphans = leaks.Leftovers.orphans()
    if orphans:
        orphans.remove()
        print("earshot: removed what earlier, killed sessions left:\n  "
              + "\n  ".join(orphans.describe()))
    session.config.stash[LEFTOVERS] = leaks.Leftovers.now()


@pytest.hookimpl(trylast=True)  # after pytest's own teardown of session fixtures
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Child processes, earshot temp dirs and earshot containers the session left:
    each is named, removed, and fails the run (what seed 004's suite never noticed)."""
    before = session.config.stash.get(LEFTOVERS, None)
    if before is None:
        return
    found = leaks.Leftovers.now().since(before)
    if found:
        found.remove()
        print("\nerror: the test session left these behind (now removed):\n  "
              + "\n  ".join(found.describe()))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
