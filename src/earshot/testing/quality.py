"""How a live transcript behaves on its way to the final words: stability of the
partials, ghosts, and the latencies a user waits through.

Input is one stream's segments messages, each with the time it arrived
(:class:`Update`), as a WhisperLive-protocol server sends them: every message
carries the recent completed segments and the current partial. What a user is
shown after each message is the *hypothesis*: the messages folded as earshot's
client folds them (:class:`earshot.protocol.transcript.Transcript`: completed
segments by start, the newest text winning, then the latest partial). The last
hypothesis is the *final* transcript. Words are compared after Whisper's English
normaliser (as WER is), so a change of case or punctuation alone is no change.

Definitions (each function's docstring says which it computes):

- **Unstable partial word ratio** (UPWR; Shangguan et al., "Analyzing the Quality
  and Stability of a Streaming End-to-End On-Device Speech Recognizer",
  Interspeech 2020): the words of partial hypotheses that a later hypothesis
  changes, over the words of the final. A word of hypothesis *i* is changed when
  it lies past the longest common prefix of *i* and *i+1* (each change is counted
  once, when it happens). An empty final counts as one word, so a stream that
  showed words and ended with none is unstable by as many words.
- **Unstable partial segment ratio** (UPSR, the same paper's segment-level twin):
  the share of partial hypotheses with at least one word so changed.
- **Normalized erasure** (NE; Arivazhagan et al., "Re-translation versus
  Streaming for Simultaneous Translation", IWSLT 2020): the characters erased from
  the shown text from one hypothesis to the next (its length past their longest
  common prefix), summed, over the final's length in characters. The text is
  taken as shown, case and punctuation included: growing the last word
  ("American" -> "Americans") erases nothing, a comma put in mid-text erases all
  that follows it. An empty final counts as one character.
- **Ghost partials**: the segments a client that keeps segments by their start
  (a common way to fold them) would still show after the last message while a
  correct fold does not: a partial whose start moved
  before it was completed leaves its old copy behind.
- **Time to first partial**: first audio sent -> the first message with text.
- **Finalization latency**, per segment of the final: the moment its end was sent
  in the audio -> the arrival of the message in which it was first completed.
- **Percentiles** are nearest-rank: p of n sorted values is the value at rank
  ceil(p / 100 * n), so each is a latency that was measured.
- **Real-time factor**: first audio sent -> the final transcript, over the
  audio's duration.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from earshot.protocol import Segment
from earshot.protocol.transcript import Transcript
from earshot.testing.wer import normalise

PERCENTILES = (50, 95, 99)


@dataclass(frozen=True)
class Update:
    """One segments message and when it arrived (seconds, the caller's clock)."""

    at: float
    segments: tuple[Segment, ...]


def updates_of(messages: Iterable[tuple[float, Any]]) -> list[Update]:
    """The segments messages of a recorded exchange (``(arrival, ServerMessage)``
    pairs, as :class:`earshot.testing.wire.Exchange` keeps them), as updates."""
    return [Update(at, tuple(m.segments)) for at, m in messages if m.kind == "segments"]


def hypotheses(updates: Iterable[Update]) -> list[str]:
    """The text shown after each update, as earshot's client folds them."""
    transcript, shown = Transcript(), []
    for update in updates:
        transcript.apply(list(update.segments), update.at, "")
        parts = [s.text.strip() for s in transcript.completed]
        if transcript.partial is not None:
            parts.append(transcript.partial.segment.text.strip())
        shown.append(" ".join(part for part in parts if part))
    return shown


def _prefix(a: Sequence[str], b: Sequence[str]) -> int:
    """The length of the longest common prefix of ``a`` and ``b``."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _changed_words(shown: list[str]) -> list[int]:
    """Per partial hypothesis (all but the last), how many of its words the next changes."""
    words = [normalise(text).split() for text in shown]
    return [len(a) - _prefix(a, b) for a, b in itertools.pairwise(words)]


def unstable_partial_word_ratio(updates: Sequence[Update]) -> float:
    """UPWR (see the module's text): changed partial words over the final's words."""
    shown = hypotheses(updates)
    final = len(normalise(shown[-1]).split()) if shown else 0
    return sum(_changed_words(shown)) / max(1, final)


def unstable_partial_segment_ratio(updates: Sequence[Update]) -> float:
    """UPSR (see the module's text): the share of partial hypotheses a later one changes."""
    changed = _changed_words(hypotheses(updates))
    return sum(1 for n in changed if n) / len(changed) if changed else 0.0


def normalized_erasure(updates: Sequence[Update]) -> float:
    """NE (see the module's text): characters erased over the final's characters."""
    shown = hypotheses(updates)
    erased = sum(len(a) - _prefix(a, b) for a, b in itertools.pairwise(shown))
    final = len(shown[-1]) if shown else 0
    return erased / max(1, final)


def _key(segment: Segment) -> int:
    return round(segment.start * 1000)  # as the client keys them: by start, in ms


def ghost_partials(updates: Iterable[Update]) -> list[Segment]:
    """Ghost partials (see the module's text), by start."""
    by_start: dict[int, Segment] = {}
    transcript = Transcript()
    for update in updates:
        transcript.apply(list(update.segments), update.at, "")
        for segment in update.segments:
            by_start[_key(segment)] = segment
    shown = {_key(s) for s in transcript.completed}
    if transcript.partial is not None:
        shown.add(_key(transcript.partial.segment))
    return [by_start[k] for k in sorted(by_start) if k not in shown and by_start[k].text.strip()]


def time_to_first_partial(updates: Iterable[Update], first_audio_at: float) -> float | None:
    """First audio sent -> the first message with any text (None: no text came)."""
    for update in updates:
        if any(s.text.strip() for s in update.segments):
            return update.at - first_audio_at
    return None


def finalization_latencies(updates: Iterable[Update],
                           sent_at: Callable[[float], float]) -> list[float]:
    """Per completed segment of the final, by start: ``sent_at(segment.end)`` (when its
    end went out in the audio, on the updates' clock) -> the arrival of the message
    that first completed it. For audio paced at real time from ``t0``, ``sent_at`` is
    ``lambda end: t0 + end``."""
    transcript = Transcript()
    for update in updates:
        transcript.apply(list(update.segments), update.at, "")
    return [r.received_at - sent_at(r.segment.end) for r in transcript.received]


def percentiles(values: Iterable[float],
                ps: Sequence[int] = PERCENTILES) -> dict[str, float | None]:
    """Nearest-rank percentiles ``{"p50": ..., "p95": ..., "p99": ...}`` (None: no value)."""
    ordered = sorted(values)
    if not ordered:
        return {f"p{p}": None for p in ps}
    return {f"p{p}": ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1] for p in ps}


def real_time_factor(first_audio_at: float, final_at: float, audio_seconds: float) -> float:
    """First audio sent -> the final transcript, over the audio's duration."""
    return (final_at - first_audio_at) / audio_seconds


@dataclass(frozen=True)
class StreamQuality:
    """Every figure of one stream (latencies in seconds)."""

    unstable_partial_word_ratio: float
    unstable_partial_segment_ratio: float
    normalized_erasure: float
    ghost_partials: int
    time_to_first_partial_s: float | None
    finalization_s: dict[str, float | None]  # percentiles of the per-segment latencies
    real_time_factor: float | None

    def as_dict(self, digits: int = 3) -> dict[str, Any]:
        """The figures for a JSON record, each rounded to ``digits``."""
        def r(value: float | None) -> float | None:
            return None if value is None else round(value, digits)

        record = asdict(self)
        return {key: ({k: r(v) for k, v in value.items()} if isinstance(value, dict)
                      else value if isinstance(value, int) else r(value))
                for key, value in record.items()}

    @classmethod
    def of(cls, updates: Sequence[Update], *, first_audio_at: float, audio_seconds: float,
           sent_at: Callable[[float], float] | None = None,
           final_at: float | None = None) -> StreamQuality:
        """The figures of a stream whose audio began at ``first_audio_at``; ``sent_at``
        defaults to real-time pacing from it, ``final_at`` to the last update."""
        sent_at = sent_at or (lambda end: first_audio_at + end)
        final_at = final_at if final_at is not None else (updates[-1].at if updates else None)
        return cls(
            unstable_partial_word_ratio(updates), unstable_partial_segment_ratio(updates),
            normalized_erasure(updates), len(ghost_partials(updates)),
            time_to_first_partial(updates, first_audio_at),
            percentiles(finalization_latencies(updates, sent_at)),
            None if final_at is None else real_time_factor(first_audio_at, final_at,
                                                           audio_seconds))
