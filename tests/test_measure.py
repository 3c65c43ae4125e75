"""The validator's figures for one stream (``earshot.validation.measure.Stream``),
from timed messages whose values are worked out by hand: first text, final latency,
the final taken from END_OF_TRANSCRIPT, else the close, else the last update (both
then estimated), the real-time factor and the text lag over time."""

from __future__ import annotations

import pytest

from earshot.protocol import Segment, ServerMessage
from earshot.testing import wire
from earshot.validation.measure import Stream

REFERENCE = "and so my fellow americans"


def segments(*spans: tuple[float, float, str, bool]) -> ServerMessage:
    return ServerMessage("segments", {"segments": [Segment(*span).to_wire() for span in spans]})


def exchange(messages: list[tuple[float, ServerMessage]], *,
             closed_at: float | None = None) -> wire.Exchange:
    """5 s of audio sent from t=100 s, END_OF_AUDIO at t=105 s."""
    t = wire.Exchange(first_audio_at=100.0, end_of_audio_at=105.0, closed_at=closed_at)
    t.messages = [(100.0, ServerMessage("ready", {"message": "SERVER_READY"})), *messages]
    return t


def test_the_figures_of_a_stream_that_ended_with_end_of_transcript() -> None:
    t = exchange([
        (100.5, segments((0.0, 0.4, "", False))),  # an empty partial is not text yet
        (101.25, segments((0.0, 1.0, "and so", False))),
        (104.0, segments((0.0, 2.0, "and so my", True))),
        (105.5, segments((0.0, 2.0, "and so my", True), (2.0, 4.5, "fellow americans", True))),
        (105.75, ServerMessage("end", {})),
    ], closed_at=106.0)
    stream = Stream("a.wav", 5.0, REFERENCE, transcript=t)
    assert stream.ok and stream.wer == 0.0
    assert stream.first_text_s == pytest.approx(1.25)
    assert stream.final_at == 105.75 and not stream.final_estimated  # not the close
    assert stream.final_s == pytest.approx(0.75)
    assert stream.rtf == pytest.approx(5.75 / 5.0)
    # (since the first audio, audio sent by then - where the text ends), the audio sent
    # capped at END_OF_AUDIO: 1.25 - 1.0, 4.0 - 2.0, 5.0 - 4.5
    series = stream.lag_series()
    assert [at for at, _ in series] == pytest.approx([1.25, 4.0, 5.5])
    assert [lag for _, lag in series] == pytest.approx([0.25, 2.0, 0.5])
    assert stream.max_lag_s == pytest.approx(2.0)


def test_without_end_of_transcript_the_close_is_the_final_and_it_is_estimated() -> None:
    t = exchange([(101.0, segments((0.0, 4.5, REFERENCE, True)))], closed_at=105.4)
    stream = Stream("a.wav", 5.0, REFERENCE, transcript=t)
    assert stream.final_at == 105.4 and stream.final_estimated
    assert stream.final_s == pytest.approx(0.4)
    assert stream.rtf == pytest.approx(5.4 / 5.0)


def test_open_and_without_end_the_last_update_after_end_of_audio_is_the_final() -> None:
    t = exchange([(104.0, segments((0.0, 3.0, "and so my", False))),
                  (105.2, segments((0.0, 4.5, REFERENCE, False))),
                  (105.6, segments((0.0, 4.5, REFERENCE, True)))])
    stream = Stream("a.wav", 5.0, REFERENCE, transcript=t)
    assert stream.final_at == 105.6 and stream.final_estimated
    assert stream.final_s == pytest.approx(0.6)
    quiet = Stream("a.wav", 5.0, REFERENCE, transcript=exchange(
        [(104.0, segments((0.0, 3.0, "and so my", False)))]))
    assert quiet.final_at is None and quiet.final_s is None and quiet.rtf is None


def test_a_stream_that_never_got_its_audio_out_has_no_figures() -> None:
    t = wire.Exchange()  # nothing sent: no first audio, no END_OF_AUDIO
    stream = Stream("a.wav", 5.0, REFERENCE, transcript=t)
    assert stream.first_text_s is None and stream.final_at is None and stream.rtf is None
    assert stream.lag_series() == [] and stream.max_lag_s is None
    failed = Stream("a.wav", 5.0, REFERENCE, error="ConnectionClosedError: 1011")
    assert not failed.ok and failed.wer is None and failed.text == ""
    assert not failed.final_estimated  # nothing to estimate


def test_its_record_rounds_every_figure_to_the_millisecond() -> None:
    t = exchange([(101.23456, segments((0.0, 1.0, "and so", False))),
                  (105.33333, segments((0.0, 4.5, REFERENCE, True))),
                  (105.33333, ServerMessage("end", {}))])
    record = Stream("a.wav", 5.0, REFERENCE, transcript=t, profile="wifi").as_dict()
    assert record == {
        "clip": "a.wav", "profile": "wifi", "seconds": 5.0, "ok": True, "error": None,
        "wer": 0.0, "first_text_s": 1.235, "final_s": 0.333, "final_estimated": False,
        "rtf": 1.067, "max_lag_s": 0.5, "text": REFERENCE,
        "lag_series": [[1.235, 0.235], [5.333, 0.5]]}
