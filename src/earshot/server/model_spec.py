"""How a model is asked for: the device names, and a folder told from a model name.

Settings are validated before the server loads a model, so this module must
not load the model stack: CTranslate2 is imported only when ``--device cuda``
has to ask it for a GPU.
"""

from __future__ import annotations

import os
from pathlib import Path

DEVICES = ("auto", "cpu", "cuda")


def cuda_problem() -> str | None:
    """Why ``--device cuda`` cannot run here, or None when CTranslate2 sees a GPU."""
    import ctranslate2  # here, not above: only a CUDA setting needs it

    if ctranslate2.get_cuda_device_count() > 0:
        return None
    return ("no CUDA GPU found (CTranslate2 sees none: no NVIDIA GPU or driver here, "
            "or a container started without the GPU); use --device auto or cpu")


def looks_like_path(name: str) -> bool:
    """A model given as a folder rather than a name faster-whisper resolves."""
    return os.sep in name or name.startswith(".") or Path(name).exists()
