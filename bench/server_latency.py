"""Latency, cost and capacity of one earshot server, measured over the wire.

Starts one server in a subprocess (:class:`earshot.testing.local.LocalServer`)
and drives it with the manifest's speech clips through
:func:`earshot.testing.wire.stream`, which records the monotonic receive time of
every message. Three measurements follow, each printed as a Markdown table:

1. **Real time, one stream at a time.** Each clip is sent paced at real time in
   100 ms frames. Per clip:

   - *first text*: from the first audio frame sent to the first segments message
     holding non-empty text;
   - *final latency*: from END_OF_AUDIO sent to the END_OF_TRANSCRIPT message;
   - *RTF*: from the first audio frame to END_OF_TRANSCRIPT, divided by the clip's
     duration (at real-time pacing this is at least 1; 1 + final latency / duration);
   - *CPU s / audio s*: the server process's CPU time (user + system, all its
     threads, read with psutil before and after the stream) per second of audio:
     the compute one second of speech costs, whatever the pacing;
   - *WER*: the normalised word error rate of the completed segments against the
     manifest's reference.

2. **As fast as possible.** Each clip again, sent without pacing, to show that
   nothing is lost when audio arrives faster than real time: WER, final latency,
   *stream s* (first frame to END_OF_TRANSCRIPT), and *whole-file s*: what
   faster-whisper's own ``transcribe`` takes for the same file whole in this
   process (same model, beam 5), with the ratio of the two.

Both single-stream measurements run ``--repeat`` times (5); the tables show
medians.

3. **Concurrency.** For each N in a rising list, N real-time streams at once
   (cycling through the clips, each with its own uid, stream i starting
   i x --stagger seconds after the first so their frames do not align). Per
   stream:

   - *final latency* as above;
   - *partial lag*: the largest, over its segments messages, of
     (receive time - first audio frame - the latest segment end in the message),
     i.e. how far the text trailed the audio it describes. Whisper's segment end
     times are approximate, so this is an estimate with roughly +-0.3 s of noise.

   A stream is *whole* when its final transcript arrived, the server closed with
   1000 and its WER is at most --max-wer. The largest N at which every stream was
   whole and every final latency and partial lag stayed under --max-lag is
   reported as the maximum number of concurrent real-time streams.

One untimed fast stream warms the model up before anything is measured. Every
stream has a timeout (its duration plus --stream-timeout), so the run is bounded.
Progress goes to stderr, tables to stdout.

Usage: .venv/bin/python bench/server_latency.py [--workers N] [--beam-size N] ...
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import psutil

from earshot import audio
from earshot.protocol import CloseCode
from earshot.testing import wire
from earshot.testing.local import LocalServer, ServerStartError
from earshot.testing.machine import cpu_model
from earshot.testing.wer import wer
from earshot.validation.measure import Clip, load_clips

DEFAULT_LEVELS = (1, 2, 4, 6, 8, 10, 12)
CHUNK_MS = 100.0


# -- data ------------------------------------------------------------------------


@dataclass
class Result:
    """One stream's outcome; ``transcript`` is None when the stream raised."""

    clip: Clip
    transcript: wire.Exchange | None
    error: str = ""
    cpu_seconds: float | None = None

    @cached_property
    def wer(self) -> float | None:
        return None if self.transcript is None else wer(self.clip.reference, self.transcript.text)

    @property
    def first_text(self) -> float | None:
        t = self.transcript
        return None if t is None else t.latency(t.first_audio_at, t.first_time("segments", True))

    @property
    def final_latency(self) -> float | None:
        t = self.transcript
        return None if t is None else t.latency(t.end_of_audio_at, t.first_time("end"))

    @property
    def rtf(self) -> float | None:
        """First audio frame to END_OF_TRANSCRIPT, over the clip's duration."""
        t = self.transcript
        span = None if t is None else t.latency(t.first_audio_at, t.first_time("end"))
        return None if span is None else span / self.clip.seconds

    @property
    def cpu_per_audio(self) -> float | None:
        return None if self.cpu_seconds is None else self.cpu_seconds / self.clip.seconds

    @property
    def partial_lag(self) -> float | None:
        """Worst (receive time - first frame - latest segment end) over segments messages."""
        t = self.transcript
        if t is None or t.first_audio_at is None:
            return None
        lags = [
            at - t.first_audio_at - max(s.end for s in m.segments)
            for at, m in t.messages
            if m.kind == "segments" and m.segments
        ]
        return max(lags, default=None)

    def whole(self, max_wer: float) -> bool:
        t, score = self.transcript, self.wer
        return (
            t is not None
            and t.final
            and t.close_code == CloseCode.NORMAL
            and score is not None
            and score <= max_wer
        )

    def problem(self, max_wer: float) -> str:
        """Why the stream is not whole ('' when it is)."""
        t = self.transcript
        if t is None:
            return self.error or "no transcript"
        if not t.final:
            return f"no END_OF_TRANSCRIPT (close {t.close_code} {t.close_reason!r})"
        if t.close_code != CloseCode.NORMAL:
            return f"close {t.close_code} {t.close_reason!r}"
        if (self.wer or 0.0) > max_wer:
            return f"WER {self.wer:.2f}: {t.text!r}"
        return ""


# -- streaming -------------------------------------------------------------------


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def server_cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU time of the server process and any children."""
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


async def run_stream(
    url: str, clip: Clip, *, speed: float | None, timeout: float, delay: float = 0.0
) -> Result:
    """Stream one clip (after ``delay`` seconds of pacing); never raises."""
    if delay:
        await asyncio.sleep(delay)  # pacing: staggers concurrent streams
    try:
        transcript = await wire.stream(
            url,
            clip.samples,
            speed=speed,
            chunk_ms=CHUNK_MS,
            timeout=clip.seconds + timeout,
            uid=f"bench-{clip.name}-{uuid.uuid4().hex[:8]}",
        )
    except TimeoutError:
        return Result(clip, None, f"timed out after {clip.seconds + timeout:.0f} s")
    except Exception as exc:  # a benchmark reports failures instead of stopping
        return Result(clip, None, f"{type(exc).__name__}: {exc}")
    return Result(clip, transcript)


async def run_measured(
    url: str, clip: Clip, process: psutil.Process, *, speed: float | None, timeout: float
) -> Result:
    """One stream on its own, with the server's CPU time it cost."""
    before = server_cpu_seconds(process)
    result = await run_stream(url, clip, speed=speed, timeout=timeout)
    result.cpu_seconds = server_cpu_seconds(process) - before
    return result


@dataclass
class Level:
    streams: int
    results: list[Result]
    cpu_seconds: float

    @property
    def audio_seconds(self) -> float:
        return sum(r.clip.seconds for r in self.results)

    def worst(self, metric: Callable[[Result], float | None]) -> float | None:
        values = [v for v in map(metric, self.results) if v is not None]
        return max(values, default=None)

    def whole(self, max_wer: float) -> bool:
        return all(r.whole(max_wer) for r in self.results)

    def passed(self, max_wer: float, max_lag: float) -> bool:
        final = self.worst(lambda r: r.final_latency)
        lag = self.worst(lambda r: r.partial_lag)
        return (
            self.whole(max_wer)
            and final is not None
            and final < max_lag
            and (lag is None or lag < max_lag)
        )


async def run_level(
    url: str,
    clips: Sequence[Clip],
    n: int,
    process: psutil.Process,
    *,
    stagger: float,
    timeout: float,
) -> Level:
    """N concurrent real-time streams, cycling through the clips."""
    chosen = list(itertools.islice(itertools.cycle(clips), n))
    before = server_cpu_seconds(process)
    results = await asyncio.gather(
        *(
            run_stream(url, clip, speed=1.0, timeout=timeout, delay=i * stagger)
            for i, clip in enumerate(chosen)
        )
    )
    return Level(n, list(results), server_cpu_seconds(process) - before)


# -- output ----------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown pipe table, columns padded; every column but the first right-aligned."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]
    widths = [max(w, 3) for w in widths]

    def line(cells: Sequence[str]) -> str:
        padded = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths))
        + "|"
    )
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def machine_description(flags: Sequence[str], status: dict) -> str:
    physical = psutil.cpu_count(logical=False)
    memory = psutil.virtual_memory().total / 2**30
    lines = [
        f"- CPU: {cpu_model()}",
        f"- cores: {os.cpu_count()} logical, {physical or '?'} physical; memory {memory:.1f} GiB",
        f"- Python {platform.python_version()} on {platform.platform()}",
        f"- server flags: {' '.join(flags)}",
        f"- model: {status.get('model')} on {status.get('device')} "
        f"({status.get('compute_type')}), {status.get('inference', {}).get('workers')} worker(s)",
    ]
    return "\n".join(lines)


def median(runs: Sequence[Result], metric: Callable[[Result], float | None]) -> float | None:
    values = [v for v in map(metric, runs) if v is not None]
    return statistics.median(values) if values else None


def sequential_table(per_clip: Sequence[Sequence[Result]]) -> str:
    headers = [
        "clip",
        "audio s",
        "first text s",
        "final latency s",
        "RTF",
        "CPU s / audio s",
        "WER",
    ]
    rows = [
        [
            runs[0].clip.name,
            fmt(runs[0].clip.seconds, 1),
            fmt(median(runs, lambda r: r.first_text)),
            fmt(median(runs, lambda r: r.final_latency)),
            fmt(median(runs, lambda r: r.rtf)),
            fmt(median(runs, lambda r: r.cpu_per_audio)),
            fmt(median(runs, lambda r: r.wer), 3),
        ]
        for runs in per_clip
    ]
    return table(headers, rows)


def fast_table(per_clip: Sequence[Sequence[Result]], whole: Mapping[str, float]) -> str:
    headers = ["clip", "audio s", "final latency s", "stream s", "whole-file s",
               "stream / whole-file", "CPU s / audio s", "WER"]
    rows = []
    for runs in per_clip:
        clip = runs[0].clip
        streamed = median(runs, lambda r: None if r.rtf is None else r.rtf * r.clip.seconds)
        ratio = None if streamed is None else streamed / whole[clip.name]
        rows.append([
            clip.name,
            fmt(clip.seconds, 1),
            fmt(median(runs, lambda r: r.final_latency)),
            fmt(streamed),
            fmt(whole[clip.name]),
            fmt(ratio),
            fmt(median(runs, lambda r: r.cpu_per_audio)),
            fmt(median(runs, lambda r: r.wer), 3),
        ])
    return table(headers, rows)


def whole_file_seconds(clips: Sequence[Clip], repeat: int) -> dict[str, float]:
    """Median wall seconds faster-whisper takes to transcribe each clip whole, in
    this process, with the server's model and beam (its first call is not counted)."""
    from earshot.load.baseline import whole_file

    whole_file(clips[:1])  # warm-up: the model's first call is slower
    runs = [whole_file(clips) for _ in range(repeat)]
    return {clip.name: statistics.median(run[i].seconds for run in runs)
            for i, clip in enumerate(clips)}


def concurrency_table(levels: Sequence[Level], max_wer: float, max_lag: float) -> str:
    headers = [
        "streams",
        "max final latency s",
        "max partial lag s",
        "worst WER",
        "CPU s / audio s",
        "all whole",
        "pass",
    ]
    rows = [
        [
            str(lv.streams),
            fmt(lv.worst(lambda r: r.final_latency)),
            fmt(lv.worst(lambda r: r.partial_lag)),
            fmt(lv.worst(lambda r: r.wer), 3),
            fmt(lv.cpu_seconds / lv.audio_seconds),
            "yes" if lv.whole(max_wer) else "NO",
            "yes" if lv.passed(max_wer, max_lag) else "NO",
        ]
        for lv in levels
    ]
    return table(headers, rows)


def problems(results: Sequence[Result], max_wer: float) -> list[str]:
    return [f"  {r.clip.name}: {p}" for r in results if (p := r.problem(max_wer))]


# -- main ------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure an earshot server's latency, CPU cost and concurrent "
        "real-time capacity with the manifest's speech clips.",
        epilog="Example: .venv/bin/python bench/server_latency.py --workers 2 --beam-size 1 "
        "--server-flag=--compute-type=int8",
    )
    server = parser.add_argument_group("server")
    server.add_argument("--workers", type=int, help="forwarded as --workers")
    server.add_argument("--beam-size", type=int, help="forwarded as --beam-size")
    server.add_argument("--cpu-threads", type=int, help="forwarded as --cpu-threads")
    server.add_argument(
        "--server-flag",
        action="append",
        default=[],
        metavar="FLAG",
        help="any other server flag, e.g. --server-flag=--device=cuda (repeatable)",
    )
    bench = parser.add_argument_group("benchmark")
    bench.add_argument(
        "--max-streams",
        type=int,
        default=DEFAULT_LEVELS[-1],
        metavar="N",
        help=f"highest concurrency level; levels are {', '.join(map(str, DEFAULT_LEVELS))} "
        "up to N (default %(default)s)",
    )
    bench.add_argument(
        "--stagger",
        type=float,
        default=0.1,
        help="seconds between concurrent stream starts (default %(default)s)",
    )
    bench.add_argument(
        "--stream-timeout",
        type=float,
        default=60.0,
        help="seconds each stream may take beyond its audio (default %(default)s)",
    )
    bench.add_argument(
        "--max-lag",
        type=float,
        default=1.5,
        help="latency limit for a passing concurrency level (default %(default)s)",
    )
    bench.add_argument(
        "--repeat",
        type=int,
        default=5,
        metavar="N",
        help="runs of each single-stream measurement; the tables show medians "
        "(default %(default)s)",
    )
    bench.add_argument(
        "--max-wer",
        type=float,
        default=0.10,
        help="WER limit for a whole stream (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.max_streams < 1 or args.repeat < 1:
        parser.error("--max-streams and --repeat must be at least 1")
    return args


def levels_up_to(n: int) -> list[int]:
    levels = [lv for lv in DEFAULT_LEVELS if lv <= n]
    return levels if levels and levels[-1] == n else [*levels, n]


def server_flags(args: argparse.Namespace) -> list[str]:
    # --max-clients comes first so a --server-flag can still override it.
    flags = ["--max-clients", str(max(args.max_streams, 4) + 2)]
    for name in ("workers", "beam_size", "cpu_threads"):
        value = getattr(args, name)
        if value is not None:
            flags += [f"--{name.replace('_', '-')}", str(value)]
    return flags + args.server_flag


async def benchmark(server: LocalServer, clips: Sequence[Clip], args: argparse.Namespace) -> None:
    assert server.process is not None
    process = psutil.Process(server.process.pid)
    url, timeout = server.ws_url, args.stream_timeout

    progress("warming up (one untimed fast stream)")
    warm = await run_stream(url, clips[0], speed=None, timeout=timeout)
    if warm.transcript is None:
        progress(f"warning: the warm-up stream failed: {warm.error}")

    sequential: list[list[Result]] = [[] for _ in clips]
    for run in range(args.repeat):
        for clip, runs in zip(clips, sequential, strict=True):
            progress(f"real time, run {run + 1} of {args.repeat}: {clip.name} "
                     f"({clip.seconds:.1f} s)")
            runs.append(await run_measured(url, clip, process, speed=1.0, timeout=timeout))
    print(f"\n## One stream at a time, paced at real time (medians of {args.repeat})\n")
    print(sequential_table(sequential))
    print_problems([r for runs in sequential for r in runs], args.max_wer)

    fast: list[list[Result]] = [[] for _ in clips]
    for run in range(args.repeat):
        for clip, runs in zip(clips, fast, strict=True):
            progress(f"as fast as possible, run {run + 1} of {args.repeat}: {clip.name}")
            runs.append(await run_measured(url, clip, process, speed=None, timeout=timeout))
    progress("faster-whisper on each whole file, in this process")
    whole = await asyncio.to_thread(whole_file_seconds, clips, args.repeat)
    print(f"\n## One stream at a time, sent as fast as possible (medians of {args.repeat})\n")
    print(fast_table(fast, whole))
    print_problems([r for runs in fast for r in runs], args.max_wer)

    levels = []
    for n in levels_up_to(args.max_streams):
        progress(f"concurrency: {n} real-time stream(s)")
        levels.append(
            await run_level(url, clips, n, process, stagger=args.stagger, timeout=timeout)
        )
    print(f"\n## Concurrent real-time streams (stagger {args.stagger:g} s)\n")
    print(concurrency_table(levels, args.max_wer, args.max_lag))
    for level in levels:
        print_problems(level.results, args.max_wer, f"{level.streams} streams: ")
    print()
    print(summary(levels, args.max_wer, args.max_lag))


def print_problems(results: Sequence[Result], max_wer: float, prefix: str = "") -> None:
    found = problems(results, max_wer)
    if found:
        print(f"\n{prefix}streams that did not come back whole:")
        print("\n".join(found))


def summary(levels: Sequence[Level], max_wer: float, max_lag: float) -> str:
    """The largest N such that every level up to N passed, and the whole-stream count.

    Partial lag is an estimate with a few tenths of a second of noise, so a
    level near the limit can fail while a higher one passes; the headline
    number counts only the unbroken run from one stream upwards.
    """
    criteria = f"every stream whole with WER <= {max_wer:g}, lag < {max_lag:g} s"
    best = 0
    for level in sorted(levels, key=lambda lv: lv.streams):
        if not level.passed(max_wer, max_lag):
            break
        best = level.streams
    whole = [lv.streams for lv in levels if lv.whole(max_wer)]
    most_whole = max(whole, default=0)
    return (
        f"Max concurrent real-time streams: {best or 'none'} ({criteria} at every level up "
        f"to it); every stream came back whole at up to {most_whole or 'no'} streams"
    )


def server_warnings(log: str) -> list[str]:
    return [line for line in log.splitlines() if " WARNING " in line or " ERROR " in line]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        clips = load_clips()
    except audio.ClipError as exc:
        print(f"error: cannot load the clips: {exc}", file=sys.stderr)
        return 2
    flags = server_flags(args)
    progress(f"starting the server: {' '.join(flags)}")
    server = LocalServer(*flags)
    try:
        server.start()
    except ServerStartError as exc:
        print(f"error: the server failed to start: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        print("# earshot server latency\n")
        print(machine_description(flags, server.server_status()))
        asyncio.run(benchmark(server, clips, args))
    finally:
        server.stop()
    for line in server_warnings(server.log_text()):
        progress(f"server log: {line}")
    progress(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
