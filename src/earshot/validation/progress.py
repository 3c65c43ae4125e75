"""Progress of a validation run on the terminal: a bar per phase, the current test.

Built on rich; on anything that is not a terminal (CI logs, a pipe) it shows
nothing, and the run prints only its verdict at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bars

T = TypeVar("T")


class Progress:
    """Context manager; ``suite()`` and ``phase()`` add bars while it is open."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.bars = Bars(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                         TimeElapsedColumn(), TextColumn("{task.fields[now]}"),
                         console=self.console, disable=not self.console.is_terminal,
                         transient=False)

    def __enter__(self) -> Progress:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def suite(self, run: Callable[[Callable[[dict[str, Any]], None], Callable[[], None]], T]
              ) -> T:
        """Run the suite with a bar that counts finished tests and names the current one."""
        task = self.bars.add_task("scenario suite", total=None, now="collecting")
        seen: set[str] = set()

        def on_event(event: dict[str, Any]) -> None:
            if event["event"] == "collected":
                self.bars.update(task, total=len(event["tests"]))
            elif event["event"] == "start":
                self.bars.update(task, now=event["nodeid"].split("::", 1)[-1][:60])
            elif (event["event"] == "result" and event["nodeid"] not in seen
                  and event["when"] != "teardown"):  # a test counts once, at its outcome
                seen.add(event["nodeid"])
                self.bars.update(task, completed=len(seen))

        try:
            return run(on_event, self.bars.refresh)
        finally:
            self.bars.update(task, now="")

    @contextmanager
    def phase(self, name: str, total: int) -> Iterator[Callable[[str], None]]:
        """A bar of ``total`` steps; the yielded function marks one done."""
        task = self.bars.add_task(name, total=total, now="")

        def step(what: str) -> None:
            self.bars.update(task, advance=1, now=what)

        yield step
