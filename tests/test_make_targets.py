"""What the README says each make target runs, read from make's own dry run
(``make -n``: the commands are printed, not run) and from ``.ci/run``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def dry_run(*args: str) -> list[str]:
    """The commands ``make -n ARGS`` would run, one per line."""
    done = subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def _index(commands: list[str], *needles: str) -> int:
    return next(i for i, command in enumerate(commands) if all(n in command for n in needles))


def test_ci_runs_make_test_and_nothing_else() -> None:
    lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[-1] == "make test"
    assert all(line.startswith(("set ", "cd ")) for line in lines[:-1]), lines


def test_make_test_lints_then_runs_every_suite_and_the_doctest_then_the_example() -> None:
    commands = dry_run("test")
    lint = _index(commands, "ruff check")
    image = _index(commands, "earshot.testing.image")
    suites = _index(commands, "pytest tests integration",
                    "src/earshot/testing/container.py --doctest-modules")
    example = _index(commands, "scripts/run-example.sh")
    assert lint < image < suites < example


def test_make_integration_runs_the_scenario_suite_on_the_image_with_jobs_when_asked() -> None:
    commands = dry_run("integration")
    assert commands[-1].endswith("-m pytest integration -v")
    assert _index(commands, "earshot.testing.image") < len(commands) - 1
    assert dry_run("integration", "JOBS=4")[-1].endswith("-m pytest integration -v -n 4")


@pytest.mark.parametrize("kind", ["ps -aq", "images -q"])
def test_make_clean_removes_earshot_labelled_containers_and_images(kind: str) -> None:
    commands = dry_run("clean")
    assert any(f"docker {kind} --filter label=org.earshot.managed" in c for c in commands)
