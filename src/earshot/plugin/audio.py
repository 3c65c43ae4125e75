"""Real speech: manifest clips with their reference transcripts, decoded once.

The clips come from the mirror folder (``EARSHOT_AUDIO_MIRROR``) or their
public source, checksum-verified either way (see :mod:`earshot.audio`).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from earshot import audio


@pytest.fixture(scope="session")
def speech_clip() -> Callable[[str], audio.Speech]:
    """``speech_clip("jfk.flac")``: the clip as 16 kHz mono float32 with its reference."""
    loaded: dict[str, audio.Speech] = {}

    def load(name: str) -> audio.Speech:
        if name not in loaded:
            loaded[name] = audio.load_speech(name)
        return loaded[name]

    return load
