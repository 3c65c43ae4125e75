"""The one fold of segments updates into a transcript.

A server resends its last completed segments and the current partial in every
update; folding keeps each completed segment once (by its start, the newest
text winning), the latest partial, and when each first arrived. The client
folds as messages arrive; the wire-level harness folds a recorded exchange
with :meth:`Transcript.fold`.

Times are seconds from the start of the stream. After a reconnection the new
session's times start at ``offset`` (where the replayed audio began), so one
transcript runs on across sessions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from earshot.protocol.frames import Segment


@dataclass(frozen=True)
class Received:
    segment: Segment
    received_at: float  # time.monotonic() when the message carrying it arrived
    session_id: str


class Transcript:
    def __init__(self) -> None:
        self.offset = 0.0  # stream time at which the current session's audio began
        self._completed: dict[int, Received] = {}  # by start in milliseconds
        self.partial: Received | None = None
        self.updates = 0

    @classmethod
    def fold(cls, updates: Iterable[list[Segment]]) -> Transcript:
        """The transcript that a sequence of segments updates adds up to (no clock and
        no session: every segment is received at 0.0 in session "")."""
        transcript = cls()
        for segments in updates:
            transcript.apply(segments, 0.0, "")
        return transcript

    def apply(self, segments: list[Segment], received_at: float, session_id: str) -> bool:
        """Fold one segments message in; True if anything changed."""
        self.updates += 1
        changed = False
        partial = None
        for raw in segments:
            segment = replace(raw, start=raw.start + self.offset, end=raw.end + self.offset)
            if not segment.completed:
                partial = Received(segment, received_at, session_id)
                continue
            key = round(segment.start * 1000)
            known = self._completed.get(key)
            if known is None or known.segment != segment:
                if known is None:
                    self._completed[key] = Received(segment, received_at, session_id)
                else:  # same start, new text: keep when it first arrived
                    self._completed[key] = replace(known, segment=segment)
                changed = True
        before = self.partial.segment if self.partial else None
        changed = changed or before != (partial.segment if partial else None)
        self.partial = partial
        return changed

    @property
    def received(self) -> list[Received]:
        return [self._completed[k] for k in sorted(self._completed)]

    @property
    def completed(self) -> list[Segment]:
        return [r.segment for r in self.received]

    @property
    def confirmed_until(self) -> float:
        """Stream time up to which completed segments cover the audio."""
        return max((r.segment.end for r in self._completed.values()), default=0.0)

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.completed)
