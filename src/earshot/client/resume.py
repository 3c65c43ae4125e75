"""The audio a client keeps so that a lost session can be resumed.

Audio is kept from the end of the last completed segment on: what the server
has not confirmed yet. A new session replays it, and the transcript goes on
from where the replay begins; replaying it does not forget it.
"""

from __future__ import annotations

import numpy as np

from earshot.protocol import SAMPLE_RATE


class ResumeBuffer:
    def __init__(self) -> None:
        self._pieces: list[np.ndarray] = []
        self.start = 0.0  # stream seconds where the kept audio begins

    @property
    def end(self) -> float:
        """Stream seconds sent so far: where the kept audio ends."""
        return self.start + sum(len(p) for p in self._pieces) / SAMPLE_RATE

    def add(self, samples: np.ndarray) -> None:
        self._pieces.append(samples)

    def confirm(self, until: float) -> None:
        """Forget the pieces that completed segments cover up to ``until``."""
        while self._pieces:
            seconds = len(self._pieces[0]) / SAMPLE_RATE
            if self.start + seconds > until:
                break
            self._pieces.pop(0)
            self.start += seconds

    def pending(self) -> list[np.ndarray]:
        """The kept pieces, to send again. They stay kept until confirmed: a session
        lost during the replay leaves them all for the next one."""
        return list(self._pieces)

    def drop(self) -> None:
        """Forget the kept audio: a new session starts after everything sent."""
        self.start, self._pieces = self.end, []
