"""How long the real-server suite takes, serially and at make integration's default.

    .venv/bin/python scripts/suite_bench.py [--jobs N] [--seed S] [--skip-serial]

Runs ``pytest integration`` twice with the same random order (``--seed``, printed):
once in one process, once on N xdist workers as ``make integration`` does (the
workers share one server container; tests that start servers of their own run in
groups). Prints, as Markdown tables: each run's wall time, the machine's CPU
seconds it used and its verdict, the ratio of the two; each module's time in each
run (the sum of its tests' times); and the floor of a parallel run: the longest
single scenario, the longest group (its tests run one after another on one
worker), and the CPU floor (the default run's CPU seconds over the machine's
cores, and how busy the cores were: the scenarios stream real speech to real
models, so on 2 cores the CPU is what a parallel run runs out of first; a server
decodes elastically, fewer passes when it is busy, so a serial run's CPU is no
floor). A measurement, not a test: nothing here fails on
a slow machine; the exit status is 1 only when a run's tests failed.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JOBS = 6  # the Makefile's JOBS


def cpu_seconds() -> float:
    """CPU time the whole machine has spent busy since boot (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def run(label: str, jobs: int, seed: int, folder: Path) -> dict:
    """One pytest run of integration/; its wall and CPU time, verdict and per-test times."""
    junit = folder / f"{label}.xml"
    command = [sys.executable, "-m", "pytest", "integration", "-q", "-m", "not cuda_image",
               "-p", "randomly", "-p", "no:cacheprovider", f"--randomly-seed={seed}",
               f"--junitxml={junit}"]
    if jobs:
        command += ["-n", str(jobs), "--dist", "loadgroup"]
    print(f"==> {label}: {' '.join(command[2:])}", file=sys.stderr, flush=True)
    cpu, start = cpu_seconds(), time.monotonic()
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    wall, cpu = time.monotonic() - start, cpu_seconds() - cpu
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "(no output)"
    print(f"    {summary}", file=sys.stderr, flush=True)
    return {"label": label, "jobs": jobs, "wall": wall, "cpu": cpu, "rc": done.returncode,
            "summary": summary, "tests": test_times(junit)}


def test_times(junit: Path) -> dict[str, float]:
    """nodeid (with its xdist group after '@', if any) -> seconds (set-up, call, teardown)."""
    if not junit.exists():
        return {}
    times = {}
    for case in ET.parse(junit).iter("testcase"):
        module = case.get("classname", "").replace(".", "/") + ".py"
        times[f"{module}::{case.get('name')}"] = float(case.get("time") or 0)
    return times


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def group_of(nodeid: str) -> str | None:
    name = nodeid.rsplit("::", 1)[-1]
    return name.rsplit("@", 1)[1] if "@" in name.rsplit("]", 1)[-1] else None


def plain(nodeid: str) -> str:
    return nodeid.rsplit("@", 1)[0] if group_of(nodeid) else nodeid


def report(serial: dict | None, parallel: dict) -> str:
    cores = os.cpu_count() or 1
    lines = [f"Machine: {cpu_model()}, {cores} cores; Python {platform.python_version()}.", "",
             "| run | wall | CPU used (all cores) | result |", "|---|---|---|---|"]
    for result in filter(None, (serial, parallel)):
        what = "serial (one process)" if not result["jobs"] else f"default (-n {result['jobs']})"
        lines.append(f"| {what} | {result['wall']:.0f} s | {result['cpu']:.0f} s | "
                     f"{result['summary']} |")
    if serial:
        lines.append(f"| ratio default / serial | {parallel['wall'] / serial['wall']:.2f} | "
                     f"{parallel['cpu'] / serial['cpu']:.2f} | |")
    lines += ["", "| module | tests | serial | default (sum of its tests) |", "|---|---|---|---|"]
    by_module: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for nodeid, seconds in (serial or {}).get("tests", {}).items():
        row = by_module[module_of(nodeid)]
        row[0] += 1
        row[1] += seconds
    for nodeid, seconds in parallel["tests"].items():
        row = by_module[module_of(nodeid)]
        if not serial:
            row[0] += 1
        row[2] += seconds
    for module, (count, s, p) in sorted(by_module.items(), key=lambda kv: -kv[1][1]):
        lines.append(f"| {module} | {count:.0f} | {s:.0f} s | {p:.0f} s |")
    base = serial["tests"] if serial else parallel["tests"]
    longest = max(base.items(), key=lambda kv: kv[1])
    groups: dict[str, float] = defaultdict(float)
    for nodeid in parallel["tests"]:
        if (group := group_of(nodeid)) is not None:
            groups[group] += base.get(plain(nodeid), base.get(nodeid, 0.0))
    source = "serial" if serial else "default"
    lines += ["", "| floor of a parallel run | seconds |", "|---|---|",
              f"| longest scenario ({plain(longest[0])}, {source} run) | {longest[1]:.0f} s |"]
    for group, seconds in sorted(groups.items(), key=lambda kv: -kv[1])[:1]:
        lines.append(f"| longest group ({group}: its tests' {source} times) | {seconds:.0f} s |")
    busy = parallel["cpu"] / (parallel["wall"] * cores)
    lines.append(f"| CPU floor (the default run's CPU / {cores} cores; the cores were "
                 f"{busy:.0%} busy over its wall time) | {parallel['cpu'] / cores:.0f} s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS,
                        help=f"xdist workers of the default run (default {DEFAULT_JOBS})")
    parser.add_argument("--seed", type=int, default=random.randrange(2**32),
                        help="pytest-randomly's seed for both runs (default: a new one)")
    parser.add_argument("--skip-serial", action="store_true",
                        help="the default run only (no ratio)")
    options = parser.parse_args(argv)
    print(f"==> seed {options.seed}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="earshot-bench-") as folder:
        serial = None if options.skip_serial else run("serial", 0, options.seed, Path(folder))
        parallel = run("default", options.jobs, options.seed, Path(folder))
    print(report(serial, parallel))
    return 1 if any(r and r["rc"] != 0 for r in (serial, parallel)) else 0


if __name__ == "__main__":
    sys.exit(main())
