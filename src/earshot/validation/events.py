"""A pytest plugin that writes the suite's progress as JSON lines for the validator.

Loaded with ``-p earshot.validation.events`` in the validator's pytest
subprocess; it writes to the file named by ``EARSHOT_VALIDATION_EVENTS`` and
does nothing without it. One line per event: what was collected (with each
test's ``extension`` marker), each test's start, and each phase's result.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

PATH = os.environ.get("EARSHOT_VALIDATION_EVENTS")


def _write(**event: Any) -> None:
    if PATH:
        with open(PATH, "a", encoding="utf-8") as out:  # one short append per event
            out.write(json.dumps(event) + "\n")


def pytest_collection_finish(session: pytest.Session) -> None:
    tests = []
    for item in session.items:
        marker = item.get_closest_marker("extension")
        tests.append({"nodeid": item.nodeid,
                      "extensions": list(marker.args) if marker else []})
    _write(event="collected", tests=tests)


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    _write(event="start", nodeid=nodeid)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call" and report.passed:
        return  # setup and teardown matter only when they fail or skip
    _write(event="result", nodeid=report.nodeid, when=report.when, outcome=report.outcome,
           duration=round(report.duration, 3), message=_message(report))


def _message(report: pytest.TestReport) -> str:
    """The first line that says why: the skip reason, or the assertion's own text."""
    longrepr = report.longrepr
    if longrepr is None:
        return ""
    if isinstance(longrepr, tuple):  # a skip: (file, line, reason)
        return str(longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(longrepr)
    return text.strip().splitlines()[0] if text.strip() else ""
