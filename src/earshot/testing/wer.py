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


def words_lost_at_the_end(reference: str, hypothesis: str) -> int:
    """How many of the reference's last words the hypothesis is missing (deletions at
    the end of the alignment): what a server that stops early loses."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    if not ref.split():
        return 0
    if not hyp.split():
        return len(ref.split())
    chunks = jiwer.process_words(ref, hyp).alignments[0]
    last = chunks[-1]
    return last.ref_end_idx - last.ref_start_idx if last.type == "delete" else 0
