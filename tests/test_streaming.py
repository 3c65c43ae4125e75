"""The transcript state machine, fed with made-up model results (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from earshot.protocol import SAMPLE_RATE
from earshot.server.streaming import (
    CUT_FRAME_SAMPLES,
    StreamSettings,
    TranscriptStream,
    Update,
    _quietest,
)
from earshot.server.window import WindowResult, WindowSegment


def seconds(n: float) -> np.ndarray:
    return np.zeros(int(n * SAMPLE_RATE), dtype=np.float32)


def result(*spans: tuple[float, float, str], tail: tuple[float, float, str] | None = None):
    return WindowResult(
        [WindowSegment(*s) for s in spans], WindowSegment(*tail) if tail else None
    )


def test_first_pass_waits_for_enough_audio() -> None:
    stream = TranscriptStream(StreamSettings(first_pass_seconds=1.0, step_seconds=0.5))
    stream.add_audio(seconds(0.9))
    assert not stream.wants_pass()
    stream.add_audio(seconds(0.1))
    assert stream.wants_pass()
    job = stream.next_job()
    assert (job.start, job.end, job.final) == (0, SAMPLE_RATE, False)
    assert not stream.wants_pass()  # nothing new since the job started


def test_passes_come_sooner_until_words_are_heard() -> None:
    stream = TranscriptStream(StreamSettings(first_pass_seconds=0.5, step_seconds=0.5,
                                             early_step_seconds=0.25))
    stream.add_audio(seconds(0.5))
    stream.apply(stream.next_job(), WindowResult(no_speech=True))
    stream.add_audio(seconds(0.25))
    assert stream.wants_pass()  # nothing heard yet: a quarter second is enough
    looping = WindowResult([WindowSegment(0, 0.7, "and so, and so, and so")], suspect=True)
    stream.apply(stream.next_job(), looping)
    stream.add_audio(seconds(0.25))
    assert stream.wants_pass()  # a looping pass heard nothing
    stream.apply(stream.next_job(), result((0, 0.7, "And so")))
    stream.add_audio(seconds(0.25))
    assert not stream.wants_pass()  # words heard: back to half a second
    stream.add_audio(seconds(0.25))
    assert stream.wants_pass()


def test_segments_followed_by_others_complete_and_window_moves() -> None:
    stream = TranscriptStream(StreamSettings(settle_seconds=1.0))
    stream.add_audio(seconds(6))
    job = stream.next_job()
    update = stream.apply(job, result((0, 2.5, "one"), (2.5, 5, "two"), tail=(5, 6, "thr")))
    assert update.changed and not update.finished
    assert [(s.text, s.completed) for s in stream.segments()] == [
        ("one", True), ("two", True), ("thr", False)]
    assert stream.offset == 5 * SAMPLE_RATE
    stream.add_audio(seconds(1))
    job = stream.next_job()
    assert job.start == 5 * SAMPLE_RATE and len(job.audio) == 2 * SAMPLE_RATE
    stream.apply(job, result((0, 2, "three")))
    assert stream.segments()[-1].start == 5.0  # times are absolute


def test_segments_near_the_window_end_stay_partial() -> None:
    stream = TranscriptStream(StreamSettings(settle_seconds=1.0))
    stream.add_audio(seconds(6))
    stream.apply(stream.next_job(), result((0, 3, "one"), (3, 5.5, "two"), tail=(5.5, 6, "x")))
    assert [(s.text, s.completed) for s in stream.segments()] == [
        ("one", True), ("two x", False)]
    assert stream.offset == 3 * SAMPLE_RATE


def test_a_suspect_pass_is_neither_completed_nor_shown() -> None:
    stream = TranscriptStream()
    stream.add_audio(seconds(3))
    stream.apply(stream.next_job(), result((0, 2, "and so my fellow")))
    stream.add_audio(seconds(3))
    looping = WindowResult([WindowSegment(0, 2, "a"), WindowSegment(2, 3, "a")], suspect=True)
    update = stream.apply(stream.next_job(), looping)
    # The looping text never reaches a snapshot: the last sound partial stands.
    assert not update.changed
    assert [(s.text, s.completed) for s in stream.segments()] == [
        ("and so my fellow", False)]
    assert stream.offset == 0


def test_a_looping_final_pass_leaves_the_last_sound_partial() -> None:
    stream = TranscriptStream()
    stream.add_audio(seconds(3))
    stream.apply(stream.next_job(), result((0, 2, "ask not what")))
    stream.end_of_audio()
    looping = WindowResult([WindowSegment(0, 3, "ask, ask, ask, ask, ask, ask")], suspect=True)
    update = stream.apply(stream.next_job(), looping)
    assert update.finished
    assert [(s.text, s.completed) for s in stream.segments()] == [("ask not what", True)]


def test_a_full_window_that_still_loops_moves_on_with_each_text_once() -> None:
    stream = TranscriptStream(StreamSettings(max_window_seconds=5))
    stream.add_audio(seconds(6))
    looping = WindowResult([WindowSegment(0, 2, "ask not"), WindowSegment(2, 3, "ask not"),
                            WindowSegment(3, 5, "what")], suspect=True)
    stream.apply(stream.next_job(), looping)
    assert [(s.text, s.completed) for s in stream.segments()] == [
        ("ask not", True), ("what", True)]
    assert stream.offset == 5 * SAMPLE_RATE


def test_segments_two_passes_agree_on_complete_before_they_settle() -> None:
    stream = TranscriptStream(StreamSettings(settle_seconds=1.0, confirm_passes=2))
    stream.add_audio(seconds(3))
    # "one" ends 0.5 s before the window does: not settled, so it stays partial.
    stream.apply(stream.next_job(), result((0, 2.5, "one"), tail=(2.5, 3, "tw")))
    assert not any(s.completed for s in stream.segments())
    stream.add_audio(seconds(0.5))
    stream.apply(stream.next_job(), result((0.1, 2.5, "one"), tail=(2.5, 3.5, "two")))
    assert [(s.text, s.completed) for s in stream.segments()] == [
        ("one", True), ("two", False)]
    assert stream.offset == int(2.5 * SAMPLE_RATE)


def test_passes_that_disagree_confirm_nothing_early() -> None:
    stream = TranscriptStream(StreamSettings(settle_seconds=1.0, confirm_passes=2))
    stream.add_audio(seconds(3))
    stream.apply(stream.next_job(), result((0, 2.5, "one"), tail=(2.5, 3, "tw")))
    stream.add_audio(seconds(0.5))
    stream.apply(stream.next_job(), result((0, 3.0, "won"), tail=(3.0, 3.5, "two")))
    assert not any(s.completed for s in stream.segments())
    stream.add_audio(seconds(0.5))
    # The streak restarted at the difference: the next pass that agrees with this
    # one is the second in a row, and completes it (unsettled: it ends at 3.2 of 4 s).
    stream.apply(stream.next_job(), result((0, 3.2, "won"), tail=(3.2, 4, "two")))
    assert [(s.text, s.completed) for s in stream.segments()] == [
        ("won", True), ("two", False)]


def test_a_last_segment_two_passes_gave_completes_once_settled() -> None:
    # The model stops at a sentence's end and ignores the speech after it: the
    # sentence is completed so that the next window starts with that speech.
    stream = TranscriptStream(StreamSettings(settle_seconds=2.0))
    stream.add_audio(seconds(5))
    stream.apply(stream.next_job(), result((0, 2.5, "your country.")))
    assert not stream.segments()[-1].completed  # settled, but given by one pass only
    stream.add_audio(seconds(0.5))
    stream.apply(stream.next_job(), result((0, 2.5, "your country.")))
    assert [(s.text, s.completed) for s in stream.segments()] == [("your country.", True)]
    assert stream.offset == int(2.5 * SAMPLE_RATE)  # not the window's end: 3 s unheard


def test_the_next_window_starts_at_the_quietest_point_near_a_segment_end() -> None:
    stream = TranscriptStream(StreamSettings(settle_seconds=1.0))
    speech = np.full(6 * SAMPLE_RATE, 0.1, dtype=np.float32)
    gap = slice(int(2.20 * SAMPLE_RATE), int(2.26 * SAMPLE_RATE))  # the pause between words
    speech[gap] = 0.0
    stream.add_audio(speech)
    # The model dates the end 0.2 s late, inside the next word.
    stream.apply(stream.next_job(), result((0, 2.42, "prudently"), tail=(2.42, 6, "in his")))
    assert 2.20 <= stream.offset / SAMPLE_RATE <= 2.26


def test_repeated_partial_completes_after_threshold() -> None:
    # Never settled (the window is shorter than settle_seconds): only the repeats count.
    stream = TranscriptStream(StreamSettings(same_output_threshold=3, settle_seconds=5.0))
    for _ in range(2):
        stream.add_audio(seconds(1))
        stream.apply(stream.next_job(), result((0, 1, "hello")))
        assert not stream.segments()[-1].completed
    stream.add_audio(seconds(1))
    stream.apply(stream.next_job(), result((0, 1, "hello")))
    assert [(s.text, s.completed) for s in stream.segments()] == [("hello", True)]
    assert stream.offset == stream.received


def test_silence_is_dropped_but_the_last_second_kept() -> None:
    stream = TranscriptStream()
    stream.add_audio(seconds(4))
    update = stream.apply(stream.next_job(), WindowResult(no_speech=True))
    assert stream.segments() == [] and not update.changed
    assert stream.offset == 3 * SAMPLE_RATE


def test_full_window_forces_completion() -> None:
    stream = TranscriptStream(StreamSettings(max_window_seconds=5))
    stream.add_audio(seconds(8))
    job = stream.next_job()
    assert job.end - job.start == 5 * SAMPLE_RATE and not job.final
    stream.apply(job, result(tail=(0, 5, "a very long sentence")))
    assert stream.segments()[-1].completed
    assert stream.offset == 5 * SAMPLE_RATE


def test_end_of_audio_finalises_everything() -> None:
    stream = TranscriptStream()
    stream.add_audio(seconds(3))
    stream.apply(stream.next_job(), result(tail=(0, 3, "partial")))
    stream.end_of_audio()
    assert stream.wants_pass()
    job = stream.next_job()
    assert job.final
    assert not stream.wants_pass()  # one final pass, even while an older one still runs
    update = stream.apply(job, result((0, 2, "all of"), tail=(2, 3, "it")))
    assert update.finished and stream.finished and not stream.wants_pass()
    assert all(s.completed for s in stream.segments())
    assert [s.text for s in stream.segments()] == ["all of", "it"]
    with pytest.raises(ValueError, match=r"^audio after END_OF_AUDIO$"):
        stream.add_audio(seconds(1))


def test_long_backlog_after_end_of_audio_is_worked_off_in_windows() -> None:
    stream = TranscriptStream(StreamSettings(max_window_seconds=10))
    stream.add_audio(seconds(25))
    stream.end_of_audio()
    passes = 0
    while stream.wants_pass():
        job = stream.next_job()
        assert len(job.audio) == job.end - job.start <= 10 * SAMPLE_RATE
        passes += 1
        stream.apply(job, result(tail=(0, (job.end - job.start) / SAMPLE_RATE, f"w{passes}")))
        assert passes < 10, "no progress"
    assert passes == 3
    assert [s.text for s in stream.segments()] == ["w1", "w2", "w3"]


def test_only_last_n_completed_are_sent() -> None:
    stream = TranscriptStream(StreamSettings(send_last_n_segments=2, settle_seconds=1.0))
    stream.add_audio(seconds(4))
    stream.apply(stream.next_job(), result((0, 1, "a"), (1, 2, "b"), (2, 3, "c"), tail=(3, 4, "d")))
    assert [s.text for s in stream.segments()] == ["b", "c", "d"]
    assert stream.completed_count == 3


def loud(n: float, level: float = 0.1) -> np.ndarray:
    """``n`` seconds of steady sound at ``level`` (no point quieter than another)."""
    return np.full(int(n * SAMPLE_RATE), level, dtype=np.float32)


def span(audio: np.ndarray, start: float, end: float, level: float) -> None:
    audio[int(start * SAMPLE_RATE):int(end * SAMPLE_RATE)] = level


def test_each_applied_pass_is_counted() -> None:
    stream = TranscriptStream()
    stream.add_audio(seconds(1))
    for expected in (1, 2, 3):
        stream.apply(stream.next_job(), WindowResult(no_speech=True))
        assert stream.passes == expected


def test_a_later_window_dates_its_segments_from_the_stream_start() -> None:
    stream = TranscriptStream(StreamSettings(settle_seconds=1.0))
    stream.add_audio(seconds(6))
    stream.apply(stream.next_job(), result((0, 2.5, "one"), (2.5, 5, "two"), tail=(5, 6, "thr")))
    assert stream.offset == 5 * SAMPLE_RATE
    stream.add_audio(np.ones(3 * SAMPLE_RATE, dtype=np.float32) * 0.1)
    job = stream.next_job()
    assert (job.start, job.end) == (5 * SAMPLE_RATE, 9 * SAMPLE_RATE)
    stream.apply(job, result((0.5, 1.5, "three"), tail=(1.5, 4, "four")))
    assert [(s.start, s.end, s.text, s.completed) for s in stream.segments()] == [
        (0.0, 2.5, "one", True), (2.5, 5.0, "two", True), (5.5, 6.5, "three", True),
        (6.5, 9.0, "four", False)]
    assert stream.offset == int(6.5 * SAMPLE_RATE)
    # The next window holds exactly the audio from the cut on.
    stream.add_audio(seconds(1))
    job = stream.next_job()
    assert (job.start, job.end) == (int(6.5 * SAMPLE_RATE), 10 * SAMPLE_RATE)
    expected = np.concatenate([np.full(int(2.5 * SAMPLE_RATE), 0.1, np.float32), seconds(1)])
    np.testing.assert_array_equal(job.audio, expected)


def test_the_completed_count_adds_up_over_passes() -> None:
    stream = TranscriptStream(StreamSettings(settle_seconds=1.0))
    stream.add_audio(seconds(4))
    stream.apply(stream.next_job(), result((0, 1, "a"), (1, 2, "b"), tail=(2, 4, "c")))
    assert stream.completed_count == 2
    stream.add_audio(seconds(2))
    stream.apply(stream.next_job(), result((0, 2, "c"), tail=(2, 4, "d")))
    assert stream.completed_count == 3


def test_a_looping_final_pass_without_a_partial_completes_each_text_once() -> None:
    stream = TranscriptStream()
    stream.add_audio(seconds(3))
    stream.end_of_audio()
    looping = WindowResult([WindowSegment(0, 1, "ask not"), WindowSegment(1, 2, "Ask not "),
                            WindowSegment(2, 3, "what")], suspect=True)
    assert stream.apply(stream.next_job(), looping) == Update(changed=True, finished=True)
    assert [(s.text, s.completed) for s in stream.segments()] == [
        ("ask not", True), ("what", True)]


def test_each_kind_of_pass_says_whether_the_segments_changed_and_if_it_was_the_last() -> None:
    quiet = TranscriptStream()
    quiet.add_audio(seconds(2))
    assert quiet.apply(quiet.next_job(), WindowResult(no_speech=True)) == Update(False, False)
    stream = TranscriptStream(StreamSettings(max_window_seconds=5))
    stream.add_audio(seconds(3))
    assert stream.apply(stream.next_job(), result(tail=(0, 3, "ask"))) == Update(True, False)
    stream.add_audio(seconds(1))
    looping = WindowResult([WindowSegment(0, 3, "ask ask ask ask")], suspect=True)
    assert stream.apply(stream.next_job(), looping) == Update(False, False)
    stream.add_audio(seconds(1))  # the window is full now (5 s)
    assert stream.apply(stream.next_job(), looping) == Update(True, False)
    stream.add_audio(seconds(2))
    assert stream.apply(stream.next_job(), result(tail=(0, 2, "not"))) == Update(True, False)
    stream.add_audio(seconds(1))
    # Silence after a partial: the partial is dropped, which changes what is shown.
    assert stream.apply(stream.next_job(), WindowResult(no_speech=True)) == Update(True, False)
    stream.end_of_audio()
    assert stream.apply(stream.next_job(), WindowResult(no_speech=True)) == Update(False, True)


def test_a_looping_pass_in_a_later_window_is_not_taken_for_a_full_window() -> None:
    stream = TranscriptStream(StreamSettings(settle_seconds=1.0, max_window_seconds=5))
    stream.add_audio(seconds(4))
    stream.apply(stream.next_job(), result((0, 2, "one"), tail=(2, 4, "two")))
    assert stream.offset == 2 * SAMPLE_RATE
    stream.add_audio(seconds(1))
    job = stream.next_job()
    assert job.end - job.start == 3 * SAMPLE_RATE  # under the 5 s limit
    looping = WindowResult([WindowSegment(0, 3, "two two two two")], suspect=True)
    assert stream.apply(job, looping) == Update(False, False)
    assert stream.offset == 2 * SAMPLE_RATE
    assert [(s.text, s.completed) for s in stream.segments()] == [
        ("one", True), ("two", False)]


def test_speech_after_a_silent_pass_is_transcribed_as_usual() -> None:
    stream = TranscriptStream(StreamSettings(settle_seconds=1.0, confirm_passes=2))
    stream.add_audio(seconds(2))
    stream.apply(stream.next_job(), WindowResult(no_speech=True))
    stream.add_audio(seconds(3))
    stream.apply(stream.next_job(), result((0, 1.5, "one"), tail=(1.5, 4, "two")))
    assert [(s.text, s.completed) for s in stream.segments()] == [
        ("one", True), ("two", False)]


def test_the_repeat_count_of_a_partial_restarts_when_a_segment_completes() -> None:
    stream = TranscriptStream(StreamSettings(settle_seconds=1.0, same_output_threshold=3))
    stream.add_audio(seconds(3))
    stream.apply(stream.next_job(), result((0, 1.5, "one"), tail=(1.5, 3, "two")))
    assert stream.offset == int(1.5 * SAMPLE_RATE)
    for _ in range(2):  # "two" comes back a second, then a third time
        assert not stream.segments()[-1].completed
        stream.add_audio(seconds(0.5))
        stream.apply(stream.next_job(), result(tail=(0, 1.5, "two")))
    assert [(s.text, s.completed) for s in stream.segments()] == [("one", True), ("two", True)]


def test_confirming_takes_as_many_passes_in_a_row_as_set() -> None:
    stream = TranscriptStream(StreamSettings(settle_seconds=10.0, confirm_passes=3))
    stream.add_audio(seconds(3))
    for _ in range(2):
        stream.apply(stream.next_job(), result((0, 2, "one"), tail=(2, 3, "two")))
        assert not any(s.completed for s in stream.segments())
        stream.add_audio(seconds(0.5))
    stream.apply(stream.next_job(), result((0, 2, "one"), tail=(2, 4, "two")))
    assert [(s.text, s.completed) for s in stream.segments()] == [
        ("one", True), ("two", False)]


def test_passes_agree_on_a_segment_whose_start_moved_by_up_to_the_tolerance() -> None:
    # The first segment starts a second into the window, and the model dates it up
    # to 0.3 s differently from pass to pass: the passes still agree on it.
    stream = TranscriptStream(StreamSettings(settle_seconds=10.0, confirm_passes=2))
    stream.add_audio(seconds(3))
    stream.apply(stream.next_job(), result((0.0, 1.0, "uh"), (1.0, 2.0, "one"),
                                           tail=(2, 3, "two")))
    stream.add_audio(seconds(0.5))
    stream.apply(stream.next_job(), result((0.3, 1.0, "uh"), (1.2, 2.0, "one"),
                                           tail=(2, 3.5, "two")))
    assert [(s.text, s.completed) for s in stream.segments()] == [
        ("uh", True), ("one", True), ("two", False)]


def test_passes_disagree_on_a_segment_whose_start_moved_further() -> None:
    stream = TranscriptStream(StreamSettings(settle_seconds=10.0, confirm_passes=2))
    stream.add_audio(seconds(3))
    stream.apply(stream.next_job(), result((0.0, 1.0, "uh"), tail=(1, 3, "one")))
    stream.add_audio(seconds(0.5))
    stream.apply(stream.next_job(), result((0.4, 1.0, "uh"), tail=(1, 3.5, "one")))
    assert not any(s.completed for s in stream.segments())


def test_unsettled_segments_show_as_one_partial_from_the_first_start_to_the_last_end() -> None:
    stream = TranscriptStream(StreamSettings(settle_seconds=10.0))
    stream.add_audio(seconds(3))
    stream.apply(stream.next_job(), result((0.2, 1, "a"), (1.1, 2, "b"), tail=(2.1, 2.9, "c")))
    assert [(s.start, s.end, s.text, s.completed) for s in stream.segments()] == [
        (0.2, 2.9, "a b c", False)]


def test_the_quietest_point_wins_over_a_nearer_one_that_is_only_somewhat_quiet() -> None:
    stream = TranscriptStream(StreamSettings(settle_seconds=1.0))
    audio = loud(4)  # no silence: a noisy room
    span(audio, 1.70, 1.74, 0.05)  # the pause between the words, 0.3 s before the end
    span(audio, 1.96, 2.00, 0.06)  # a softer sound, nearer
    stream.add_audio(audio)
    stream.apply(stream.next_job(), result((0, 2.0, "one"), tail=(2.0, 4, "two")))
    assert 1.70 <= stream.offset / SAMPLE_RATE < 1.74
    # The completed segment ends where the next window starts.
    assert stream.segments()[0].end == stream.offset / SAMPLE_RATE


def test_the_cut_is_not_searched_beyond_a_tenth_of_a_second_after_the_end() -> None:
    stream = TranscriptStream(StreamSettings(settle_seconds=1.0))
    audio = loud(4)
    span(audio, 1.80, 1.84, 0.05)  # the pause searched for
    span(audio, 2.50, 2.60, 0.0)  # silence, but inside the next words
    stream.add_audio(audio)
    stream.apply(stream.next_job(), result((0, 2.0, "one"), tail=(2.0, 4, "two")))
    assert 1.80 <= stream.offset / SAMPLE_RATE < 1.84


def test_audio_is_kept_as_float32_whatever_it_came_as() -> None:
    stream = TranscriptStream()
    stream.add_audio(np.full(SAMPLE_RATE // 2, 0.25, dtype=np.float64))
    stream.add_audio(np.full(SAMPLE_RATE // 2, 0.5, dtype=np.float32))
    job = stream.next_job()
    assert job.audio.dtype == np.float32
    assert job.audio[0] == 0.25 and job.audio[-1] == 0.5


def test_a_stream_ended_without_audio_has_one_final_pass_over_nothing() -> None:
    stream = TranscriptStream()
    stream.end_of_audio()
    assert stream.wants_pass()
    job = stream.next_job()
    assert job.final and (job.start, job.end) == (0, 0)
    assert job.audio.dtype == np.float32 and job.audio.shape == (0,)
    assert stream.apply(job, WindowResult(no_speech=True)) == Update(False, True)
    assert stream.segments() == [] and not stream.wants_pass()


def test_no_pass_is_wanted_without_audio_beyond_the_completed_segments() -> None:
    # Even with no minimum of new audio, a pass needs something to transcribe.
    stream = TranscriptStream(StreamSettings(first_pass_seconds=0, step_seconds=0,
                                             early_step_seconds=0))
    assert not stream.wants_pass()
    stream.add_audio(seconds(1))
    assert stream.wants_pass()


# _quietest on its own: the edges a pass's window rarely reaches.


def test_a_cut_near_the_window_start_can_fall_on_its_first_sample() -> None:
    audio = loud(1)
    audio[:CUT_FRAME_SAMPLES] = 0.0  # the first 20 ms are silent
    assert _quietest(audio, 1000) == 0


def test_a_single_whole_frame_near_the_end_is_still_searched() -> None:
    audio = loud(0.025)  # one 20 ms frame and a bit
    audio[:CUT_FRAME_SAMPLES] = 0.0
    assert _quietest(audio, 200) == 0


def test_with_less_than_a_frame_to_search_the_cut_stays_at_the_end_within_the_audio() -> None:
    audio = loud(0.01)  # 160 samples: no whole 20 ms frame
    assert _quietest(audio, 100) == 100
    assert _quietest(audio, 500) == len(audio)
