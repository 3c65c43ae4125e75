"""Clips from the manifest: mirror, cache, checksums; decoding, chunking, pacing."""

from __future__ import annotations

import asyncio
import shutil
import socket
import threading
from collections.abc import Iterator

import numpy as np
import pytest
import soundfile

from earshot import audio
from earshot.protocol import SAMPLE_RATE


def test_manifest_lists_the_four_clips_with_sources(manifest) -> None:
    assert set(manifest) == {
        "jfk.flac", "librivox_ss01_0870.wav", "librivox_ss01_0890.wav", "librivox_ss01_0920.wav"
    }
    for clip in manifest.values():
        assert len(clip.sha256) == 64 and clip.reference and clip.license
        assert clip.source_url.startswith("https://raw.githubusercontent.com/")


def test_clip_from_mirror_is_verified(tmp_path) -> None:
    path = audio.clip_path("jfk.flac")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shutil.copy(path, mirror / "jfk.flac")
    assert audio.clip_path("jfk.flac", mirror=mirror) == mirror / "jfk.flac"


def test_corrupt_clip_is_refused(tmp_path) -> None:
    (tmp_path / "jfk.flac").write_bytes(b"not the speech")
    with pytest.raises(audio.ClipError, match="corrupt or a different recording"):
        audio.clip_path("jfk.flac", mirror=tmp_path)


def test_missing_clip_names_how_to_get_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EARSHOT_AUDIO_MIRROR", str(tmp_path / "empty"))
    with pytest.raises(audio.ClipError) as caught:
        audio.clip_path("jfk.flac", cache=tmp_path / "cache", download=False)
    assert "EARSHOT_AUDIO_MIRROR" in str(caught.value)
    assert "collabora/WhisperLive" in str(caught.value)


@pytest.fixture
def cut_short_source(monkeypatch) -> Iterator[None]:
    """Stand-in for a clip's public source (tests reach only 127.0.0.1): an HTTP
    server on a thread that promises 100,000 bytes and hangs up after a few."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def answer_once() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 5000)

    thread = threading.Thread(target=answer_once, name="clip-source-stand-in")
    thread.start()
    port = listener.getsockname()[1]
    monkeypatch.setattr(audio.Clip, "source_url",
                        property(lambda clip: f"http://127.0.0.1:{port}/{clip.name}"))
    try:
        yield
    finally:
        listener.close()
        thread.join(15)


def test_an_interrupted_download_is_a_clip_error_and_leaves_nothing(tmp_path,
                                                                     cut_short_source) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(audio.ClipError, match="downloading it failed"):
        audio.clip_path("jfk.flac", mirror=tmp_path / "no-mirror", cache=cache)
    assert list(cache.iterdir()) == []  # neither the clip nor a temp file


def test_unknown_clip() -> None:
    with pytest.raises(audio.ClipError, match=r"unknown clip 'nope\.wav'"):
        audio.clip_path("nope.wav")


def test_jfk_is_decoded_downmixed_and_resampled() -> None:
    info = soundfile.info(str(audio.clip_path("jfk.flac")))
    assert (info.samplerate, info.channels, info.subtype) == (44100, 2, "PCM_24")
    samples = audio.load_clip("jfk.flac")
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) / SAMPLE_RATE - info.duration) < 0.01
    assert 0.05 < np.abs(samples).max() <= 1.0


def test_resampling_keeps_a_tone_in_tune() -> None:
    rate = 44100
    t = np.arange(rate) / rate
    samples = audio.to_model_rate(np.sin(2 * np.pi * 1000 * t), rate)
    assert len(samples) == SAMPLE_RATE
    peak = np.argmax(np.abs(np.fft.rfft(samples)))
    assert peak == 1000  # 1 Hz bins over one second


def test_undecodable_file_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....nonsense")
    with pytest.raises(ValueError, match="cannot decode"):
        audio.load_audio(bad)


def test_chunks_cover_everything() -> None:
    samples = np.arange(16500, dtype=np.float32)
    pieces = list(audio.chunks(samples, chunk_ms=100))
    assert [len(p) for p in pieces] == [1600] * 10 + [500]
    np.testing.assert_array_equal(np.concatenate(pieces), samples)


async def test_paced_sleeps_until_each_piece_is_due(monkeypatch) -> None:
    slept: list[float] = []

    async def fake_sleep(delay: float) -> None:
        slept.append(round(delay, 6))

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    pieces = list(audio.chunks(audio.silence(0.3), chunk_ms=100))
    sent = [len(p) async for p in audio.paced(pieces, speed=2.0, clock=lambda: 10.0)]
    assert sent == [1600, 1600, 1600]
    # A frozen clock: piece k is due k x 0.1 s / 2 after the start.
    assert slept == [0.05, 0.1]
