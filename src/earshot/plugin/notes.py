"""Lines for the end of the run, each said once however often it is noted."""

from __future__ import annotations

from typing import Any

import pytest

NOTES = pytest.StashKey[list[str]]()


def note_once(config: pytest.Config, text: str) -> None:
    notes = config.stash.setdefault(NOTES, [])
    if text not in notes:
        notes.append(text)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    for text in config.stash.get(NOTES, []):
        terminalreporter.write_line(f"earshot: {text}")
