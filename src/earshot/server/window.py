"""One inference pass's window, without the model stack: its limits, its result,
and the frame power both sides measure.

The streaming state machine plans windows, finds quiet points to cut them at and
reads results; the engine transcribes windows and measures their quietest part.
Both need these, so they live here, where importing them does not load
CTranslate2 or faster-whisper.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

# Frames are 10 ms; the encoder's full context is 3000 frames (30 s).
FRAMES_PER_SECOND = 100
FULL_CONTEXT_FRAMES = 3000
ENCODE_PADDING_FRAMES = 100  # trailing silence so the last word is heard to end
# Quiet put before every window (see decoding.quiet_lead). With a short encoder
# context tiny.en drops a window's first word when speech starts at its very
# first sample ("And Mr. John Dashwood" read as "Mr. John Dashwood"); half a
# second of quiet first lets it hear that word.
LEAD_SECONDS = 0.5
# The lead, the window and the padding must fit in one encoder context.
MAX_WINDOW_SECONDS = (
    (FULL_CONTEXT_FRAMES - ENCODE_PADDING_FRAMES) / FRAMES_PER_SECOND - LEAD_SECONDS
)


@dataclass(frozen=True)
class WindowSegment:
    """A segment of one window; times in seconds from the window's start."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class WindowResult:
    """What the model heard in one window.

    ``segments`` are those the model closed with a timestamp; ``tail`` is the
    text after the last timestamp (words still being spoken at the window's
    end), or None. ``no_speech`` is true when the window holds no speech.
    """

    segments: list[WindowSegment] = field(default_factory=list)
    tail: WindowSegment | None = None
    no_speech: bool = False
    language: str = "en"
    language_probability: float = 1.0
    suspect: bool = False  # the text looks like a repetition loop; complete nothing from it

    @property
    def all_segments(self) -> list[WindowSegment]:
        return self.segments + ([self.tail] if self.tail else [])

    def shifted(self, seconds: float) -> WindowResult:
        """The same result with every time ``seconds`` later (none before 0)."""

        def move(s: WindowSegment) -> WindowSegment:
            return WindowSegment(max(0.0, s.start + seconds), max(0.0, s.end + seconds), s.text)

        return replace(
            self,
            segments=[move(s) for s in self.segments],
            tail=move(self.tail) if self.tail else None,
        )


def frame_power(audio: np.ndarray, frame: int) -> np.ndarray:
    """The mean square of each whole ``frame`` samples of ``audio`` (a partial last
    frame is left out; empty when there is no whole frame)."""
    frames = len(audio) // frame
    return (audio[:frames * frame].astype(np.float64).reshape(frames, frame) ** 2).mean(axis=1)
