"""``make load`` and ``make capacity``: Locust against earshot's container or a deployment.

    python -m earshot.load load [--target ws://HOST:PORT] [--users N] [--spawn-rate R]
                                [--duration S] [--workers N]
    python -m earshot.load capacity [--target ws://...] [--peer] [--soak S]

``load`` runs Locust's own command line, headless, and leaves its CSV and HTML
reports in ``reports/load-<UTC time>/``; ``--workers N`` runs Locust's master
with N worker processes. ``capacity`` searches for the largest number of
concurrent real-time streams the server holds, then soaks it at 75 % of that
(see :mod:`earshot.load.capacity`); ``--peer`` measures upstream WhisperLive 0.10
under the same load in the same run. Exit status: 0 when the load ran without
a failed step (``load``) or a capacity was found and the soak held
(``capacity``); 1 otherwise; 2 for bad input or a server that did not start.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from earshot import audio
from earshot.load import LOCUSTFILE
from earshot.load import capacity as cap
from earshot.load.baseline import whole_file
from earshot.load.servers import LoadTarget, open_target
from earshot.load.session import load_clip
from earshot.server.config import ServerConfig
from earshot.testing.machine import describe

SERVER_OPTIONS = [f.name for f in fields(ServerConfig) if f.name not in ("host", "port")]
DEFAULT_LEVELS = (1, 4, 6, 8, 10, 12, 14, 16, 20, 24)
STOP_TIMEOUT_S = 60  # users finish the session they are in when a run ends


def say(text: str) -> None:
    print(text, flush=True)


def report_folder(root: Path, kind: str) -> Path:
    folder = root / f"{kind}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    folder.mkdir(parents=True, exist_ok=False)
    return folder


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m earshot.load",
                                     description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("load", "capacity"):
        command = commands.add_parser(name)
        command.add_argument("--target", default="",
                             help="ws://HOST:PORT of a running server (default: start "
                                  "earshot's container for the run)")
        command.add_argument("--api-key", default="")
        command.add_argument("--clips", default="",
                             help="comma-separated manifest clips (default: all)")
        command.add_argument("--reports", type=Path, default=Path("reports"))
        command.add_argument("--server-option", action="append", default=[],
                             metavar="NAME=VALUE",
                             help="a setting of earshot's container, e.g. beam_size=1 "
                                  "(repeatable; see earshot-server --help)")
        command.add_argument("--image", default="",
                             help="run this earshot image instead of building one from "
                                  "this tree (e.g. an older tag, to compare)")
    load = commands.choices["load"]
    load.add_argument("--users", type=int, default=4, help="concurrent streams (default 4)")
    load.add_argument("--spawn-rate", type=float, default=1.0,
                      help="users started per second (default 1)")
    load.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    load.add_argument("--workers", type=int, default=0,
                      help="Locust worker processes under a master (default 0: one process)")
    search = commands.choices["capacity"]
    search.add_argument("--levels", default=",".join(map(str, DEFAULT_LEVELS)),
                        help="user counts to try, rising (default %(default)s)")
    search.add_argument("--step-seconds", type=float, default=45.0,
                        help="seconds each level runs (default 45)")
    search.add_argument("--soak", type=float, default=1800.0,
                        help="seconds of churn at 75 %% of the capacity (default 1800; 0: none)")
    search.add_argument("--peer", action="store_true",
                        help="also search upstream WhisperLive 0.10's capacity, same load")
    args = parser.parse_args(argv)
    problems = []
    if args.command == "load":
        if args.users < 1 or args.spawn_rate <= 0 or args.duration <= 0 or args.workers < 0:
            problems.append("--users must be at least 1, --spawn-rate and --duration over 0, "
                            "--workers 0 or more")
    else:
        try:
            args.levels = sorted({int(n) for n in args.levels.split(",") if n.strip()})
        except ValueError:
            problems.append(f"--levels must be whole numbers separated by commas, "
                            f"not {args.levels!r}")
        if not problems and (not args.levels or args.levels[0] < 1):
            problems.append("--levels needs at least one number, each 1 or more")
        if args.step_seconds <= 0 or args.soak < 0:
            problems.append("--step-seconds must be over 0 and --soak 0 or more")
    args.settings = {}
    for option in args.server_option:
        name, sep, value = option.partition("=")
        if not sep or not name.strip():
            problems.append(f"--server-option must be NAME=VALUE, not {option!r}")
        name = name.strip().replace("-", "_")
        if name not in SERVER_OPTIONS:
            problems.append(f"--server-option: no server setting {name!r}; "
                            f"known: {', '.join(SERVER_OPTIONS)}")
        args.settings[name] = value.strip()
    if args.target and (args.settings or args.image):
        problems.append("--server-option and --image set earshot's container; "
                        "a --target runs as it is")
    if args.target and not args.target.startswith(("ws://", "wss://")):
        problems.append(f"--target must be a ws:// or wss:// URL, not {args.target!r}")
    if args.command == "capacity" and args.target and args.peer:
        problems.append("--peer starts WhisperLive's container beside earshot's; "
                        "it does not go with --target")
    try:
        args.clip_names = [load_clip(n.strip()).name for n in args.clips.split(",")
                           if n.strip()] or list(audio.load_manifest())
    except audio.ClipError as exc:
        problems.append(str(exc))
    if problems:
        parser.error("; ".join(problems))
    return args


def locust_options(args: argparse.Namespace, target: LoadTarget) -> list[str]:
    """The locustfile's own options for this run."""
    options = ["--end-by", target.end_by, "--clips", ",".join(args.clip_names)]
    return options + (["--api-key", args.api_key] if args.api_key else [])


def load(args: argparse.Namespace) -> int:
    folder = report_folder(args.reports, "load")
    with open_target(args.target, api_key=args.api_key or None,
                     settings={"max_clients": max(args.users * 2, 8), **args.settings},
                     image=args.image or None) as target:
        say(f"==> {args.users} user(s) against {target.name} at {target.url} for "
            f"{args.duration:g} s" + (f" ({args.workers} Locust workers)" if args.workers else ""))
        command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
                   "--host", target.url, "--users", str(args.users),
                   "--spawn-rate", str(args.spawn_rate), "--run-time", f"{args.duration:g}s",
                   "--stop-timeout", str(STOP_TIMEOUT_S), "--csv", str(folder / "locust"),
                   "--html", str(folder / "report.html"), *locust_options(args, target)]
        if args.workers:
            command += ["--processes", str(args.workers)]
        code = subprocess.run(command, check=False).returncode
    say(f"==> Locust's reports: {folder}/ (report.html, locust_stats.csv, "
        f"locust_failures.csv); exit {code}")
    return 0 if code == 0 else 1


def capacity(args: argparse.Namespace) -> int:
    folder = report_folder(args.reports, "capacity")
    clips = [load_clip(name) for name in args.clip_names]
    say(f"==> whole-file baseline: faster-whisper on each of {len(clips)} clip(s)")
    baselines = whole_file(clips)
    (folder / "baseline.json").write_text(json.dumps({b.clip: b.wer for b in baselines}))
    extra = ["--wer-baseline", str(folder / "baseline.json")]
    lines = [f"# Capacity, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             f"Machine: {describe()}", "", baseline_table(baselines), ""]
    found, soaked = 0, None
    measured: dict[str, list[cap.Level]] = {}
    names = ["earshot"] + (["peer"] if args.peer else [])
    for name in names:
        sub = folder / name
        sub.mkdir()
        with open_target(args.target if name == "earshot" else None, peer=name == "peer",
                         api_key=args.api_key or None,
                         settings={"max_clients": max(args.levels) * 2,
                                   **(args.settings if name == "earshot" else {})},
                         image=args.image or None) as target:
            options = locust_options(args, target) + extra
            say(f"==> {target.name}: warming up (one untimed stream)")
            cap.run_level(target, 1, 1.0, sub, "warm-up", options)
            if name == "earshot":
                levels = cap.search(target, args.levels, args.step_seconds, sub, options, say)
            else:  # the same loads earshot was measured under, each of them
                loads = [n for n in args.levels if n <= max(lv.users for lv in measured["earshot"])]
                levels = cap.search(target, loads, args.step_seconds, sub, options, say,
                                    every=True)
            measured[name] = levels
            held = cap.capacity(levels)
            lines += [f"## {target.name}", "", levels_table(levels), "",
                      f"Capacity: {held} concurrent real-time stream(s).", ""]
            if name == "earshot":
                found = held
                if args.soak and held:
                    soaked = cap.soak(target, cap.soak_users(held), args.soak, sub, options,
                                      say)
                    lines += [soak_text(soaked), ""]
    if args.peer:
        lines += ["## Side by side (same loads, same run)", "",
                  side_by_side(measured["earshot"], measured["peer"]), ""]
    text = "\n".join(lines)
    (folder / "capacity.md").write_text(text)
    say("\n" + text)
    say(f"==> report: {folder}/capacity.md (each run's JSON and log beside it)")
    return 0 if found and (soaked is None or soaked.held) else 1


def baseline_table(baselines: Sequence) -> str:
    rows = ["| clip | whole-file WER | faster-whisper s |", "|---|---:|---:|"]
    rows += [f"| {b.clip} | {b.wer:.3f} | {b.seconds:.2f} |" for b in baselines]
    return "\n".join(rows)


def levels_table(levels: Sequence[cap.Level]) -> str:
    rows = ["| users | streams | failed steps | p50 first_text s | p95 first_text s "
            "| p50 final s | p95 final s | generator CPU s/stream | held |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for level in levels:
        steps, gen = level.summary["steps"], level.summary["generator"]
        rows.append(
            f"| {level.users} | {level.streams} | {level.failures} "
            f"| {cap.fmt(steps['first_text']['p50'])} | {cap.fmt(steps['first_text']['p95'])} "
            f"| {cap.fmt(steps['final']['p50'])} | {cap.fmt(steps['final']['p95'])} "
            f"| {cap.fmt(gen['cpu_s_per_session'], 3)} "
            f"| {'yes' if level.held else 'NO: ' + '; '.join(level.problems())} |")
    failures = {reason: n for level in levels
                for reason, n in level.summary["failures"].items()}
    if failures:
        rows += ["", "Failures:", *[f"- {n} x {reason}" for reason, n in failures.items()]]
    return "\n".join(rows)


def side_by_side(ours: Sequence[cap.Level], theirs: Sequence[cap.Level]) -> str:
    """Per load both were measured under: p50s and their ratio (earshot / WhisperLive)."""
    def ratio(a: float | None, b: float | None) -> str:
        return "-" if a is None or not b else f"{a / b:.2f}"

    rows = ["| users | first_text p50 s: earshot / WhisperLive (ratio) "
            "| final p50 s: earshot / WhisperLive (ratio) | failed steps: earshot / WhisperLive |",
            "|---:|---|---|---|"]
    by_users = {level.users: level for level in theirs}
    for level in ours:
        peer = by_users.get(level.users)
        if peer is None:
            continue
        cells = []
        for step in ("first_text", "final"):
            a, b = level.summary["steps"][step]["p50"], peer.summary["steps"][step]["p50"]
            cells.append(f"{cap.fmt(a)} / {cap.fmt(b)} ({ratio(a, b)})")
        rows.append(f"| {level.users} | {cells[0]} | {cells[1]} "
                    f"| {level.failures} / {peer.failures} |")
    return "\n".join(rows)


def soak_text(soak: cap.Soak) -> str:
    steps, level = soak.summary["steps"], cap.Level(soak.users, soak.summary)
    verdict = "held" if soak.held else "did NOT hold: " + "; ".join(soak.problems)
    return "\n".join([
        f"Soak: {soak.users} user(s) for {soak.seconds:g} s, {verdict}.",
        "",
        f"- streams: {level.streams}, failed steps: {level.failures}",
        f"- p95 first_text {cap.fmt(steps['first_text']['p95'])} s, "
        f"p95 final {cap.fmt(steps['final']['p95'])} s",
        f"- server memory before {cap.fmt(soak.memory_before_mib, 1)} MiB, after "
        f"{cap.fmt(soak.memory_after_mib, 1)} MiB; sessions after: "
        f"{'-' if soak.sessions_after is None else soak.sessions_after}",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return load(args) if args.command == "load" else capacity(args)
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except Exception as exc:  # a server that did not start, a run that crashed
        say(f"error: {exc}")
        return 2

