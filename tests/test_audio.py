"""Clips from the manifest: mirror, cache, checksums; decoding, chunking, pacing."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
from answering import Answering  # pytest puts tests/ on the path

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
def clip_source(monkeypatch) -> Iterator[Callable[[bytes, int | None], list[str]]]:
    """``clip_source(body, length)``: a stand-in for the clips' public source (tests
    reach only 127.0.0.1), an HTTP server that answers one request with ``body``
    under a Content-Length of ``length`` (None: the body's), then closes. Returns the
    request lines it received."""
    requests: list[str] = []

    with Answering("clip-source-stand-in") as server:
        def serve(body: bytes, length: int | None) -> list[str]:
            def reply(conn: socket.socket) -> None:
                requests.append(conn.recv(4096).split(b"\r\n")[0].decode())
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n"
                             % (len(body) if length is None else length) + body)

            server.answer(reply)
            return requests

        monkeypatch.setattr(audio.Clip, "source_url", property(
            lambda clip: f"http://127.0.0.1:{server.port}/{clip.name}"))
        yield serve


@pytest.fixture
def cut_short_source(clip_source) -> None:
    """A source that promises 100,000 bytes and hangs up after 5,000."""
    clip_source(b"x" * 5000, 100_000)


def test_an_interrupted_download_is_a_clip_error_and_leaves_nothing(tmp_path,
                                                                     cut_short_source) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(audio.ClipError, match="downloading it failed"):
        audio.clip_path("jfk.flac", mirror=tmp_path / "no-mirror", cache=cache)
    assert list(cache.iterdir()) == []  # neither the clip nor a temp file


def test_a_download_is_verified_then_kept_in_the_cache(tmp_path, clip_source) -> None:
    real = audio.clip_path("jfk.flac").read_bytes()
    requests = clip_source(real, None)
    cache = tmp_path / "cache"
    got = audio.clip_path("jfk.flac", mirror=tmp_path / "no-mirror", cache=cache)
    assert got == cache / "jfk.flac" and got.read_bytes() == real
    assert requests == ["GET /jfk.flac HTTP/1.1"]
    # Asked again, the clip comes from the cache: the source is not asked twice.
    assert audio.clip_path("jfk.flac", mirror=tmp_path / "no-mirror", cache=cache) == got
    assert requests == ["GET /jfk.flac HTTP/1.1"] and sorted(cache.iterdir()) == [got]


def test_a_download_with_the_wrong_checksum_is_refused_and_leaves_nothing(
        tmp_path, clip_source) -> None:
    clip_source(b"other speech" * 100, None)
    cache = tmp_path / "cache"
    with pytest.raises(audio.ClipError, match=r"the download of http://127\.0\.0\.1:\d+/jfk"
                                              r"\.flac has sha256 [0-9a-f]{64}, the manifest "
                                              r"expects"):
        audio.clip_path("jfk.flac", mirror=tmp_path / "no-mirror", cache=cache)
    assert list(cache.iterdir()) == []


def test_the_mirror_variable_names_the_mirror(tmp_path, monkeypatch) -> None:
    shutil.copy(audio.clip_path("jfk.flac"), tmp_path / "jfk.flac")
    monkeypatch.setenv("EARSHOT_AUDIO_MIRROR", str(tmp_path))
    assert audio.default_mirror() == tmp_path
    assert audio.clip_path("jfk.flac", cache=tmp_path / "unused") == tmp_path / "jfk.flac"


@pytest.mark.parametrize(("checkout", "shared", "expected"), [
    (True, True, "shared/audio"), (True, False, None), (False, True, None)])
def test_without_the_variable_a_checkout_takes_shared_audio_beside_it(
        tmp_path, monkeypatch, checkout, shared, expected) -> None:
    monkeypatch.delenv("EARSHOT_AUDIO_MIRROR", raising=False)
    monkeypatch.setattr(audio, "REPO_ROOT", tmp_path / "earshot")
    monkeypatch.setattr(audio, "IN_CHECKOUT", checkout)
    if shared:
        (tmp_path / "shared" / "audio").mkdir(parents=True)
    assert audio.default_mirror() == (tmp_path / expected if expected else None)


def test_the_cache_is_beside_a_checkout_or_in_the_users_cache(tmp_path) -> None:
    root = tmp_path / "earshot"
    assert audio.default_cache(root, True, {}) == root / "audio"
    home = Path.home()
    assert audio.default_cache(root, False, {}) == home / ".cache" / "earshot" / "audio"
    xdg = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert audio.default_cache(root, False, xdg) == tmp_path / "xdg" / "earshot" / "audio"
    # This checkout's own: audio/ at its root, beside the manifest.
    assert audio.IN_CHECKOUT and audio.DEFAULT_CACHE == audio.REPO_ROOT / "audio"
    assert (audio.DEFAULT_CACHE / "manifest.tsv").resolve() == audio.MANIFEST.resolve()


def test_speech_knows_its_length_in_seconds(manifest) -> None:
    speech = audio.load_speech("jfk.flac")
    assert speech.seconds == len(speech.samples) / SAMPLE_RATE == pytest.approx(11.0, abs=0.01)
    assert speech.reference == manifest["jfk.flac"].reference


def test_speech_clip_decodes_each_clip_once_per_session(speech_clip, monkeypatch) -> None:
    decoded: list[str] = []

    def load_speech(name: str) -> audio.Speech:
        decoded.append(name)
        return audio.Speech(name, np.zeros(SAMPLE_RATE, dtype=np.float32), "")

    monkeypatch.setattr(audio, "load_speech", load_speech)
    name = "decoded-once-test.wav"  # a name no other test asks for
    first = speech_clip(name)
    assert speech_clip(name) is first and decoded == [name]


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
