"""Run the locustfile with Locust as a library and write a JSON summary.

Run it as a process of its own (``python -m earshot.load.runner``): importing
Locust patches the standard library with gevent, which must never happen in
a pytest or asyncio process. The summary holds, per step (``connect``,
``first_text``, ``final``), the count, the failures, and exact percentiles of
the response times (Locust's own statistics round times over 1 s to 100 ms),
every failure reason with its count, and what the load generator itself cost.

    python -m earshot.load.runner --host ws://127.0.0.1:9090 --users 2 \\
        --spawn-rate 2 --run-time 10 --json out.json -- --clips jfk.flac
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import gevent  # locust would patch on import anyway; this module is run in its own process
from gevent import monkey

monkey.patch_all()

import numpy as np  # noqa: E402
from locust import events  # noqa: E402
from locust.argument_parser import get_parser  # noqa: E402
from locust.env import Environment  # noqa: E402

from earshot.load import LOCUSTFILE  # noqa: E402
from earshot.load.session import STEPS  # noqa: E402


def load_locustfile(path: Path) -> Any:
    """Import the locustfile as a module (its option listener registers on import)."""
    if not path.is_file():
        raise SystemExit(f"error: no locustfile at {path}")
    spec = importlib.util.spec_from_file_location("locustfile", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def percentiles(seconds: list[float]) -> dict[str, float | None]:
    if not seconds:
        return {"p50": None, "p95": None, "max": None}
    values = np.asarray(seconds)
    return {"p50": round(float(np.percentile(values, 50)), 4),
            "p95": round(float(np.percentile(values, 95)), 4),
            "max": round(float(values.max()), 4)}


class Recorder:
    """Every request event, kept exactly."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = defaultdict(list)
        self.failures: dict[str, int] = Counter()
        self.reasons: Counter[str] = Counter()

    def __call__(self, request_type: str, name: str, response_time: float,
                 exception: BaseException | None = None, **_: Any) -> None:
        self.times[request_type].append(response_time / 1000.0)
        if exception is not None:
            self.failures[request_type] += 1
            self.reasons[f"{request_type} {name}: {exception}"] += 1

    def summary(self) -> dict[str, Any]:
        steps = {step: {"count": len(self.times[step]), "failures": self.failures[step],
                        **percentiles(self.times[step])} for step in STEPS}
        return {"steps": steps, "failures": dict(self.reasons.most_common())}


def run(locustfile: Path, host: str, users: int, spawn_rate: float, run_time: float,
        stop_timeout: float, locust_args: list[str]) -> dict[str, Any]:
    module = load_locustfile(locustfile)
    parsed = get_parser().parse_args(["-f", str(locustfile), *locust_args])
    recorder = Recorder()
    events.request.add_listener(recorder)
    env = Environment(user_classes=[module.SpeechUser], host=host, events=events,
                      parsed_options=parsed, stop_timeout=stop_timeout)
    runner = env.create_local_runner()
    cpu_before, started = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    try:
        runner.start(users, spawn_rate=spawn_rate)
        gevent.spawn_later(run_time, runner.quit)  # the run's length, not a wait
        runner.greenlet.join()
    finally:
        runner.quit()
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    sessions = recorder.summary()["steps"]["connect"]["count"]
    # Locust's own statistics, as its CSV and HTML reports show them.
    entries = [{"type": e.method, "name": e.name, "requests": e.num_requests,
                "failures": e.num_failures} for e in env.stats.entries.values()]
    errors = [{"type": e.method, "name": e.name, "error": str(e.error),
               "occurrences": e.occurrences} for e in env.stats.errors.values()]
    return {
        **recorder.summary(),
        "locust": {"entries": entries, "errors": errors},
        "users": users, "run_time_s": run_time, "wall_s": round(time.monotonic() - started, 2),
        "generator": {"cpu_s": round(cpu, 3), "sessions": sessions,
                      "cpu_s_per_session": round(cpu / sessions, 4) if sessions else None,
                      "peak_rss_mib": round(cpu_after.ru_maxrss / 1024, 1)},
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, locust_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) \
        if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(prog="python -m earshot.load.runner",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", required=True, help="ws://host:port of the server")
    parser.add_argument("--users", type=int, default=2)
    parser.add_argument("--spawn-rate", type=float, default=2.0)
    parser.add_argument("--run-time", type=float, default=10.0, help="seconds")
    parser.add_argument("--stop-timeout", type=float, default=60.0,
                        help="seconds users get to finish the session they are in")
    parser.add_argument("--locustfile", type=Path, default=LOCUSTFILE)
    parser.add_argument("--json", type=Path, help="write the summary here (default: stdout)")
    args = parser.parse_args(own)
    summary = run(args.locustfile, args.host, args.users, args.spawn_rate, args.run_time,
                  args.stop_timeout, locust_args)
    text = json.dumps(summary, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
