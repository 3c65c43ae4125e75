"""The client's resume buffer: the audio a lost session's successor gets again."""

from __future__ import annotations

import numpy as np
import pytest

from earshot.client.resume import ResumeBuffer
from earshot.protocol import SAMPLE_RATE


def _pieces(*seconds: float) -> list[np.ndarray]:
    return [np.full(round(s * SAMPLE_RATE), i, dtype=np.float32) for i, s in enumerate(seconds)]


def _filled(*seconds: float) -> ResumeBuffer:
    buffer = ResumeBuffer()
    for piece in _pieces(*seconds):
        buffer.add(piece)
    return buffer


def test_it_keeps_what_was_sent_and_says_where_it_ends() -> None:
    buffer = _filled(0.1, 0.2, 0.3)
    assert buffer.start == 0.0 and buffer.end == pytest.approx(0.6)
    assert [len(p) for p in buffer.pending()] == [1600, 3200, 4800]


def test_confirming_forgets_only_the_pieces_wholly_covered() -> None:
    buffer = _filled(0.1, 0.2, 0.3)
    buffer.confirm(0.25)  # covers the first piece (to 0.1), not the second (to 0.3)
    assert buffer.start == 0.1
    assert [p[0] for p in buffer.pending()] == [1.0, 2.0]
    buffer.confirm(0.31)  # past the end of the second piece: it goes
    assert buffer.start == pytest.approx(0.3)
    assert [p[0] for p in buffer.pending()] == [2.0]
    buffer.confirm(10.0)
    assert buffer.pending() == [] and buffer.start == pytest.approx(0.6)


def test_pending_does_not_forget_and_is_a_copy() -> None:
    buffer = _filled(0.1, 0.1)
    replay = buffer.pending()
    replay.clear()
    assert len(buffer.pending()) == 2


def test_dropping_starts_the_next_session_after_everything_sent() -> None:
    buffer = _filled(0.1, 0.2)
    buffer.drop()
    assert buffer.pending() == [] and buffer.start == pytest.approx(0.3)
    assert buffer.end == buffer.start
