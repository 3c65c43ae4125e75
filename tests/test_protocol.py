"""The sans-I/O protocol: config validation, audio frames, server messages."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from earshot import protocol
from earshot.protocol import AudioFormat, ClientConfig, CloseCode, ProtocolError, Segment, frames


def test_minimal_config_gets_whisperlive_defaults() -> None:
    config = protocol.parse_config(json.dumps({"uid": "a"}))
    assert config == ClientConfig(uid="a")
    assert config.audio_format is AudioFormat.FLOAT32


def test_full_config_and_unknown_keys() -> None:
    frame = json.dumps({
        "uid": "u", "language": None, "task": "translate", "model": "small", "use_vad": False,
        "send_last_n_segments": 3, "no_speech_thresh": 0.3, "clip_audio": True,
        "same_output_threshold": 4, "initial_prompt": "hello", "audio_format": "int16",
        "enable_translation": False, "some_future_key": [1, 2],
    })
    config = protocol.parse_config(frame)
    assert (config.task, config.language, config.use_vad) == ("translate", None, False)
    assert (config.send_last_n_segments, config.same_output_threshold) == (3, 4)
    assert config.audio_format is AudioFormat.INT16


def test_config_round_trips_through_json() -> None:
    config = ClientConfig(uid="x", audio_format=AudioFormat.UINT8, language=None)
    assert protocol.parse_config(config.to_json()) == config


@pytest.mark.parametrize(
    ("frame", "words", "code"),
    [
        ("not json {", "not valid JSON", CloseCode.POLICY),
        ("[" * 20_000 + "]" * 20_000, "nested too deeply", CloseCode.POLICY),
        ("[1, 2]", "must be a JSON object", CloseCode.POLICY),
        ('"text"', "must be a JSON object", CloseCode.POLICY),
        ('{"language": "en"}', "'uid'", CloseCode.POLICY),
        ('{"uid": ""}', "'uid'", CloseCode.POLICY),
        ('{"uid": 7}', "'uid'", CloseCode.POLICY),
        ('{"uid": "a", "use_vad": "yes"}', "'use_vad' must be a boolean", CloseCode.POLICY),
        ('{"uid": "a", "send_last_n_segments": true}', "must be an integer", CloseCode.POLICY),
        ('{"uid": "a", "no_speech_thresh": "low"}', "must be a number", CloseCode.POLICY),
        ('{"uid": "a", "task": "summarise"}', "unknown task 'summarise'", CloseCode.POLICY),
        ('{"uid": "a", "audio_format": "mp3"}', "unknown audio_format 'mp3'", CloseCode.POLICY),
        ('{"uid": "a", "send_last_n_segments": 0}', "between 1 and 1000", CloseCode.POLICY),
        ('{"uid": "a", "no_speech_thresh": 2}', "between 0 and 1", CloseCode.POLICY),
        ('{"uid": "a", "pad": "' + "x" * 70_000 + '"}', "over the 65536-byte", CloseCode.TOO_BIG),
        (b"\x00\x00\x80\x3f", "got binary data", CloseCode.POLICY),
        # Python's integer-digits limit raises a plain ValueError inside the parser
        ('{"uid": "a", "send_last_n_segments": ' + "9" * 5000 + "}", "too long",
         CloseCode.POLICY),
    ],
)
def test_bad_configs_are_named(frame: str | bytes, words: str, code: CloseCode) -> None:
    with pytest.raises(ProtocolError) as caught:
        protocol.parse_config(frame)
    assert words in caught.value.message
    assert caught.value.close_code == code


@pytest.mark.parametrize("fmt", list(AudioFormat))
def test_audio_round_trip(fmt: AudioFormat) -> None:
    samples = np.linspace(-0.9, 0.9, 101, dtype=np.float32)
    decoded = protocol.decode_audio(protocol.encode_audio(samples, fmt), fmt)
    tolerance = {"float32": 0, "int16": 1e-4, "uint8": 1e-2}[fmt.value]
    assert decoded.dtype == np.float32
    np.testing.assert_allclose(decoded, samples, atol=tolerance)


def test_int16_matches_whisperlive_scaling() -> None:
    frame = np.array([-32768, 0, 16384], dtype="<i2").tobytes()
    assert protocol.decode_audio(frame, AudioFormat.INT16).tolist() == [-1.0, 0.0, 0.5]


@pytest.mark.parametrize("fmt", [AudioFormat.FLOAT32, AudioFormat.INT16])
def test_partial_samples_are_refused(fmt: AudioFormat) -> None:
    with pytest.raises(ProtocolError, match="not a whole number"):
        protocol.decode_audio(b"\x00" * (fmt.sample_size * 3 + 1), fmt)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused(bad: float) -> None:
    frame = np.array([0.1, bad, 0.2], dtype="<f4").tobytes()
    with pytest.raises(ProtocolError, match="1 NaN or infinite"):
        protocol.decode_audio(frame)


@pytest.mark.parametrize("peak", [2.5, 1000.0, 32767.0])
def test_float32_far_outside_full_scale_is_refused_with_the_likely_cause(peak: float) -> None:
    """int16 values sent as float32 (the classic mistake) get an ERROR naming the fix."""
    frame = np.array([0.0, -peak / 2, peak], dtype="<f4").tobytes()
    with pytest.raises(ProtocolError) as caught:
        protocol.decode_audio(frame)
    assert caught.value.close_code == CloseCode.POLICY
    assert f"{peak:g}" in caught.value.message
    assert '"audio_format": "int16"' in caught.value.message


def test_float32_a_little_over_full_scale_is_audio() -> None:
    """Resampling overshoots full scale a little; that is still audio, taken as it is."""
    samples = np.array([1.0, -1.9, 1.99], dtype=np.float32)
    assert protocol.decode_audio(samples.astype("<f4").tobytes()).tolist() == samples.tolist()


def test_segment_wire_format_has_three_decimal_strings() -> None:
    wire = Segment(1.23456, 2.0, "hi", True).to_wire()
    assert wire == {"start": "1.235", "end": "2.000", "text": "hi", "completed": True}
    assert Segment.from_wire(wire) == Segment(1.235, 2.0, "hi", True)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (protocol.server_ready("u", "s1"), "ready"),
        (protocol.wait("u", 1.5), "wait"),
        (protocol.error("u", "bad"), "error"),
        (protocol.language("u", "en", 0.9), "language"),
        (protocol.segments("u", [Segment(0, 1, "a")]), "segments"),
        (protocol.disconnect("u"), "disconnect"),
        (protocol.end_of_transcript("u"), "end"),
        ('{"uid": "u", "novel": 1}', "unknown"),
    ],
)
def test_every_server_message_carries_uid_and_is_classified(text: str, kind: str) -> None:
    message = protocol.parse_server_message(text)
    assert message.kind == kind
    assert message.data["uid"] == "u"


@pytest.mark.parametrize("text", ["nope", "[]", b"\x00", '{"uid": "u", "segments": 5}',
                                  "[" * 20_000 + "]" * 20_000,
                                  '{"uid": "u", "x": ' + "9" * 5000 + "}"])
def test_malformed_server_messages_raise(text: str | bytes) -> None:
    with pytest.raises(ProtocolError):
        protocol.parse_server_message(text)


HOSTILE_SEGMENTS = {
    "not an object": 5,
    "a list": [1, 2],
    "a huge start": {"start": 1e306, "end": 1e306, "text": "x", "completed": True},
    "an infinite end": {"start": 0, "end": "inf", "text": "x"},
    "a NaN start": {"start": "nan", "end": 1, "text": "x"},
    "a huge integer start": {"start": 10 ** 400, "end": 1, "text": "x"},
    "no text": {"start": 0, "end": 1},
}


@pytest.mark.parametrize("case", list(HOSTILE_SEGMENTS))
def test_a_hostile_segment_is_a_protocol_error(case: str) -> None:
    """Every malformed segment is a ProtocolError naming it, never another exception."""
    message = protocol.parse_server_message(
        json.dumps({"uid": "u", "segments": [HOSTILE_SEGMENTS[case]]}))
    with pytest.raises(ProtocolError, match="segment"):
        _ = message.segments


def test_each_server_message_is_the_json_whisperlive_clients_read() -> None:
    """The exact shapes: every message carries the uid; numbers rounded as sent."""
    assert json.loads(protocol.server_ready("u", "s1")) == {
        "uid": "u", "message": "SERVER_READY", "backend": "faster_whisper", "session_id": "s1"}
    assert json.loads(protocol.wait("u", 1.23456)) == {"uid": "u", "status": "WAIT",
                                                       "message": 1.23}
    assert json.loads(protocol.error("u", "bad audio")) == {"uid": "u", "status": "ERROR",
                                                            "message": "bad audio"}
    assert json.loads(protocol.language("u", "en", 0.987654)) == {
        "uid": "u", "language": "en", "language_prob": 0.9877}
    assert json.loads(protocol.disconnect("u")) == {"uid": "u", "message": "DISCONNECT"}
    assert json.loads(protocol.end_of_transcript("u")) == {"uid": "u",
                                                           "message": "END_OF_TRANSCRIPT"}
    assert json.loads(protocol.segments("u", [Segment(0, 1.5, "hi", True)])) == {
        "uid": "u", "segments": [{"start": "0.000", "end": "1.500", "text": "hi",
                                  "completed": True}]}


@pytest.mark.parametrize(("frame", "uid"), [
    ('{"uid": "abc", "use_vad": "yes"}', "abc"),
    (b'{"uid": "abc"}', "abc"),
    ('{"uid": "' + "x" * 300 + '"}', "x" * protocol.MAX_UID_CHARS),
    ('{"uid": 5}', None),
    ("[1, 2]", None),
    ("not json", None),
    ("[" * 20_000 + "]" * 20_000, None),
    ('{"uid": "a", "n": ' + "9" * 5000 + "}", None),
])
def test_a_rejected_configs_uid_is_echoed_when_it_has_one(frame: str | bytes,
                                                          uid: str | None) -> None:
    assert frames.uid_of(frame) == uid


def test_a_hostile_segment_is_named_in_a_short_excerpt() -> None:
    with pytest.raises(ProtocolError) as caught:
        Segment.from_wire("x" * 500)
    text = caught.value.message
    assert text.startswith("malformed segment 'xxx") and "...: not a JSON object" in text
    assert len(text.split(":")[0]) == len("malformed segment ") + 80
    with pytest.raises(ProtocolError, match=r"malformed segment \[\[\[1\]\]\]: not a JSON"):
        Segment.from_wire([[[1]]])


@pytest.mark.parametrize(("value", "shown"), [
    ("x" * 78, repr("x" * 78)),  # 80 characters: shown whole
    ("x" * 79, repr("x" * 79)[:77] + "..."),  # 81: cut to 80 with its ellipsis
])
def test_an_excerpt_keeps_80_characters_whole_and_cuts_longer(value: str, shown: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        Segment.from_wire(value)
    assert caught.value.message == f"malformed segment {shown}: not a JSON object"


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(("value", "shown"), [
    (10 ** 5000, "<a int>"),  # its repr passes Python's integer-digits limit
    (_nested(100_000), "<a list>"),  # its repr passes the recursion limit
], ids=["huge int", "deep list"])
def test_a_value_without_a_repr_is_named_by_its_type(value: Any, shown: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        Segment.from_wire(value)
    assert caught.value.message == f"malformed segment {shown}: not a JSON object"
