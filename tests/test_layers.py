"""The model-free layers stay model-free: importing them does not load the model stack.

The protocol, the transcript state machine and the settings are used where no
model runs (clients, config validation at start, tests without a model), and
CTranslate2 plus faster-whisper take seconds to import. A fresh interpreter
shows what an import really pulls in; this one has long since loaded both.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import earshot

MODEL_FREE = (
    "earshot.protocol",
    "earshot.server.window",
    "earshot.server.decoding",
    "earshot.server.model_spec",
    "earshot.server.streaming",
    "earshot.server.config",
)
HEAVY = ("ctranslate2", "faster_whisper")


def test_model_free_modules_import_without_the_model_stack() -> None:
    check = (
        f"import sys\n"
        f"import {', '.join(MODEL_FREE)}\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    # The same earshot as this test's, whatever the installed copy points at.
    src = str(Path(earshot.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=60, env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"importing {MODEL_FREE} loaded {result.stdout.strip()}"
