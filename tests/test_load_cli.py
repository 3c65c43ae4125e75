"""``python -m earshot.load load`` (what ``make load`` runs) as a whole, against a
real local server: Locust headless, its CSV and HTML reports in a folder of the
run, exit 0 when no step failed and 1 when one did."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from earshot.testing.local import LocalServer

CLIP = "librivox_ss01_0890.wav"  # 5.3 s: one session well within the run's 60 s stop timeout


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[LocalServer]:
    with LocalServer(api_key="the-key") as server:
        yield server


def load(server: LocalServer, reports: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "earshot.load", "load", "--target", server.ws_url,
         "--users", "1", "--spawn-rate", "1", "--duration", "3", "--clips", CLIP,
         "--reports", str(reports), *extra],
        capture_output=True, text=True, timeout=120)


def stats(reports: Path) -> dict[tuple[str, str], dict[str, str]]:
    """Locust's stats rows of the run's one report folder, by (step, clip)."""
    [folder] = reports.glob("load-*")
    assert (folder / "report.html").is_file()
    with open(folder / "locust_stats.csv", newline="") as f:
        return {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}


def test_a_load_run_reports_each_step_and_exits_0_when_none_failed(keyed_server,
                                                                  tmp_path) -> None:
    done = load(keyed_server, tmp_path, "--api-key", "the-key")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = stats(tmp_path)
    for step in ("connect", "first_text", "final"):
        row = rows[(step, CLIP)]
        assert int(row["Request Count"]) >= 1 and row["Failure Count"] == "0", row


def test_a_load_run_with_a_failed_step_exits_1(keyed_server, tmp_path) -> None:
    done = load(keyed_server, tmp_path)  # no key: every connect is refused
    assert done.returncode == 1, done.stdout + done.stderr
    row = stats(tmp_path)[("connect", CLIP)]
    assert int(row["Failure Count"]) >= 1, row
