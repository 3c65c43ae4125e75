"""The model wrapper: timestamp splitting, and the real model on known signals."""

from __future__ import annotations

import numpy as np
import pytest

from earshot import audio
from earshot.protocol import SAMPLE_RATE
from earshot.server import decoding, engine
from earshot.server.window import MAX_WINDOW_SECONDS, WindowSegment
from earshot.testing.wer import wer

TS = 1000  # a made-up first timestamp token id


def test_split_closed_spans_and_open_tail() -> None:
    tokens = [TS + 0, 1, 2, TS + 50, TS + 50, 3, TS + 100, 4, 5]
    spans, tail = decoding.split_by_timestamps(tokens, TS, duration=3.0)
    assert spans == [(0.0, 1.0, [1, 2]), (1.0, 2.0, [3])]
    assert tail == (2.0, [4, 5])


def test_split_without_timestamps_is_all_tail() -> None:
    assert decoding.split_by_timestamps([1, 2], TS, duration=1.0) == ([], (0.0, [1, 2]))


def test_split_clamps_times_to_the_window() -> None:
    spans, tail = decoding.split_by_timestamps([TS, 1, TS + 1400], TS, duration=5.0)
    assert spans == [(0.0, 5.0, [1])] and tail is None


def seg(start: float, end: float, text: str) -> WindowSegment:
    return WindowSegment(start, end, text)


def test_repetition_loop_is_suspect() -> None:
    first = seg(0, 7, "And so, my fellow Americans ask not what your country can do")
    again = seg(7, 8.7, "and so my fellow Americans ask")
    assert decoding.looks_repetitive([first, again], [first])


@pytest.mark.parametrize("text", [
    ". Have you, have you . Have you . Have",  # seen in a soak, on librivox_ss01_0870
    "And so, and so, and so, and so, and",  # jfk.flac's first second
    "s s s s s s s s s s s",
])
def test_a_phrase_over_and_over_is_suspect(text: str) -> None:
    loop = seg(0, 3, text)
    assert decoding.looks_repetitive([loop], [])


@pytest.mark.parametrize("text", ["No, no, no, I said", "that that is is that that is"])
def test_speech_that_repeats_a_little_is_not_suspect(text: str) -> None:
    assert not decoding.looks_repetitive([seg(0, 3, text)], [])


def test_impossibly_fast_closed_segment_is_suspect() -> None:
    fast = seg(7, 8, "one two three four five six seven eight")
    assert decoding.looks_repetitive([fast], [fast])
    assert not decoding.looks_repetitive([fast], [])  # an open tail's span is unknown


def test_ordinary_speech_is_not_suspect() -> None:
    items = [seg(0, 8, "And so my fellow Americans ask not what your country can do for you"),
             seg(8, 11, "ask what you can do for your country")]
    assert not decoding.looks_repetitive(items, items)


def test_a_span_without_an_opening_timestamp_starts_where_the_last_one_was() -> None:
    spans, tail = decoding.split_by_timestamps([1, 2, TS + 50, 3, TS + 100, 4], TS, duration=3.0)
    assert spans == [(0.0, 1.0, [1, 2]), (1.0, 2.0, [3])]
    assert tail == (2.0, [4])


def test_a_span_never_ends_before_it_begins() -> None:
    spans, tail = decoding.split_by_timestamps([TS + 50, 1, TS + 25], TS, duration=3.0)
    assert spans == [(1.0, 1.0, [1])] and tail is None


def test_a_tail_opened_by_a_timestamp_starts_there() -> None:
    spans, tail = decoding.split_by_timestamps([TS + 10, 1, TS + 20, TS + 30, 2], TS, 3.0)
    assert spans == [(0.2, 0.4, [1])]
    assert tail == (0.6, [2])


def test_the_same_five_words_said_again_twice_as_fast_are_a_loop() -> None:
    """A loop repeats text with no audio behind it: the repeat is dated too short."""
    first = seg(0, 4, "the quick brown fox jumps over the dog")  # 0.5 s a word
    again = seg(4, 5.75, "then the quick brown fox jumps away")  # 0.25 s a word
    assert decoding.looks_repetitive([first, again], [first, again])
    assert decoding.looks_repetitive([first, again], [])  # an open tail as well
    assert not decoding.looks_repetitive(
        [first, seg(4, 5.75, "then the quick brown fox ran")], [])


def test_the_same_words_said_again_at_their_pace_are_speech() -> None:
    """A sentence said twice (a refrain, a speaker who repeats, JFK's sentence twice
    in the suite) is not a loop, whether the model puts it in one segment or two."""
    jfk = ("and so my fellow americans ask not what your country can do for you "
           "ask what you can do for your country")
    twice = [seg(0, 11, jfk), seg(11, 22, jfk)]
    assert not decoding.looks_repetitive(twice, twice)
    one_segment = [seg(0, 12.64, f"{jfk} and so my fellow americans")]  # seen under load
    assert not decoding.looks_repetitive(one_segment, [])
    slower = seg(4, 9, "then the quick brown fox jumps away")
    assert not decoding.looks_repetitive(
        [seg(0, 4, "the quick brown fox jumps over the dog"), slower], [])


def test_the_words_repeated_at_the_very_end_of_a_window_count() -> None:
    items = [seg(0, 5, "a b c d e f g"), seg(5, 6.5, "h a b c d e")]
    assert decoding.looks_repetitive(items, items)


def test_words_are_compared_without_case_or_punctuation() -> None:
    assert decoding.looks_repetitive([seg(0, 3, "Xbox, xbox. Xbox xbox")], [])
    said = seg(0, 5, "Ask not, what your country can do")
    again = seg(5, 6, "ask NOT what \"your\" country")
    assert decoding.looks_repetitive([said, again], [])


@pytest.mark.parametrize("words", [
    "no no no no", "and so and so and so", "ask not what ask not what ask not what",
    "your country can do your country can do your country can do",
])
def test_a_word_four_times_or_a_phrase_of_two_to_four_three_times_is_a_loop(words) -> None:
    assert decoding.repeats_a_phrase(words.split())
    assert decoding.repeats_a_phrase(["so", "then", *words.split(), "end"])


@pytest.mark.parametrize("words", [
    "no no no", "and so and so", "ask not what ask not what",
    "your country can do your country can do",
    "we choose to go to the moon we choose to go to the moon we choose to go to the moon",
])
def test_fewer_repeats_or_a_longer_phrase_are_not_a_loop(words) -> None:
    assert not decoding.repeats_a_phrase(words.split())


def test_a_closed_segment_of_up_to_six_words_a_second_is_speech() -> None:
    six = seg(2, 3, "one two three four five six")
    assert not decoding.looks_repetitive([six], [six])
    seven = seg(2, 3, "one two three four five six seven")
    assert decoding.looks_repetitive([seven], [seven])


def test_a_closed_segment_under_half_a_second_counts_as_half_a_second() -> None:
    three = seg(2, 2.2, "one two three")  # 15 words a second as dated, 6 as counted
    assert not decoding.looks_repetitive([three], [three])
    four = seg(2, 2.5, "one two three four")
    assert decoding.looks_repetitive([four], [four])


def test_a_quiet_room_gets_digital_silence_before_the_window() -> None:
    speech = audio.noise(2, seed=1) * 0.5
    speech[SAMPLE_RATE // 2:SAMPLE_RATE // 2 + SAMPLE_RATE // 10] = 0.001  # a pause
    lead = decoding.quiet_lead(speech.astype(np.float32), 8000)
    assert lead.dtype == np.float32 and lead.shape == (8000,) and not lead.any()


def noisy(seconds: float, level: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(round(seconds * SAMPLE_RATE)) * level).astype(np.float32)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def test_steady_noise_gets_a_lead_as_loud_as_its_quietest_tenth_of_a_second() -> None:
    window = noisy(2, 0.1)
    tenth = SAMPLE_RATE // 10
    window[tenth:2 * tenth] = noisy(0.1, 0.02, seed=1)  # the quietest 100 ms
    lead = decoding.quiet_lead(window, 8000)
    assert lead.dtype == np.float32 and lead.shape == (8000,)
    assert rms(lead) == pytest.approx(rms(window[tenth:2 * tenth]), rel=0.05)
    # The same lead for the same audio, so that passes over it agree.
    np.testing.assert_array_equal(decoding.quiet_lead(window.copy(), 8000), lead)


@pytest.mark.parametrize("samples", [1, 8000])
def test_a_window_of_one_tenth_of_a_second_of_noise_gets_noise(samples: int) -> None:
    lead = decoding.quiet_lead(noisy(0.15, 0.1), samples)
    assert lead.dtype == np.float32 and lead.shape == (samples,) and lead.all()


@pytest.mark.parametrize("samples", [0, -3])
def test_no_lead_is_asked_for_none_is_given(samples: int) -> None:
    lead = decoding.quiet_lead(noisy(1, 0.1), samples)
    assert lead.dtype == np.float32 and lead.shape == (0,)


def test_under_a_tenth_of_a_second_of_audio_gets_silence() -> None:
    lead = decoding.quiet_lead(noisy(0.05, 0.1), 8000)
    assert lead.dtype == np.float32 and lead.shape == (8000,) and not lead.any()


def test_unknown_device_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        engine.resolve_device("tpu")


def test_auto_picks_int8_on_cpu() -> None:
    assert engine.resolve_compute_type("auto", "cpu") == "int8"
    assert engine.resolve_compute_type("auto", "cuda") == "float16"


def test_missing_model_folder_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(engine.ModelLoadError, match=r"holds no model\.bin"):
        engine.Transcriber(str(tmp_path / "nowhere"), device="cpu")


@pytest.fixture(scope="module")
def transcriber() -> engine.Transcriber:
    return engine.Transcriber(device="cpu")


@pytest.mark.parametrize("signal", [audio.silence(3)] + [audio.noise(3, seed=n) for n in range(4)],
                         ids=["silence"] + [f"noise{n}" for n in range(4)])
@pytest.mark.parametrize("vad", [False, True])
def test_no_speech_in_signals_without_speech(transcriber, signal, vad) -> None:
    window = transcriber.transcribe(signal, vad=vad)
    assert window.no_speech and window.all_segments == []


def test_whole_clip_in_one_window(transcriber, jfk, manifest) -> None:
    window = transcriber.transcribe(jfk)
    text = " ".join(s.text for s in window.all_segments)
    assert wer(manifest["jfk.flac"].reference, text) == 0.0
    assert all(0 <= s.start <= s.end <= len(jfk) / 16000 for s in window.all_segments)


def test_window_over_the_encoder_context_is_refused(transcriber) -> None:
    with pytest.raises(ValueError, match="over"):
        transcriber.transcribe(audio.silence(MAX_WINDOW_SECONDS + 1))


def test_speech_from_the_first_sample_keeps_its_first_word(transcriber, manifest) -> None:
    # librivox_ss01_0870 starts speaking at once ("And Mr. John Dashwood ..."):
    # on a 10 s context tiny.en drops the "And" unless silence comes first.
    clip = audio.load_clip("librivox_ss01_0870.wav")
    window = transcriber.transcribe(clip)
    text = " ".join(s.text for s in window.all_segments)
    assert text.split()[0].strip(",.").lower() == "and", text
    assert wer(manifest["librivox_ss01_0870.wav"].reference, text) == 0.0
