"""earshot.testing.quality on hand-made message sequences, each value worked out by
hand in the comments beside it."""

from __future__ import annotations

import pytest

from earshot.protocol import Segment
from earshot.testing import quality
from earshot.testing.quality import StreamQuality, Update


def partial(start: float, end: float, text: str) -> Segment:
    return Segment(start, end, text, completed=False)


def done(start: float, end: float, text: str) -> Segment:
    return Segment(start, end, text, completed=True)


def update(at: float, *segments: Segment) -> Update:
    return Update(at, segments)


# A partial that grows word by word, one word mis-heard then corrected on completion.
GROWING = [
    update(1.0, partial(0.0, 1.0, "And so")),                      # h1: and so
    update(1.5, partial(0.0, 2.0, "And so my")),                   # h2: and so my
    update(2.0, partial(0.0, 3.0, "And so my fellow")),            # h3: ... fellow
    update(2.5, partial(0.0, 3.5, "And so my fellow American")),   # h4: ... american
    update(4.6, done(0.0, 4.0, "And so, my fellow Americans.")),  # h5, the final
]


def test_the_hypotheses_are_the_folded_text_after_each_message() -> None:
    assert quality.hypotheses(GROWING) == [
        "And so", "And so my", "And so my fellow", "And so my fellow American",
        "And so, my fellow Americans."]
    later = [*GROWING, update(5.0, done(0.0, 4.0, "And so, my fellow Americans."),
                              partial(4.0, 5.0, "ask not"))]
    assert quality.hypotheses(later)[-1] == "And so, my fellow Americans. ask not"


def test_growing_partials_change_only_the_word_that_was_wrong() -> None:
    # Normalised words: h1..h4 each a prefix of the next, but h4's "american" is not
    # h5's "americans": 1 changed word, over the final's 5 words.
    assert quality.unstable_partial_word_ratio(GROWING) == pytest.approx(1 / 5)
    # 4 partial hypotheses (h1..h4), 1 of them (h4) changed by the next.
    assert quality.unstable_partial_segment_ratio(GROWING) == pytest.approx(1 / 4)


def test_case_and_punctuation_alone_are_no_change() -> None:
    steady = [update(1.0, partial(0.0, 1.0, "and so")), update(2.0, done(0.0, 1.0, "And so."))]
    assert quality.unstable_partial_word_ratio(steady) == 0.0
    assert quality.unstable_partial_segment_ratio(steady) == 0.0


def test_normalized_erasure_counts_the_characters_taken_back() -> None:
    # The shown text, as it is: h1..h4 each a character prefix of the next; h4 "And so
    # my fellow American" and h5 "And so, my fellow Americans." share only "And so"
    # (6 characters; the comma), so h4's 25 characters lose 19. The final has 28.
    assert quality.normalized_erasure(GROWING) == pytest.approx(19 / 28)
    appended = [update(1.0, partial(0.0, 1.0, "fellow American")),
                update(2.0, done(0.0, 1.0, "fellow Americans"))]
    assert quality.normalized_erasure(appended) == 0.0  # a word grown, nothing erased
    replaced = [update(1.0, partial(0.0, 1.0, "fellow a miracle")),
                update(2.0, done(0.0, 1.0, "fellow Americans"))]
    # "fellow a miracle" (16) vs "fellow Americans": common "fellow " (7): 9 erased / 16
    assert quality.normalized_erasure(replaced) == pytest.approx(9 / 16)


def test_a_rewrite_counts_every_word_it_takes_back() -> None:
    rewrite = [update(1.0, partial(0.0, 2.0, "ask what your")),   # 3 words
               update(2.0, partial(0.0, 2.5, "ask not what")),    # changes 2 of h1
               update(3.0, done(0.0, 3.0, "ask not what your"))]  # changes none of h2
    assert quality.unstable_partial_word_ratio(rewrite) == pytest.approx(2 / 4)
    assert quality.unstable_partial_segment_ratio(rewrite) == pytest.approx(1 / 2)


def test_an_empty_final_counts_as_one_word_and_one_character() -> None:
    vanished = [update(1.0, partial(0.0, 1.0, "you you")), update(2.0)]
    assert quality.unstable_partial_word_ratio(vanished) == 2.0  # 2 words / 1
    assert quality.normalized_erasure(vanished) == 7.0  # "you you" / 1
    assert quality.unstable_partial_segment_ratio([update(1.0)]) == 0.0  # no partial


def test_a_partial_whose_start_moved_leaves_a_ghost_for_a_client_keyed_by_start() -> None:
    # The case seen on the landed tree: the partial at 11.0 s was completed at 10.8 s.
    moved = [update(1.0, done(0.0, 10.8, "And so, my fellow Americans,"),
                    partial(11.0, 13.0, "ask what you can do")),
             update(2.0, done(0.0, 10.8, "And so, my fellow Americans,"),
                    done(10.8, 14.0, "Ask what you can do for your country."))]
    assert quality.ghost_partials(moved) == [partial(11.0, 13.0, "ask what you can do")]
    kept = [update(1.0, partial(11.0, 13.0, "ask what")),
            update(2.0, done(11.0, 14.0, "Ask what you can do"))]
    assert quality.ghost_partials(kept) == []  # completed at its own start: replaced
    assert quality.ghost_partials(GROWING) == []
    # The current partial of the last message is shown by both folds: not a ghost.
    assert quality.ghost_partials([update(1.0, partial(0.0, 1.0, "and so"))]) == []


def test_time_to_first_partial_is_the_first_message_with_text() -> None:
    first = [update(100.4), update(100.9, partial(0.0, 0.5, " ")),
             update(101.2, partial(0.0, 1.0, "and"))]
    assert quality.time_to_first_partial(first, first_audio_at=100.0) == pytest.approx(1.2)
    assert quality.time_to_first_partial([update(101.0)], first_audio_at=100.0) is None


def test_each_segment_is_final_when_the_message_completing_it_arrives() -> None:
    stream = [update(100.0 + 2.0, partial(0.0, 1.5, "and so")),
              update(100.0 + 4.6, done(0.0, 4.0, "and so my fellow americans"),
                     partial(4.0, 5.0, "ask")),
              update(100.0 + 7.5, done(0.0, 4.0, "and so my fellow americans"),
                     done(4.0, 6.5, "ask not"))]
    # Real time from t0 = 100: ends 4.0 and 6.5 went out at 104.0 and 106.5;
    # completed at 104.6 and 107.5.
    latencies = quality.finalization_latencies(stream, lambda end: 100.0 + end)
    assert latencies == pytest.approx([0.6, 1.0])


@pytest.mark.parametrize(("values", "expected"), [
    ([], {"p50": None, "p95": None, "p99": None}),
    ([3.0], {"p50": 3.0, "p95": 3.0, "p99": 3.0}),
    # 10 values: p50 is rank 5, p95 rank ceil(9.5) = 10, p99 rank 10
    ([1.0, 9.0, 2.0, 8.0, 3.0, 7.0, 4.0, 6.0, 5.0, 10.0], {"p50": 5.0, "p95": 10.0, "p99": 10.0}),
    # 20 values 1..20: p50 rank 10, p95 rank 19, p99 rank ceil(19.8) = 20
    ([float(n) for n in range(20, 0, -1)], {"p50": 10.0, "p95": 19.0, "p99": 20.0}),
])
def test_percentiles_are_nearest_rank(values: list[float], expected: dict) -> None:
    assert quality.percentiles(values) == expected


def test_the_real_time_factor_is_first_audio_to_final_over_the_duration() -> None:
    assert quality.real_time_factor(100.0, 111.5, 11.0) == pytest.approx(11.5 / 11.0)


def test_a_streams_figures_together() -> None:
    figures = StreamQuality.of([update(101.0, partial(0.0, 1.0, "And so")),
                                update(104.5, done(0.0, 4.0, "And so my fellow Americans"))],
                               first_audio_at=100.0, audio_seconds=5.0)
    assert figures == StreamQuality(
        unstable_partial_word_ratio=0.0, unstable_partial_segment_ratio=0.0,
        normalized_erasure=0.0, ghost_partials=0, time_to_first_partial_s=1.0,
        finalization_s={"p50": 0.5, "p95": 0.5, "p99": 0.5},  # end 4.0 sent at 104.0
        real_time_factor=pytest.approx(4.5 / 5.0))
    paced = StreamQuality.of([update(101.0, done(0.0, 4.0, "x"))], first_audio_at=100.0,
                             audio_seconds=5.0, sent_at=lambda end: 100.0 + end / 4,
                             final_at=102.0)
    assert paced.finalization_s["p50"] == pytest.approx(0.0)  # 4 s of audio sent in 1 s
    assert paced.real_time_factor == pytest.approx(2.0 / 5.0)


def test_a_stream_that_got_no_segments_message_is_all_zeros_and_nones() -> None:
    assert quality.unstable_partial_word_ratio([]) == 0.0
    assert quality.unstable_partial_segment_ratio([]) == 0.0
    assert quality.normalized_erasure([]) == 0.0
    assert quality.ghost_partials([]) == [] and quality.hypotheses([]) == []
    assert StreamQuality.of([], first_audio_at=100.0, audio_seconds=5.0) == StreamQuality(
        0.0, 0.0, 0.0, 0, None, {"p50": None, "p95": None, "p99": None}, None)


def test_percentiles_take_the_rank_up_for_an_odd_count() -> None:
    # 101 values 0..100: p50 is rank ceil(50.5) = 51, the value 50; p95 rank 96, p99 rank 100.
    assert quality.percentiles([float(n) for n in range(101)]) == {
        "p50": 50.0, "p95": 95.0, "p99": 99.0}


def test_the_updates_of_a_recorded_exchange_are_its_segments_messages_with_their_times(
        ) -> None:
    from earshot.protocol import ServerMessage

    one, two = partial(0.0, 1.0, "and"), done(0.0, 2.0, "and so")
    messages = [(100.0, ServerMessage("ready", {"message": "SERVER_READY"})),
                (101.0, ServerMessage("segments", {"segments": [one.to_wire()]})),
                (102.0, ServerMessage("segments", {"segments": [two.to_wire(), one.to_wire()]})),
                (102.5, ServerMessage("end", {}))]
    assert quality.updates_of(messages) == [Update(101.0, (one,)), Update(102.0, (two, one))]


def test_a_streams_record_rounds_each_figure_and_keeps_the_ghost_count_whole() -> None:
    figures = StreamQuality(1 / 3, 0.123456, 2 / 3, 2, 1.23456,
                            {"p50": 0.33333, "p95": None, "p99": 1.0}, 1.066666)
    assert figures.as_dict() == {
        "unstable_partial_word_ratio": 0.333, "unstable_partial_segment_ratio": 0.123,
        "normalized_erasure": 0.667, "ghost_partials": 2, "time_to_first_partial_s": 1.235,
        "finalization_s": {"p50": 0.333, "p95": None, "p99": 1.0}, "real_time_factor": 1.067}
    assert figures.as_dict(digits=1)["time_to_first_partial_s"] == 1.2
    assert isinstance(figures.as_dict()["ghost_partials"], int)
    none = StreamQuality(0.0, 0.0, 0.0, 0, None, {"p50": None}, None).as_dict()
    assert none["time_to_first_partial_s"] is None and none["real_time_factor"] is None


def test_without_a_final_time_the_last_update_is_the_final() -> None:
    three = [update(101.0, partial(0.0, 1.0, "and")), update(102.0, partial(0.0, 2.0, "and so")),
             update(104.0, done(0.0, 3.0, "and so my"))]
    figures = StreamQuality.of(three, first_audio_at=100.0, audio_seconds=4.0)
    assert figures.real_time_factor == pytest.approx(4.0 / 4.0)  # 100 -> 104, not 102
