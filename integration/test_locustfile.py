"""The locustfile run by Locust as a library, for a few seconds, with 2 users.

What ``make load`` and ``make capacity`` stand on: each step reaches Locust's
statistics as its own request type, and a failure arrives with its reason.
The server admits one session, so of the two users one streams while the
other is told WAIT: both paths are exercised on the real server. Locust runs
in a process of its own (it patches the standard library with gevent).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from earshot.load.session import STEPS

CLIP = "librivox_ss01_0890.wav"  # 5.3 s: a session or two fit in the run
RUN_SECONDS = 6


def run_locust(url: str, out: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "earshot.load.runner", "--host", url, "--users", "2",
               "--spawn-rate", "2", "--run-time", str(RUN_SECONDS), "--stop-timeout", "30",
               "--json", str(out), "--", "--clips", CLIP]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, f"the runner failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(out.read_text())


def test_locustfile_reports_every_step_and_each_failure_with_its_reason(
        server_factory: Any, tmp_path: Path) -> None:
    server = server_factory(max_clients=1)
    summary = run_locust(server.ws_url, tmp_path / "summary.json")

    steps = summary["steps"]
    for step in STEPS:  # the admitted user's sessions went through every step
        assert steps[step]["count"] - steps[step]["failures"] >= 1, (step, summary)
    assert steps["final"]["failures"] == 0, summary["failures"]
    assert 0 < steps["final"]["p50"] < 10, steps["final"]
    # The other user was refused, and the reason says how.
    assert steps["connect"]["failures"] >= 1, summary
    assert all("WAIT" in reason for reason in summary["failures"]), summary["failures"]

    # Locust's own statistics (what its CSV and HTML reports show) have the same
    # request types, named after the clip, and the same failures.
    entries = {(e["type"], e["name"]): e for e in summary["locust"]["entries"]}
    assert {(step, CLIP) for step in STEPS} <= set(entries), entries
    assert entries[("connect", CLIP)]["failures"] == steps["connect"]["failures"]
    assert any(e["type"] == "connect" and "WAIT" in e["error"]
               for e in summary["locust"]["errors"]), summary["locust"]["errors"]
    # The generator measured its own cost.
    assert summary["generator"]["sessions"] == steps["connect"]["count"]
    assert summary["generator"]["cpu_s"] > 0
