"""The model-free checks of one decoded window: no model, no CTranslate2.

Where the engine (:mod:`earshot.server.engine`) splits decoded tokens into
segments, decides whether a pass looped, and picks the quiet put before a
window, it calls these functions; they are plain Python and NumPy, so they load
and are tested without the model stack.
"""

from __future__ import annotations

import numpy as np

from earshot.protocol import SAMPLE_RATE
from earshot.server.window import WindowSegment, frame_power

MAX_WORDS_PER_SECOND = 6.0  # fast read speech is ~4; above this a segment is a loop
LOOP_SPEEDUP = 2.0  # words said again this much faster than the first time: a loop
QUIET_RMS = 0.01  # -40 dBFS: the pauses of the speech clips are -47 to -54


def looks_repetitive(
    items: list[WindowSegment], closed: list[WindowSegment], n: int = 5
) -> bool:
    """Signs of Whisper's repetition loop: a short phrase over and over ("have you,
    have you. have you"); the same n words said again in half the time or less
    they took the first time; or a closed segment spoken impossibly fast (its
    timestamps are then bogus).

    A loop repeats text with no audio behind it, so the repeat is dated too short.
    Seen under load on jfk.flac: one pass returned the clip's first sentence again
    as a second segment 1.7 s long. The same words again at their own pace are
    speech: a sentence said twice, as the scenario suite streams JFK's, whose
    windows used to hold both and stall the stream (nothing shown or completed)
    until the window was full or the audio ended.
    """
    words, seconds = _timed_words(items)
    if repeats_a_phrase(words):
        return True
    first_at: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - n + 1):
        at = first_at.setdefault(tuple(words[i:i + n]), i)
        if at + n <= i and sum(seconds[i:i + n]) * LOOP_SPEEDUP <= sum(seconds[at:at + n]):
            return True
    return any(
        len(s.text.split()) / max(s.end - s.start, 0.5) > MAX_WORDS_PER_SECOND for s in closed
    )


def _timed_words(items: list[WindowSegment]) -> tuple[list[str], list[float]]:
    """The items' words (without case or punctuation), each with its share of its
    segment's time."""
    words: list[str] = []
    seconds: list[float] = []
    for item in items:
        mine = [w for word in item.text.split() if (w := word.strip(".,!?;:\"'-").lower())]
        words += mine
        seconds += [max(item.end - item.start, 0.0) / len(mine)] * len(mine) if mine else []
    return words, seconds


def repeats_a_phrase(words: list[str]) -> bool:
    """A phrase of 2-4 words three times in a row, or one word four times: more than
    speech does ("no, no, no" is three), what a loop does ("and so, and so, and so")."""
    for size, times in ((1, 4), (2, 3), (3, 3), (4, 3)):
        span = size * times
        for start in range(len(words) - span + 1):
            unit = words[start:start + size]
            if all(words[start + k * size:start + (k + 1) * size] == unit for k in range(times)):
                return True
    return False


def split_by_timestamps(
    tokens: list[int], timestamp_begin: int, duration: float, seconds_per_token: float = 0.02
) -> tuple[list[tuple[float, float, list[int]]], tuple[float, list[int]] | None]:
    """Split decoded tokens at timestamp tokens.

    Returns the closed spans ``(start, end, text_tokens)`` and the open tail
    ``(start, text_tokens)`` after the last timestamp, or None.
    """
    spans: list[tuple[float, float, list[int]]] = []
    start: float | None = None  # a timestamp that opened the current span
    last = 0.0  # the latest timestamp; a span with no opening one starts there
    text: list[int] = []
    for token in tokens:
        if token < timestamp_begin:
            text.append(token)
            continue
        time = min((token - timestamp_begin) * seconds_per_token, duration)
        if text:  # this timestamp closes a span
            begin = last if start is None else start
            spans.append((begin, max(time, begin), text))
            start, text = None, []
        else:  # this timestamp opens the next span
            start = time
        last = time
    if text:
        return spans, (last if start is None else start, text)
    return spans, None


def quiet_lead(audio: np.ndarray, samples: int) -> np.ndarray:
    """``samples`` to put before ``audio``: digital silence when its quietest 100 ms
    is quiet (speech in a quiet room; any noise there changes what tiny.en makes of
    a short window), else noise as loud as that quietest part (a window of steady
    noise: silence followed by noise makes the model invent words)."""
    power = frame_power(audio, SAMPLE_RATE // 10)
    if len(power) < 1 or samples < 1:
        return np.zeros(max(samples, 0), dtype=np.float32)
    level = float(np.sqrt(power.min()))
    if level < QUIET_RMS:
        return np.zeros(samples, dtype=np.float32)
    rng = np.random.default_rng(0)  # the same lead for the same audio: passes agree
    return (rng.standard_normal(samples) * level).astype(np.float32)
