"""The validator's measurements, over the wire, of any WhisperLive-protocol server.

Three phases, each a list of :class:`Stream` results from
:func:`earshot.testing.wire.stream` (which timestamps every message):

- clips: each manifest clip on its own, paced at real time;
- concurrency: N real-time streams at once (``run.concurrent_streams``);
- network: ``run.streams_per_profile`` streams through the latency proxy under
  each of its profiles (lan, wifi, cellular, intercontinental).

A server without END_OF_TRANSCRIPT has no marked end; its final latency is
then taken at its close (or, if it stays open, its last update after
END_OF_AUDIO) and flagged ``estimated``: a server that closes at once is
"fast" there, and its WER says what that cost.
:class:`ContainerStats` samples the engine's stats of a server container
(CPU seconds, peak memory) while the phases run.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from earshot import audio
from earshot.audio import Speech as Clip
from earshot.testing import wire
from earshot.testing.container import docker_client
from earshot.testing.proxy import PROFILES, Proxy
from earshot.testing.quality import StreamQuality, updates_of
from earshot.testing.wer import wer

STAGGER_S = 0.25  # concurrent streams start this far apart, so frames do not align
STREAM_SLACK_S = 60.0  # a stream's deadline: its duration plus this


def load_clips() -> list[Clip]:
    """Every clip of the manifest, decoded once."""
    return [audio.load_speech(name) for name in audio.load_manifest()]


@dataclass
class Stream:
    """One measured stream."""

    clip: str
    seconds: float
    reference: str
    transcript: wire.Exchange | None = None
    error: str | None = None
    profile: str | None = None

    @property
    def ok(self) -> bool:
        return self.transcript is not None and self.error is None

    @property
    def text(self) -> str:
        return self.transcript.heard if self.transcript else ""

    @property
    def wer(self) -> float | None:
        return wer(self.reference, self.text) if self.ok else None

    @property
    def first_text_s(self) -> float | None:
        t = self.transcript
        if t is None or t.first_audio_at is None:
            return None
        return t.latency(t.first_audio_at, t.first_time("segments", nonempty=True))

    @property
    def final_at(self) -> float | None:
        """END_OF_TRANSCRIPT's arrival; without one, the server's close (nothing more can
        come), else its last update after END_OF_AUDIO (it went quiet, open)."""
        t = self.transcript
        if t is None or t.end_of_audio_at is None:
            return None
        marked = t.first_time("end")
        if marked is not None:
            return marked
        if t.closed_at is not None:
            return t.closed_at
        after = [at for at, m in t.messages if at >= t.end_of_audio_at and m.kind == "segments"]
        return after[-1] if after else None

    @property
    def final_estimated(self) -> bool:
        return self.transcript is not None and not self.transcript.final

    @property
    def final_s(self) -> float | None:
        t = self.transcript
        return None if t is None else t.latency(t.end_of_audio_at, self.final_at)

    @property
    def rtf(self) -> float | None:
        t = self.transcript
        if t is None or t.first_audio_at is None or self.final_at is None:
            return None
        return (self.final_at - t.first_audio_at) / self.seconds

    def lag_series(self) -> list[tuple[float, float]]:
        """(seconds since the first audio, how far the text trailed the audio sent)."""
        t = self.transcript
        if t is None or t.first_audio_at is None:
            return []
        series = []
        for at, message in t.messages:
            ends = [s.end for s in message.segments if s.text.strip()]
            if message.kind == "segments" and ends:
                elapsed = min(at, t.end_of_audio_at or at) - t.first_audio_at
                series.append((at - t.first_audio_at, max(0.0, elapsed - max(ends))))
        return series

    @property
    def max_lag_s(self) -> float | None:
        return max((lag for _, lag in self.lag_series()), default=None)

    @property
    def quality(self) -> StreamQuality | None:
        """How its partials behaved on the way to the final (earshot.testing.quality)."""
        t = self.transcript
        if t is None or t.first_audio_at is None:
            return None
        return StreamQuality.of(updates_of(t.messages), first_audio_at=t.first_audio_at,
                                audio_seconds=self.seconds, final_at=self.final_at)

    def as_dict(self) -> dict[str, Any]:
        def r(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        return {"clip": self.clip, "profile": self.profile, "seconds": r(self.seconds),
                "ok": self.ok, "error": self.error, "wer": r(self.wer),
                "first_text_s": r(self.first_text_s), "final_s": r(self.final_s),
                "final_estimated": self.final_estimated, "rtf": r(self.rtf),
                "max_lag_s": r(self.max_lag_s), "text": self.text,
                "lag_series": [[r(a), r(b)] for a, b in self.lag_series()],
                "quality": quality.as_dict() if (quality := self.quality) else None}


async def stream(url: str, clip: Clip, headers: Mapping[str, str], *,
                 delay: float = 0.0, profile: str | None = None) -> Stream:
    """One real-time stream of ``clip``; failures are recorded, never raised."""
    result = Stream(clip.name, clip.seconds, clip.reference, profile=profile)
    if delay:
        await asyncio.sleep(delay)  # pacing: staggers concurrent streams
    try:
        result.transcript = await wire.stream(url, clip.samples, speed=1.0, headers=headers,
                                              timeout=clip.seconds + STREAM_SLACK_S)
    except TimeoutError:
        result.error = f"no end within {clip.seconds + STREAM_SLACK_S:.0f} s"
    except Exception as exc:  # a measurement reports failures instead of stopping
        result.error = f"{type(exc).__name__}: {exc}"
    else:
        if not result.transcript.accepted:
            first = result.transcript.messages[0][1] if result.transcript.messages else None
            result.error = f"no SERVER_READY: {first.data if first else 'no message'}"
    return result


async def clips_phase(url: str, clips: Sequence[Clip], headers: Mapping[str, str],
                      done: Callable[[Stream], None]) -> list[Stream]:
    results = []
    for clip in clips:
        results.append(await stream(url, clip, headers))
        done(results[-1])
    return results


async def concurrency_phase(url: str, clips: Sequence[Clip], n: int,
                            headers: Mapping[str, str]) -> list[Stream]:
    chosen = itertools.islice(itertools.cycle(clips), n)
    return list(await asyncio.gather(*(stream(url, clip, headers, delay=i * STAGGER_S)
                                       for i, clip in enumerate(chosen))))


async def network_phase(host: str, port: int, clip: Clip, n: int,
                        headers: Mapping[str, str], scheme: str,
                        done: Callable[[str], None]) -> list[Stream]:
    """``n`` streams under each proxy profile (the proxy on 127.0.0.1, to the server)."""
    results: list[Stream] = []
    for profile in PROFILES:
        with Proxy(host, port) as proxy:
            proxy.apply_profile(profile)
            url = f"{scheme}://127.0.0.1:{proxy.port}"
            results += await asyncio.gather(*(
                stream(url, clip, headers, delay=i * STAGGER_S, profile=profile)
                for i in range(n)))
        done(profile)
    return results


@dataclass
class ContainerStats:
    """Samples a container's engine stats on a thread of its own while in use.

    ``cpu_seconds``: CPU time the container used between start and stop;
    ``peak_memory_mib``: the largest memory usage sampled.
    """

    container_id: str
    interval_s: float = 0.5
    cpu_seconds: float | None = None
    peak_memory_mib: float | None = None
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> ContainerStats:
        self._thread = threading.Thread(target=self._sample, name="earshot-stats", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _sample(self) -> None:
        with docker_client() as client:
            container = client.containers.get(self.container_id)
            first_cpu: int | None = None
            while True:
                stats = container.stats(stream=False, one_shot=True)
                cpu = int(stats["cpu_stats"]["cpu_usage"]["total_usage"])
                memory = stats.get("memory_stats", {})
                usage = max(int(memory.get("usage", 0)), int(memory.get("max_usage", 0)))
                first_cpu = cpu if first_cpu is None else first_cpu
                self.cpu_seconds = (cpu - first_cpu) / 1e9
                self.peak_memory_mib = max(self.peak_memory_mib or 0.0, usage / 2**20)
                self.samples += 1
                if self._stop.wait(self.interval_s):  # pacing of the samples, not a wait
                    return
