"""The validator's figures for one stream (``earshot.validation.measure.Stream``),
from timed messages whose values are worked out by hand: first text, final latency,
the final taken from END_OF_TRANSCRIPT, else the close, else the last update (both
then estimated), the real-time factor and the text lag over time; and what each
phase streams (``measure.stream`` and the proxy stood in for, each named as such)."""

from __future__ import annotations

import numpy as np
import pytest

from earshot.audio import Speech as Clip
from earshot.protocol import Segment, ServerMessage
from earshot.testing import wire
from earshot.testing.proxy import PROFILES
from earshot.validation import measure
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
        "lag_series": [[1.235, 0.235], [5.333, 0.5]],
        # "and so" grows into the reference: nothing unstable; its one segment ends at
        # 4.5 s, sent at 104.5, completed at 105.33333
        "quality": {"unstable_partial_word_ratio": 0.0, "unstable_partial_segment_ratio": 0.0,
                    "normalized_erasure": 0.0, "ghost_partials": 0,
                    "time_to_first_partial_s": 1.235,
                    "finalization_s": {"p50": 0.833, "p95": 0.833, "p99": 0.833},
                    "real_time_factor": 1.067}}


# -- the phases: what each streams, and how -------------------------------------------


class Recorded:
    """Stands in for ``measure.stream``: records each call and returns a Stream."""

    def __init__(self) -> None:
        self.calls: list[dict[str, object]] = []

    async def __call__(self, url: str, clip: Clip, headers, *, delay: float = 0.0,
                       profile: str | None = None) -> Stream:
        self.calls.append({"url": url, "clip": clip.name, "delay": delay, "profile": profile})
        return Stream(clip.name, clip.seconds, clip.reference, profile=profile)


def clip(name: str) -> Clip:
    return Clip(name, np.zeros(16000, dtype=np.float32), REFERENCE)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Recorded:
    stand_in = Recorded()
    monkeypatch.setattr(measure, "stream", stand_in)
    return stand_in


async def test_the_concurrency_phase_starts_n_streams_a_quarter_second_apart_over_the_clips(
        recorded: Recorded) -> None:
    results = await measure.concurrency_phase("ws://s", [clip("a"), clip("b")], 5, {})
    assert [(c["clip"], c["delay"]) for c in recorded.calls] == [
        ("a", 0.0), ("b", 0.25), ("a", 0.5), ("b", 0.75), ("a", 1.0)]
    assert [r.clip for r in results] == ["a", "b", "a", "b", "a"]
    assert measure.STAGGER_S == 0.25


async def test_the_clips_phase_streams_each_clip_once_in_turn(recorded: Recorded) -> None:
    done: list[str] = []
    results = await measure.clips_phase("ws://s", [clip("a"), clip("b")], {},
                                        lambda s: done.append(s.clip))
    assert [(c["clip"], c["delay"]) for c in recorded.calls] == [("a", 0.0), ("b", 0.0)]
    assert done == ["a", "b"] and [r.clip for r in results] == ["a", "b"]


class StandInProxy:
    """Stands in for the latency proxy: a port of its own, the profile it was given."""

    made: list[StandInProxy] = []

    def __init__(self, host: str, port: int) -> None:
        self.target, self.port, self.profile = (host, port), 40000 + len(self.made), None
        self.stopped = False
        StandInProxy.made.append(self)

    def __enter__(self) -> StandInProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped = True

    def apply_profile(self, name: str) -> None:
        self.profile = name


async def test_the_network_phase_streams_n_a_profile_through_a_proxy_of_that_profile(
        recorded: Recorded, monkeypatch: pytest.MonkeyPatch) -> None:
    StandInProxy.made = []
    monkeypatch.setattr(measure, "Proxy", StandInProxy)
    done: list[str] = []
    results = await measure.network_phase("127.0.0.1", 9090, clip("a"), 2, {}, "ws",
                                          done.append)
    assert done == list(PROFILES)
    assert [(p.target, p.profile, p.stopped) for p in StandInProxy.made] == [
        (("127.0.0.1", 9090), name, True) for name in PROFILES]
    expected = [{"url": f"ws://127.0.0.1:{40000 + n}", "clip": "a", "delay": delay,
                 "profile": name} for n, name in enumerate(PROFILES) for delay in (0.0, 0.25)]
    assert recorded.calls == expected
    assert [r.profile for r in results] == [c["profile"] for c in expected]
