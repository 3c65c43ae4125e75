"""Word error rate the way Whisper's authors score English: normalise, then jiwer."""

from __future__ import annotations

import jiwer
from whisper_normalizer.english import EnglishTextNormalizer

_normalise = EnglishTextNormalizer()


def normalise(text: str) -> str:
    return _normalise(text)


def wer(reference: str, hypothesis: str) -> float:
    """Normalised word error rate of ``hypothesis`` against ``reference``."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    if not ref.split():
        return 0.0 if not hyp.split() else 1.0
    return float(jiwer.wer(ref, hyp))
