"""The transcript of one stream, as a state machine with no I/O.

Audio arrives in frames; each inference pass re-transcribes the unconfirmed
window (from the end of the last completed segment to the newest sample), as
WhisperLive does. A segment is completed once the model has moved past it
(another segment follows it, and it ends a second before the window does),
once the same partial text came back ``same_output_threshold`` times, or when
the window is full. After END_OF_AUDIO one final pass completes everything
left.

Because every pass reads all audio received so far, a stream whose passes
fall behind is coalesced naturally: the next pass covers all new audio, and
no queue of stale partial updates builds up.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from earshot.protocol import SAMPLE_RATE, Segment
from earshot.server.engine import MAX_WINDOW_SECONDS, WindowResult

# When a window holds no speech its audio is dropped, but the last second is
# kept in case a word is just beginning there.
SILENCE_KEEP_SECONDS = 1.0


@dataclass(frozen=True)
class StreamSettings:
    first_pass_seconds: float = 1.0  # audio needed before the first pass
    step_seconds: float = 0.5  # new audio needed for each further pass
    max_window_seconds: float = MAX_WINDOW_SECONDS
    settle_seconds: float = 1.0  # a segment must end this long before the window to complete
    send_last_n_segments: int = 10
    same_output_threshold: int = 10


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
    def received_seconds(self) -> float:
        return self.received / SAMPLE_RATE

    def wants_pass(self) -> bool:
        if self.finished or self._final_issued:
            return False
        if self.ended:
            return True
        new = (self.received - self._last_job_end) / SAMPLE_RATE
        settings = self.settings
        needed = settings.first_pass_seconds if self.passes == 0 else settings.step_seconds
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
        if job.final:
            self._complete(items, job.end)
            self._partial = None
            self.finished = True
            return Update(self.segments() != before, True)
        if not items:
            self._partial = None
            self._advance(job.end - int(SILENCE_KEEP_SECONDS * SAMPLE_RATE))
            return Update(self.segments() != before, False)

        # Segments followed by another one are done, but only those ending a
        # while before the window does: near the end, where the next pass sees
        # more audio, the model still moves boundaries, and completing there
        # repeated words across the boundary under load.
        settled_until = job.end / SAMPLE_RATE - self.settings.settle_seconds
        count = 0
        while count < len(items) - 1 and items[count].end <= settled_until:
            count += 1
        if result.suspect:
            count = 0  # a looping pass may show text, but completes none
        done, partial = items[:count], _merged(items[count:])
        if self._partial is not None and partial.text == self._partial.text:
            self._repeats += 1
        else:
            self._repeats = 0
        window_full = job.end - job.start >= int(self.settings.max_window_seconds * SAMPLE_RATE)
        stuck = self._repeats + 1 >= self.settings.same_output_threshold
        if stuck or (window_full and not done):
            done, partial = items, None
        if done:
            # The next window starts where the last completed segment ends,
            # or at the window's end when everything was completed.
            until = job.end if partial is None else job.start + _samples(done[-1].end - base)
            self._complete(done, until)
            self._repeats = 0
        self._partial = partial
        return Update(self.segments() != before, False)

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


def _merged(items: list[Segment]) -> Segment:
    """Several uncompleted segments shown as one partial."""
    if len(items) == 1:
        return items[0]
    return Segment(items[0].start, items[-1].end, " ".join(s.text for s in items))


def _samples(seconds: float) -> int:
    return max(0, round(seconds * SAMPLE_RATE))
