"""Run each test of a suite in a process of its own and print a table (seed 001's).

    python scripts/isolation.py [PATH] [-- PYTEST ARGS...]

Collects the test ids under PATH (default: integration), runs ``pytest ID``
once per id, each in a fresh interpreter, and prints one row per test with
its result and wall time, then a totals line. Exits 0 only when every test
passed (or was skipped, with its reason shown) on its own.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTCOME = re.compile(r"\b(\d+) (passed|failed|skipped|error|errors)\b")
PER_TEST_LIMIT_S = 600  # a hang is reported as such, never waited out forever


def collect(path: str, extra: list[str]) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", path, "--collect-only", "-q", "-p", "no:randomly",
         *extra], cwd=ROOT, capture_output=True, text=True, timeout=PER_TEST_LIMIT_S,
    )
    ids = [line for line in result.stdout.splitlines() if "::" in line]
    if result.returncode != 0 or not ids:
        sys.exit(f"isolation: collecting {path} failed:\n{result.stdout}{result.stderr}")
    return ids


def run_one(test_id: str, extra: list[str]) -> tuple[str, float]:
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", test_id, "-q", "-p", "no:randomly", *extra],
            cwd=ROOT, capture_output=True, text=True, timeout=PER_TEST_LIMIT_S,
        )
    except subprocess.TimeoutExpired:
        return f"HANG (over {PER_TEST_LIMIT_S} s)", time.monotonic() - started
    counts = {kind: int(n) for n, kind in OUTCOME.findall(result.stdout)}
    if result.returncode == 0:
        outcome = "skipped" if counts.get("skipped") and not counts.get("passed") else "passed"
    else:
        outcome = f"FAILED (exit {result.returncode})"
    return outcome, time.monotonic() - started


def main(argv: list[str]) -> int:
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    paths = argv[: argv.index("--")] if "--" in argv else argv
    ids = collect(paths[0] if paths else "integration", extra)
    width = max(len(i) for i in ids)
    print(f"| {'test'.ljust(width)} | result | seconds |", flush=True)
    print(f"|{'-' * (width + 2)}|--------|---------|", flush=True)
    failures = 0
    for test_id in ids:
        outcome, seconds = run_one(test_id, extra)
        failures += outcome not in ("passed", "skipped")
        print(f"| {test_id.ljust(width)} | {outcome} | {seconds:7.1f} |", flush=True)
    print(f"\n{len(ids) - failures} of {len(ids)} tests passed alone", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
