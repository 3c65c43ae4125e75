"""The README's model options, each seen where it takes effect: what the server
hands the transcriber, what the transcriber hands faster-whisper (recorded by a
stand-in of ``WhisperModel``, named as such), and, on the real model, the beam
of each pass and the length the encoder runs on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from earshot import audio
from earshot.server import app, engine
from earshot.server.config import parse_config
from earshot.server.window import ENCODE_PADDING_FRAMES, FULL_CONTEXT_FRAMES, LEAD_SECONDS


class RecordingWhisperModel:
    """A stand-in of faster-whisper's ``WhisperModel``: records how it is made."""

    made: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        RecordingWhisperModel.made.append((args, kwargs))


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    RecordingWhisperModel.made = []
    monkeypatch.setattr(engine, "WhisperModel", RecordingWhisperModel)
    monkeypatch.setattr(engine, "get_vad_model", lambda: None)
    return RecordingWhisperModel.made


@pytest.fixture
def model_folder(tmp_path: Path) -> str:
    (tmp_path / "model.bin").write_bytes(b"")
    return str(tmp_path)


def test_the_server_hands_every_model_option_to_the_transcriber(
        monkeypatch: pytest.MonkeyPatch, model_folder: str) -> None:
    given: list[tuple[Any, ...]] = []
    monkeypatch.setattr(app, "Transcriber", lambda *args: given.append(args))
    config = parse_config([f"--model={model_folder}", "--device=cpu", "--compute-type=int8",
                           "--cpu-threads=3", "--workers=4", "--beam-size=2",
                           "--partial-beam-size=1"], environ={})
    app.Server(config)._load_model()
    assert given == [(model_folder, "cpu", "int8", 3, 4, 2, 1)]


def test_workers_and_threads_reach_faster_whisper(recorded, model_folder) -> None:
    engine.Transcriber(model_folder, device="cpu", cpu_threads=3, workers=4)
    [(args, kwargs)] = recorded
    assert args == (model_folder,)
    assert kwargs == {"device": "cpu", "compute_type": "int8", "cpu_threads": 3,
                      "num_workers": 4, "local_files_only": False}


@pytest.mark.parametrize(("cores", "workers", "threads"), [(8, 2, 4), (8, 3, 2), (2, 4, 1),
                                                           (None, 2, 1)])
def test_no_cpu_threads_divides_the_cores_among_the_workers(
        recorded, model_folder, monkeypatch, cores, workers, threads) -> None:
    monkeypatch.setattr(engine.os, "cpu_count", lambda: cores)
    transcriber = engine.Transcriber(model_folder, device="cpu", workers=workers)
    assert transcriber.cpu_threads == threads
    assert recorded[0][1]["cpu_threads"] == threads


@pytest.mark.parametrize(("gpus", "device"), [(0, "cpu"), (1, "cuda"), (2, "cuda")])
def test_auto_is_cuda_exactly_when_ctranslate2_sees_a_gpu(monkeypatch, gpus, device) -> None:
    monkeypatch.setattr(engine.ctranslate2, "get_cuda_device_count", lambda: gpus)
    assert engine.resolve_device("auto") == device
    assert engine.resolve_device("cpu") == "cpu"  # an explicit device is kept


@pytest.mark.parametrize(("offline", "local_only"), [("1", True), ("", False), ("0", False)])
def test_a_model_name_goes_to_faster_whisper_as_a_name(recorded, monkeypatch,
                                                       offline, local_only) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    engine.Transcriber("tiny.en", device="cpu")
    [(args, kwargs)] = recorded
    assert args == ("tiny.en",) and kwargs["local_files_only"] is local_only


def test_the_default_model_is_the_bundled_folder(recorded) -> None:
    transcriber = engine.Transcriber(device="cpu")
    bundled = engine.bundled_model_path()
    assert transcriber.model_name == str(bundled) == recorded[0][0][0]
    assert (bundled / "model.bin").is_file()


@pytest.fixture(scope="module")
def real() -> engine.Transcriber:
    """The real bundled model (beam 3 at the end, 1 before it)."""
    return engine.Transcriber(device="cpu", beam_size=3, partial_beam_size=1)


@pytest.fixture(scope="module")
def default_with_no_hub() -> engine.Transcriber:
    """The default model, made while any hub request would go to a closed port and
    fail (module scope: the first model in a process opens onnxruntime's cache
    for good, which a test's leak guard would count against it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
        return engine.Transcriber(device="cpu")


def test_the_default_model_is_english_only_tiny_and_needs_no_hub(default_with_no_hub) -> None:
    transcriber = default_with_no_hub
    assert not transcriber.multilingual
    assert transcriber.language_problem("de") == "this model transcribes only 'en', not 'de'"
    assert transcriber._model.model.n_mels == 80  # tiny.en's 80 mel bins (v3 models: 128)


@pytest.mark.parametrize(("partial", "beam"), [(True, 1), (False, 3)])
def test_partial_passes_use_the_partial_beam_and_the_final_pass_the_beam(
        real, jfk, monkeypatch, partial, beam) -> None:
    seen: list[int] = []
    generate = real._model.generate_with_fallback

    def recording(encoder_output, prompt, tokenizer, options):
        seen.append(options.beam_size)
        return generate(encoder_output, prompt, tokenizer, options)

    monkeypatch.setattr(real._model, "generate_with_fallback", recording)
    real.transcribe(jfk[:5 * 16000], partial=partial)
    assert seen and set(seen) == {beam}


def frames_for(seconds: float) -> int:
    """What the encoder should get: the window with its lead and padding, in whole
    seconds, at least 10 s and at most Whisper's 30 s."""
    content = round((seconds + LEAD_SECONDS) * 100) + ENCODE_PADDING_FRAMES
    return min(FULL_CONTEXT_FRAMES, max(engine.MIN_ENCODE_FRAMES, -(-content // 100) * 100))


@pytest.mark.parametrize(("seconds", "expected"), [(3.0, 1000), (11.0, 1300), (20.0, 2200),
                                                   (28.0, 3000)])
def test_the_encoder_runs_on_the_windows_length_not_30_s(real, monkeypatch, seconds,
                                                         expected) -> None:
    assert frames_for(seconds) == expected
    shapes: list[int] = []
    encode = real._model.encode

    def recording(features: np.ndarray, *args: Any, **kwargs: Any):
        shapes.append(features.shape[-1])
        return encode(features, *args, **kwargs)

    monkeypatch.setattr(real._model, "encode", recording)
    real.transcribe(audio.noise(seconds, seed=1))
    assert shapes == [expected]
