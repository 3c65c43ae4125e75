"""Each clip's WER when faster-whisper transcribes the whole file at once.

A stream is whole when its WER is within a margin of this: streaming cannot be
asked to beat the model itself. The same model and settings as the server's
defaults (the bundled tiny.en, int8 on CPU, beam 5), in this process.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from earshot.audio import Speech
from earshot.testing.wer import wer


@dataclass(frozen=True)
class Baseline:
    clip: str
    wer: float
    text: str
    seconds: float  # wall time faster-whisper took for the whole file


def whole_file(clips: Iterable[Speech], beam_size: int = 5) -> list[Baseline]:
    from faster_whisper import WhisperModel
    from tqdm import tqdm

    from earshot.server.engine import bundled_model_path

    # faster-whisper's transcribe makes a progress bar (disabled), and tqdm starts its
    # monitor thread for any bar, for the life of the process: tqdm's own switch off.
    tqdm.monitor_interval = 0

    model = WhisperModel(str(bundled_model_path()), device="cpu", compute_type="int8")
    results = []
    for clip in clips:
        started = time.perf_counter()
        segments, _ = model.transcribe(clip.samples, language="en", beam_size=beam_size)
        text = " ".join(s.text.strip() for s in segments)  # the generator does the work
        results.append(Baseline(clip.name, wer(clip.reference, text), text,
                                time.perf_counter() - started))
    return results
