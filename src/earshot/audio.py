"""Speech clips and audio handling: obtain, decode, resample, chunk, pace.

Clips are listed in the manifest (``audio/manifest.tsv`` at a checkout's top
level, which the package's ``data/manifest.tsv`` links to; name, sha256,
reference text, public source). They are never committed: :func:`clip_path`
takes each from a mirror folder (``EARSHOT_AUDIO_MIRROR``, else
``../shared/audio`` beside a checkout when it exists) or downloads it from its
public source into a cache (``EARSHOT_AUDIO_CACHE``, else the checkout's
``audio/``, beside the manifest and ignored by git, or
``~/.cache/earshot/audio`` for an installed package), and verifies the
checksum either way.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import http.client
import os
import shutil
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from earshot.protocol import SAMPLE_RATE

# The package's manifest; in a checkout, a link to the top level's audio/manifest.tsv.
MANIFEST = Path(__file__).resolve().parent / "data" / "manifest.tsv"
# A checkout's root (src/earshot/audio.py); for an installed package, no checkout.
REPO_ROOT = Path(__file__).resolve().parents[2]
IN_CHECKOUT = (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "src").is_dir()


def default_cache(root: Path, in_checkout: bool, environ: Mapping[str, str]) -> Path:
    """``audio/`` at a checkout's root; for an installed package, the user's
    cache folder (``XDG_CACHE_HOME``, else ``~/.cache``) under ``earshot/audio``."""
    if in_checkout:
        return root / "audio"
    return Path(environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "earshot" / "audio"


DEFAULT_CACHE = default_cache(REPO_ROOT, IN_CHECKOUT, os.environ)
DOWNLOAD_TIMEOUT = 30.0


class ClipError(RuntimeError):
    """A clip is unknown, missing or corrupt; the text says how to get it."""


@dataclass(frozen=True)
class Clip:
    name: str
    sha256: str
    reference: str
    source_repository: str
    source_path: str
    license: str

    @property
    def source_url(self) -> str:
        return (
            f"https://raw.githubusercontent.com/{self.source_repository}/HEAD/{self.source_path}"
        )


def load_manifest(path: Path | None = None) -> dict[str, Clip]:
    """The clips of the manifest, by file name."""
    path = path or Path(os.environ.get("EARSHOT_AUDIO_MANIFEST", MANIFEST))
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f, delimiter="\t")
        return {
            row["file"]: Clip(
                row["file"], row["sha256"], row["reference"],
                row["source_repository"], row["source_path"], row["license"],
            )
            for row in rows
        }


def default_mirror() -> Path | None:
    """EARSHOT_AUDIO_MIRROR, else ../shared/audio beside a checkout if present."""
    if env := os.environ.get("EARSHOT_AUDIO_MIRROR"):
        return Path(env)
    shared = REPO_ROOT.parent / "shared" / "audio"
    return shared if IN_CHECKOUT and shared.is_dir() else None


def clip_path(
    name: str,
    *,
    mirror: Path | None = None,
    cache: Path | None = None,
    download: bool = True,
) -> Path:
    """A verified local copy of clip ``name``."""
    clips = load_manifest()
    if name not in clips:
        raise ClipError(f"unknown clip {name!r}; the manifest lists {', '.join(sorted(clips))}")
    clip = clips[name]
    mirror = mirror or default_mirror()
    if mirror is not None and (mirror / name).is_file():
        return _verified(mirror / name, clip)
    cache = cache or Path(os.environ.get("EARSHOT_AUDIO_CACHE", DEFAULT_CACHE))
    cached = cache / name
    if cached.is_file():
        return _verified(cached, clip)
    if not download:
        raise ClipError(_missing(clip, mirror))
    try:
        _download(clip, cached)
    except (OSError, http.client.HTTPException, ClipError) as exc:
        raise ClipError(f"{_missing(clip, mirror)}; downloading it failed: {exc}") from exc
    return cached


def _missing(clip: Clip, mirror: Path | None) -> str:
    where = f"not in the mirror {mirror}" if mirror else "no mirror folder is set"
    return (
        f"clip {clip.name!r} is missing ({where}); set EARSHOT_AUDIO_MIRROR to a folder "
        f"holding it, or allow a download from {clip.source_url}"
    )


def _verified(path: Path, clip: Clip, what: str = "") -> Path:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != clip.sha256:
        raise ClipError(
            f"{what or path} has sha256 {digest}, the manifest expects {clip.sha256}: "
            "the file is corrupt or a different recording; delete it and fetch it again"
        )
    return path


def _download(clip: Clip, dest: Path) -> None:
    """Fetch ``clip`` into ``dest``: into a temporary file first, renamed only once its
    checksum holds, so an interrupted or cut-short download leaves nothing behind."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out, \
                urllib.request.urlopen(clip.source_url, timeout=DOWNLOAD_TIMEOUT) as response:
            shutil.copyfileobj(response, out)
        _verified(tmp, clip, what=f"the download of {clip.source_url}")
        os.replace(tmp, dest)
    except BaseException:  # an error, a timeout, Ctrl-C: no partial file stays
        tmp.unlink(missing_ok=True)
        raise


# -- decoding ------------------------------------------------------------------


def load_audio(path: str | Path) -> np.ndarray:
    """Any file soundfile reads (WAV, FLAC, OGG, ...) as 16 kHz mono float32."""
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise ValueError(f"cannot decode {path}: {exc}") from exc
    return to_model_rate(data.mean(axis=1), rate)


def to_model_rate(samples: np.ndarray, rate: int) -> np.ndarray:
    """Resample mono samples to 16 kHz float32 (soxr, high quality)."""
    samples = np.asarray(samples, dtype=np.float32)
    if rate != SAMPLE_RATE:
        samples = soxr.resample(samples, rate, SAMPLE_RATE)
    return np.ascontiguousarray(samples, dtype=np.float32)


def load_clip(name: str) -> np.ndarray:
    """A manifest clip, verified and decoded to 16 kHz mono float32."""
    return load_audio(clip_path(name))


@dataclass(frozen=True)
class Speech:
    """A manifest clip decoded, with its reference transcript."""

    name: str
    samples: np.ndarray
    reference: str

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def load_speech(name: str) -> Speech:
    """One manifest clip as :class:`Speech`; ClipError when the manifest lacks it."""
    manifest = load_manifest()
    if name not in manifest:
        raise ClipError(f"unknown clip {name!r}; the manifest has {', '.join(manifest)}")
    return Speech(name, load_clip(name), manifest[name].reference)


# -- generated signals ---------------------------------------------------------


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)


def tone(seconds: float, frequency: float = 440.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def noise(seconds: float, amplitude: float = 0.05, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (amplitude * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)


# -- chunking and pacing -------------------------------------------------------


def chunks(samples: np.ndarray, chunk_ms: float = 100.0) -> Iterator[np.ndarray]:
    """Consecutive pieces of ``chunk_ms`` milliseconds (the last may be shorter)."""
    size = max(1, int(SAMPLE_RATE * chunk_ms / 1000))
    for start in range(0, len(samples), size):
        yield samples[start : start + size]


async def paced(
    pieces: Iterable[np.ndarray], speed: float = 1.0, clock=time.monotonic
) -> AsyncIterator[np.ndarray]:
    """Yield each piece when it would have been recorded, at ``speed`` x real time.

    Deadlines are absolute, so pacing does not drift however long each send
    takes. This is pacing, not waiting for a condition.
    """
    start = clock()
    sent = 0.0
    for piece in pieces:
        delay = start + sent / speed - clock()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing
        yield piece
        sent += len(piece) / SAMPLE_RATE
