"""The transcript of one stream, as a state machine with no I/O.

Audio arrives in frames; each inference pass re-transcribes the unconfirmed
window (from the end of the last completed segment to the newest sample), as
WhisperLive does. A segment is completed once the model has moved past it
(another segment follows it, or two passes in a row closed it there, and it
ends ``settle_seconds`` before the window does), once the same partial text
came back ``same_output_threshold`` times, or when the window is full. The
next window starts at the quietest point near the completed segment's end. A
pass that loops is neither shown nor completed. After END_OF_AUDIO one final
pass completes everything left (if it loops, the last sound partial instead).

Because every pass reads all audio received so far, a stream whose passes
fall behind is coalesced naturally: the next pass covers all new audio, and
no queue of stale partial updates builds up.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from earshot.protocol import SAMPLE_RATE, Segment
from earshot.server.window import MAX_WINDOW_SECONDS, WindowResult, frame_power

# Whisper's segment ends can fall a few hundred milliseconds into the next word;
# a window starting there mishears it ("in his power" as "and is power"). So the
# next window starts at the quietest 20 ms within this span around the end.
CUT_SEARCH_BEFORE_SECONDS = 0.4
CUT_SEARCH_AFTER_SECONDS = 0.1
CUT_FRAME_SAMPLES = SAMPLE_RATE // 50

# When a window holds no speech its audio is dropped, but the last second is
# kept in case a word is just beginning there.
SILENCE_KEEP_SECONDS = 1.0


@dataclass(frozen=True)
class StreamSettings:
    first_pass_seconds: float = 0.5  # audio needed before the first pass
    step_seconds: float = 0.5  # new audio needed for each further pass
    # ... until a pass has heard words (a looping pass does not count): the first
    # text is what a user waits for, and on under a second of audio tiny.en often
    # loops ("and so, and so, ...") or hears nothing yet.
    early_step_seconds: float = 0.2
    max_window_seconds: float = MAX_WINDOW_SECONDS
    settle_seconds: float = 2.0  # a segment must end this long before the window to complete
    send_last_n_segments: int = 10
    same_output_threshold: int = 10
    # Also complete a closed segment once this many passes in a row agree on it
    # (same text, same start within AGREE_START_SECONDS), settled or not; 0: off.
    confirm_passes: int = 0


AGREE_START_SECONDS = 0.3


@dataclass(frozen=True)
class Job:
    """One pass: the samples ``[start, end)`` of the stream."""

    audio: np.ndarray
    start: int
    end: int
    final: bool  # the last pass: END_OF_AUDIO was received and this reaches it


@dataclass(frozen=True)
class Update:
    changed: bool  # the segments to send differ from the last ones
    finished: bool  # the transcript is final


class TranscriptStream:
    """What one session has received and what the model made of it."""

    def __init__(self, settings: StreamSettings | None = None) -> None:
        self.settings = settings or StreamSettings()
        self.received = 0  # samples received
        self.offset = 0  # samples covered by completed segments
        self.ended = False  # END_OF_AUDIO received
        self.finished = False  # final pass applied
        self.completed_count = 0
        self.passes = 0
        # Samples from self.offset on, as received; joined only when a pass
        # needs them, so a fast sender costs one copy per pass, not per frame.
        self._pieces: list[np.ndarray] = []
        self._recent = deque[Segment](maxlen=self.settings.send_last_n_segments)
        self._partial: Segment | None = None
        self._last_job_end = 0
        self._final_issued = False
        self._repeats = 0
        self._heard = False  # a pass has returned words
        self._agreed: list[tuple[Segment, int]] = []  # the last pass's items, passes seen

    # -- input -------------------------------------------------------------

    def add_audio(self, samples: np.ndarray) -> None:
        if self.ended:
            raise ValueError("audio after END_OF_AUDIO")
        self._pieces.append(samples.astype(np.float32, copy=False))
        self.received += len(samples)

    def end_of_audio(self) -> None:
        self.ended = True

    # -- passes ------------------------------------------------------------

    @property
    def backlog_seconds(self) -> float:
        """Audio received but not yet covered by a completed segment."""
        return (self.received - self.offset) / SAMPLE_RATE

    @property
    def heard(self) -> bool:
        """Whether a pass has returned words yet (a looping pass does not count)."""
        return self._heard

    @property
    def received_seconds(self) -> float:
        return self.received / SAMPLE_RATE

    def wants_pass(self) -> bool:
        if self.finished or self._final_issued:
            return False
        if self.ended:
            return True
        new = (self.received - self._last_job_end) / SAMPLE_RATE
        settings = self.settings
        if self.passes == 0:
            needed = settings.first_pass_seconds
        else:
            needed = settings.step_seconds if self._heard else settings.early_step_seconds
        return new >= needed and self.received > self.offset

    def next_job(self) -> Job:
        max_window = int(self.settings.max_window_seconds * SAMPLE_RATE)
        end = min(self.received, self.offset + max_window)
        audio = self._joined()[: end - self.offset].copy()
        self._last_job_end = end
        final = self.ended and end == self.received
        self._final_issued = final
        return Job(audio, self.offset, end, final)

    def apply(self, job: Job, result: WindowResult) -> Update:
        """Fold one pass's result into the transcript."""
        self.passes += 1
        before = self.segments()
        base = job.start / SAMPLE_RATE
        items = [
            Segment(base + s.start, base + s.end, s.text) for s in result.all_segments
        ]
        self._heard = self._heard or (bool(items) and not result.suspect)
        if job.final:
            if result.suspect:  # a looping last pass: the last sound partial stands
                items = [self._partial] if self._partial is not None else _each_once(items)
            self._complete(items, job.end)
            self._partial = None
            self.finished = True
            return Update(self.segments() != before, True)
        window_full = job.end - job.start >= int(self.settings.max_window_seconds * SAMPLE_RATE)
        if result.suspect and not window_full:
            # A looping pass: nothing of it is completed or shown; the last
            # partial stands until a sound pass replaces it.
            self._agreed = []
            return Update(False, False)
        if result.suspect:
            # A full window that still loops: the window must move on, so its
            # segments are completed, each text once.
            self._agreed, self._partial = [], None
            self._complete(_each_once(items), job.end)
            return Update(self.segments() != before, False)
        if not items:
            self._partial = None
            self._agreed = []
            self._advance(job.end - int(SILENCE_KEEP_SECONDS * SAMPLE_RATE))
            return Update(self.segments() != before, False)

        # A segment followed by another is done once it ends a while before the
        # window does: near the end, where the next pass sees more audio, the model
        # still moves boundaries, and completing there repeated words across the
        # boundary under load. The last segment, with nothing after it, is done only
        # when it is settled and two passes in a row gave it: the model sometimes
        # stops at a sentence's end and ignores the speech after it (which must
        # then start the next window), but sometimes it also dates a segment's end
        # too early. The open tail (words still being spoken) is never done here.
        streaks = self._streaks(items)
        settled_until = job.end / SAMPLE_RATE - self.settings.settle_seconds
        count = 0
        while count < len(result.segments) and items[count].end <= settled_until and (
                count < len(items) - 1 or streaks[count] >= 2):
            count += 1
        needed = self.settings.confirm_passes
        while needed and count < len(result.segments) and streaks[count] >= needed:
            count += 1
        done, rest = items[:count], items[count:]
        partial = _merged(rest) if rest else None
        if partial is not None and self._partial is not None \
                and partial.text == self._partial.text:
            self._repeats += 1
        else:
            self._repeats = 0
        stuck = self._repeats + 1 >= self.settings.same_output_threshold
        forced = stuck or (window_full and not done)
        if forced:
            done, partial = items, None
        self._agreed = self._agreed[len(done):]  # completed items leave the window
        if done:
            # The next window starts where the last completed segment ends (at the
            # quietest point near it), or at the window's end when it was forced.
            until = job.end if forced else job.start + _quietest(
                job.audio, _samples(done[-1].end - base))
            self._complete(done, until)
            self._repeats = 0
        self._partial = partial
        return Update(self.segments() != before, False)

    def _streaks(self, items: list[Segment]) -> list[int]:
        """For each item, how many passes in a row (this one included) gave it. A
        difference restarts the streak of that item and of every one after it."""
        streaks, agreeing = [], True
        for i, item in enumerate(items):
            agreeing = agreeing and i < len(self._agreed) and _same(item, self._agreed[i][0])
            streaks.append(self._agreed[i][1] + 1 if agreeing else 1)
        self._agreed = list(zip(items, streaks, strict=True))
        return streaks

    def _complete(self, items: list[Segment], until: int) -> None:
        for item in items:
            self._recent.append(
                Segment(item.start, min(item.end, until / SAMPLE_RATE), item.text, True)
            )
        self.completed_count += len(items)
        self._advance(until)

    def _advance(self, until: int) -> None:
        until = min(max(until, self.offset), self.received)
        self._pieces = [self._joined()[until - self.offset :]]
        self.offset = until

    def _joined(self) -> np.ndarray:
        if len(self._pieces) != 1:
            self._pieces = [np.concatenate(self._pieces or [np.zeros(0, np.float32)])]
        return self._pieces[0]

    # -- output ------------------------------------------------------------

    def segments(self) -> list[Segment]:
        """What a segments message carries: the last N completed plus the partial."""
        items = list(self._recent)
        if self._partial is not None:
            items.append(self._partial)
        return items


def _same(a: Segment, b: Segment) -> bool:
    """Two passes saw the same segment: the same words, starting at about the same time."""
    return a.text.strip() == b.text.strip() and abs(a.start - b.start) <= AGREE_START_SECONDS


def _each_once(items: list[Segment]) -> list[Segment]:
    """The items without those whose text an earlier one already had."""
    seen: set[str] = set()
    kept = []
    for item in items:
        if item.text.strip().lower() not in seen:
            seen.add(item.text.strip().lower())
            kept.append(item)
    return kept


def _merged(items: list[Segment]) -> Segment:
    """Several uncompleted segments shown as one partial."""
    if len(items) == 1:
        return items[0]
    return Segment(items[0].start, items[-1].end, " ".join(s.text for s in items))


def _quietest(audio: np.ndarray, at: int) -> int:
    """The start of the quietest 20 ms frame of ``audio`` near sample ``at`` (of
    equally quiet ones, the nearest: in silence the cut stays where it was)."""
    first = max(0, at - round(CUT_SEARCH_BEFORE_SECONDS * SAMPLE_RATE))
    last = min(len(audio), at + round(CUT_SEARCH_AFTER_SECONDS * SAMPLE_RATE))
    energy = frame_power(audio[first:last], CUT_FRAME_SAMPLES)
    if len(energy) < 1:
        return min(at, len(audio))
    starts = first + np.arange(len(energy)) * CUT_FRAME_SAMPLES
    quietest = np.flatnonzero(energy <= energy.min() * (1 + 1e-6) + 1e-12)
    return int(starts[quietest[np.argmin(np.abs(starts[quietest] - at))]])


def _samples(seconds: float) -> int:
    return max(0, round(seconds * SAMPLE_RATE))
