"""The model wrapper: timestamp splitting, and the real model on known signals."""

from __future__ import annotations

import pytest

from earshot import audio
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
