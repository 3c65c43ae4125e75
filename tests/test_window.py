"""One pass's window without the model: its result, moved in time, and frame power."""

from __future__ import annotations

import numpy as np

from earshot.server.window import (
    ENCODE_PADDING_FRAMES,
    FRAMES_PER_SECOND,
    FULL_CONTEXT_FRAMES,
    LEAD_SECONDS,
    MAX_WINDOW_SECONDS,
    WindowResult,
    WindowSegment,
    frame_power,
)


def test_the_lead_a_window_and_its_padding_fit_one_encoder_context() -> None:
    frames = (LEAD_SECONDS + MAX_WINDOW_SECONDS) * FRAMES_PER_SECOND + ENCODE_PADDING_FRAMES
    assert frames == FULL_CONTEXT_FRAMES


def test_all_segments_are_the_closed_ones_then_the_tail() -> None:
    closed = [WindowSegment(0, 1, "a"), WindowSegment(1, 2, "b")]
    tail = WindowSegment(2, 2.5, "c")
    assert WindowResult(closed, tail).all_segments == [*closed, tail]
    assert WindowResult(closed).all_segments == closed
    assert WindowResult().all_segments == []


def test_a_shifted_result_has_every_time_later_and_keeps_the_rest() -> None:
    window = WindowResult([WindowSegment(0.0, 1.0, "a"), WindowSegment(1.0, 2.5, "b")],
                          WindowSegment(2.5, 3.0, "c"), no_speech=False, language="de",
                          language_probability=0.75, suspect=True)
    moved = window.shifted(1.5)
    assert moved == WindowResult([WindowSegment(1.5, 2.5, "a"), WindowSegment(2.5, 4.0, "b")],
                                 WindowSegment(4.0, 4.5, "c"), no_speech=False, language="de",
                                 language_probability=0.75, suspect=True)
    assert window.segments[0] == WindowSegment(0.0, 1.0, "a")  # the original is left as it was


def test_a_result_shifted_earlier_has_no_time_before_zero() -> None:
    window = WindowResult([WindowSegment(0.25, 0.75, "a"), WindowSegment(0.75, 2.0, "b")],
                          WindowSegment(2.0, 2.25, "c"))
    assert window.shifted(-0.5) == WindowResult(
        [WindowSegment(0.0, 0.25, "a"), WindowSegment(0.25, 1.5, "b")],
        WindowSegment(1.5, 1.75, "c"))
    assert window.shifted(-1.0).segments[0] == WindowSegment(0.0, 0.0, "a")


def test_a_shifted_result_without_a_tail_has_none() -> None:
    window = WindowResult([WindowSegment(0.0, 1.0, "a")], no_speech=True)
    assert window.shifted(0.5) == WindowResult([WindowSegment(0.5, 1.5, "a")], no_speech=True)


def test_frame_power_is_the_mean_square_of_each_whole_frame() -> None:
    audio = np.array([1, -1, 0.5, 0.5, 2, 0, -3], dtype=np.float32)  # the 7th is left out
    power = frame_power(audio, 2)
    np.testing.assert_allclose(power, [1.0, 0.25, 2.0])
    assert power.dtype == np.float64


def test_frame_power_is_exact_for_quiet_float32_audio() -> None:
    # Summed in float64: the square of a quiet sample does not vanish.
    audio = np.full(4, 1e-23, dtype=np.float32)  # its square underflows float32
    assert frame_power(audio, 4)[0] > 0


def test_frame_power_of_less_than_a_frame_is_empty() -> None:
    assert frame_power(np.ones(3, dtype=np.float32), 4).shape == (0,)
    assert frame_power(np.zeros(0, dtype=np.float32), 4).shape == (0,)
