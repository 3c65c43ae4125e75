"""The validator's progress on a terminal (earshot.validation.progress): a bar for the
suite counting each test once at its outcome and naming the current one, a bar per
phase; nothing at all where the output is not a terminal."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from earshot.validation.progress import Progress


def console(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=120, color_system=None), out


def events(on_event, poll) -> str:
    """A suite of two tests as the event plugin reports them, polled between events."""
    for event in [
        {"event": "collected", "tests": [{"nodeid": "a.py::one"}, {"nodeid": "a.py::two"}]},
        {"event": "start", "nodeid": "a.py::one"},
        {"event": "result", "nodeid": "a.py::one", "when": "setup", "outcome": "passed"},
        {"event": "result", "nodeid": "a.py::one", "when": "call", "outcome": "passed"},
        {"event": "result", "nodeid": "a.py::one", "when": "teardown", "outcome": "passed"},
        {"event": "start", "nodeid": "a.py::two"},
    ]:
        on_event(event)
        poll()
    return "the suite's result"


def task(progress: Progress, name: str) -> Any:
    [found] = [t for t in progress.bars.tasks if t.description == name]
    return found


def test_on_a_terminal_the_suites_bar_counts_each_test_once_and_names_the_current() -> None:
    terminal, out = console(True)
    with Progress(terminal) as progress:
        assert progress.suite(events) == "the suite's result"
        bar = task(progress, "scenario suite")
        assert (bar.total, bar.completed) == (2, 1)  # one test done, counted once
        assert bar.fields["now"] == ""  # cleared when the suite ends
        with progress.phase("clips at real time", 3) as step:
            step("jfk.flac")
            step("librivox_ss01_0870.wav")
        clips = task(progress, "clips at real time")
        assert (clips.total, clips.completed) == (3, 2)
        assert clips.fields["now"] == "librivox_ss01_0870.wav"
    shown = out.getvalue()
    assert "scenario suite" in shown and "1/2" in shown and "clips at real time" in shown


def test_the_suites_bar_names_the_test_under_way_cut_to_60_characters() -> None:
    terminal, _ = console(True)
    seen: list[str] = []
    long_name = "a.py::test_" + "x" * 80

    def run(on_event, poll) -> None:
        on_event({"event": "start", "nodeid": long_name})
        seen.append(task(progress, "scenario suite").fields["now"])

    with Progress(terminal) as progress:
        progress.suite(run)
    assert seen == [("test_" + "x" * 80)[:60]]


def test_off_a_terminal_nothing_is_shown() -> None:
    pipe, out = console(False)
    with Progress(pipe) as progress:
        progress.suite(events)
        with progress.phase("network profiles", 4) as step:
            step("lan")
    assert out.getvalue() == ""
