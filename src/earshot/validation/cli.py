"""``make validate``: ship or don't ship, with the evidence in ``reports/<UTC time>/``.

    python -m earshot.validation                       # earshot's server image
    python -m earshot.validation --target ws://HOST:PORT [--api-key KEY]
    python -m earshot.validation --peer                # upstream WhisperLive 0.10

Order: read ``validation.toml``; start (or reach) the server and probe it
(what it offers; an untestable target stops here with one line and exit 2);
run the scenario suite in a pytest subprocess; measure clips, concurrent
streams and network profiles; write the report. The report is assembled in
``reports/<time>.incomplete/`` and renamed to ``reports/<time>/`` only when it
is whole, so an interrupted run leaves a folder marked incomplete, never a
report that looks finished. Exit 0: SHIP; 1: DO NOT SHIP (a phase that could
not run, the suite included, fails its thresholds in the report); 2: the run
could not be made (bad target, bad thresholds file).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from earshot.testing import machine
from earshot.testing.offers import Offers, TargetError, probe
from earshot.testing.proxy import PROFILES
from earshot.validation import measure, report, suite
from earshot.validation.progress import Progress
from earshot.validation.thresholds import ConfigError, load

ROOT = Path(__file__).resolve().parents[3]
PHASES = ("suite", "clips", "concurrency", "network")


@dataclass
class Target:
    server: Any  # what the harness's targets offer: ws_url, host, port, auth_headers()...
    label: str  # how the report names it
    suite_args: list[str]
    container_id: str | None  # for the engine's stats; None for a deployment


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m earshot.validation",
                                     description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--target", metavar="WS_URL",
                       help="a deployment, ws://HOST:PORT (default: earshot's server image)")
    where.add_argument("--peer", action="store_true",
                       help="upstream WhisperLive 0.10 in the peer image (make peer-image)")
    parser.add_argument("--api-key", default=None, help="API key the server needs")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="earshot's image on the CPU (default) or the CUDA image with "
                             "the GPU (float16)")
    parser.add_argument("--config", type=Path, default=ROOT / "validation.toml",
                        help="thresholds file (default: validation.toml)")
    parser.add_argument("--reports", type=Path, default=ROOT / "reports",
                        help="where report folders go (default: reports/)")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"comma-separated subset of {','.join(PHASES)} (default: all)")
    return parser.parse_args(argv)


@contextmanager
def open_target(args: argparse.Namespace) -> Iterator[Target]:
    """Start or reach the server for the whole run; stop what was started."""
    if args.target:
        from earshot.testing.targets import UrlServer

        server = UrlServer(args.target, args.api_key)  # ValueError: not a ws:// URL
        yield Target(server, f"{args.target} (a deployment)",
                     ["--earshot-target", "url", "--earshot-url", args.target], None)
    elif args.peer:
        from earshot.testing.peer import PeerContainer

        # As many sessions as the suite's shared server allows (earshot/plugin/server.py).
        with PeerContainer.from_checkout(max_clients=16) as server:
            yield Target(server, "upstream WhisperLive 0.10 (peer image, its own container)",
                         ["--earshot-target", "url", "--earshot-url", server.ws_url],
                         server.get_wrapped_container().id)
    else:
        from earshot.testing.container import WhisperLiveContainer

        gpu = args.device == "cuda"
        with WhisperLiveContainer.from_package(gpu=gpu, api_key=args.api_key,
                                               device=args.device if gpu else None) as server:
            yield Target(server, f"earshot's {args.device} image (each suite test on its own "
                                 "target as under make integration)",
                         ["--earshot-target", "container", "--earshot-device", args.device],
                         server.get_wrapped_container().id)


def server_words(target: Target, offers: Offers) -> str:
    if "status" in offers.offered:
        try:
            status = target.server.server_status()
            return (f"{target.label}; model {status.get('model')} on {status.get('device')} "
                    f"({status.get('compute_type')}), version {status.get('version')}")
        except Exception as exc:  # the report still says what the target is
            return f"{target.label}; /status failed: {exc}"
    return f"{target.label}; no /status"


def take_signals() -> None:
    """SIGINT and SIGTERM both stop a run as Ctrl-C does (KeyboardInterrupt: every
    started server, container and suite process is ended on the way out).

    Set whatever was inherited: a job cancelled by a CI runner gets SIGTERM, whose
    default would end the validator at once and orphan its children; and a shell
    that starts a command in the background without job control starts it with
    SIGINT ignored, which Python keeps, so a plain ``kill -INT`` did nothing (this
    is why the interrupted-run test once ran on for 30 s and more)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)


class HeldSignals:
    """While held, SIGINT and SIGTERM are noted instead of raised, so that releasing
    what a run started (the server container, above all) is never cut short; on
    release, a noted one is raised then."""

    def __init__(self) -> None:
        self.noted: int | None = None
        self._old: dict[int, Any] = {}

    def hold(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._note)

    def _note(self, signum: int, frame: object) -> None:
        self.noted = signum

    def release(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}
        if self.noted is not None:
            self.noted = None
            raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    take_signals()
    try:
        return validate(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def validate(args: argparse.Namespace) -> int:
    """One validation run; the exit code (see the module's text)."""
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = [p for p in phases if p not in PHASES]
    try:
        if unknown or not phases:
            raise ConfigError(f"--phases: unknown phase {unknown[0]!r} (known: "
                              f"{', '.join(PHASES)})" if unknown else "--phases: no phase given")
        if args.target and not args.target.startswith(("ws://", "wss://")):
            raise ConfigError(f"--target must be ws://HOST:PORT or wss://..., "
                              f"not {args.target!r}")
        thresholds = load(args.config)
    except ConfigError as exc:
        return _fail(str(exc))
    started, t0 = datetime.now(UTC), time.monotonic()
    held = HeldSignals()
    with ExitStack() as stack:
        stack.callback(held.release)  # last: after everything else is released
        try:
            target = stack.enter_context(open_target(args))
            offers = probe(target.server.ws_url, target.server.http_url,
                           target.server.auth_headers())
        except (TargetError, ValueError) as exc:
            return _fail(str(exc))
        except Exception as exc:  # the image would not build, the container not start
            return _fail(_why(exc))
        stamp = started.strftime("%Y-%m-%dT%H-%M-%SZ")
        folder = args.reports / f"{stamp}.incomplete"
        folder.mkdir(parents=True)
        (folder / "INCOMPLETE").write_text("This run did not finish; its report is partial.\n")
        run = report.Run(target=args.target or ("peer" if args.peer else "container"),
                         server=server_words(target, offers), machine=machine.describe(),
                         offers=offers, thresholds=thresholds,
                         started=started.strftime("%Y-%m-%d %H:%M:%S"), phases=tuple(phases))
        progress = stack.enter_context(Progress())
        stack.callback(held.hold)  # first: the releases below are not interrupted
        try:
            _phases(run, target, phases, folder, progress)
        except KeyboardInterrupt:
            print(f"interrupted: the partial report stays in {folder}", file=sys.stderr)
            return 130
        run.seconds = time.monotonic() - t0
        checks = report.write(run, folder)
        (folder / "INCOMPLETE").unlink()
        final = args.reports / stamp
        folder.rename(final)
    print(report.verdict(checks))
    print(f"report: {final}/summary.md (and summary.html, metrics.json, junit.xml, plots)")
    return report.exit_status(checks)


@contextmanager
def _phase(run: report.Run, name: str) -> Iterator[None]:
    """Run one phase; one that fails to run is noted in the report (its thresholds then
    fail, saying why) and the run goes on with the next."""
    try:
        yield
    except Exception as exc:  # the report says what went wrong; the verdict counts it
        run.problems[name] = _why(exc)


def _why(exc: Exception) -> str:
    """An exception in one line: its type and the first line of its text."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _phases(run: report.Run, target: Target, phases: list[str], folder: Path,
            progress: Progress) -> None:
    headers = target.server.auth_headers()
    url = target.server.ws_url
    if "suite" in phases:
        # The key travels in the suite's environment, not its argv (which ps shows).
        key = {"EARSHOT_TEST_API_KEY": target.server.api_key} if target.server.api_key else {}
        with _phase(run, "suite"):
            run.suite = progress.suite(lambda on_event, poll: suite.run(
                target.suite_args, folder, on_event=on_event, poll=poll, env=key))
    measuring = [p for p in phases if p != "suite"]
    if not measuring:
        return
    try:
        clips, why = measure.load_clips(), "the manifest lists no clip"
    except Exception as exc:  # e.g. a clip neither in the mirror nor downloadable
        clips, why = [], _why(exc)
    if not clips:  # every measuring phase streams clips: none of them can run
        run.problems.update({name: f"loading the clips: {why}" for name in measuring})
        return
    stats = measure.ContainerStats(target.container_id) if target.container_id else None
    with stats or ExitStack():
        if "clips" in phases:
            with _phase(run, "clips"), progress.phase("clips at real time", len(clips)) as step:
                run.clips = asyncio.run(measure.clips_phase(
                    url, clips, headers, lambda s: step(s.clip)))
        n = int(run.thresholds["run.concurrent_streams"])
        if "concurrency" in phases:
            with _phase(run, "concurrency"), \
                    progress.phase(f"{n} concurrent streams", 1) as step:
                run.concurrency = asyncio.run(measure.concurrency_phase(url, clips, n, headers))
                step("done")
        if "network" in phases:
            per = int(run.thresholds["run.streams_per_profile"])
            scheme = "wss" if url.startswith("wss") else "ws"
            with _phase(run, "network"), \
                    progress.phase("network profiles", len(PROFILES)) as step:
                run.network = asyncio.run(measure.network_phase(
                    target.server.host, target.server.port, clips[0], per, headers, scheme,
                    step))
    if stats is not None:
        run.container = {"cpu_seconds": stats.cpu_seconds,
                         "peak_memory_mib": stats.peak_memory_mib}


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
