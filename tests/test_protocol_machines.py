"""Property tests of the protocol's two state machines (Hypothesis, no sockets).

Random and hostile frame sequences, mixed with random intentions, never crash
either machine: the only errors are ProtocolError (the peer broke the
protocol) and InvalidState (this side asked out of order), neither changes
anything, and every run ends ENDED/CLOSED with a close code from the table.
A client machine fed a server machine's frames agrees with it on the final
transcript and on how the connection ended.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from earshot import protocol
from earshot.protocol import (
    CLOSE_CODES,
    END_OF_AUDIO,
    ClientConfig,
    ClientConnection,
    ClientState,
    CloseCode,
    Ending,
    InvalidState,
    ProtocolError,
    Segment,
    ServerConnection,
    ServerState,
    Transcript,
)
from earshot.protocol.transcript import Received

UID = "u-1"
# No example database in the checkout (the suite leaves nothing); no per-example
# deadline (a loaded CI machine is slow, and speed is not what is checked here).
PROPERTY = settings(max_examples=300, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

# -- strategies ----------------------------------------------------------------------

texts = st.text(max_size=40)
segment_lists = st.lists(
    st.builds(
        lambda start_ms, length_ms, text, completed: Segment(
            start_ms / 1000, (start_ms + length_ms) / 1000, text, completed),
        st.integers(0, 600_000), st.integers(0, 30_000), texts, st.booleans()),
    max_size=6,
)
# Any JSON a hostile peer may send: unbounded and non-finite floats, integers past
# float range, objects and lists nested in each other.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts
    | st.integers(2 ** 1024, 10 ** 400),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=10,
)
configs = st.fixed_dictionaries(
    {"uid": st.sampled_from([UID, "", 7])},
    optional={"language": st.sampled_from(["en", None, 3]),
              "task": st.sampled_from(["transcribe", "translate", "sing"]),
              "audio_format": st.sampled_from(["float32", "int16", "uint8", "mp3"]),
              "send_last_n_segments": st.integers(-2, 2000),
              "no_speech_thresh": st.floats(-1, 2)},
)
client_frames = st.one_of(
    configs.map(json.dumps),
    json_values.map(json.dumps),
    texts,
    st.binary(max_size=64),
    st.sampled_from([END_OF_AUDIO, END_OF_AUDIO.decode()]),
    st.lists(st.floats(-1, 1, width=32), max_size=16).map(
        lambda xs: np.asarray(xs, dtype="<f4").tobytes()),
    st.just(np.asarray([np.nan], dtype="<f4").tobytes()),
)
# Segments a hostile server may send: not objects, times past any stream, non-finite,
# numbers as strings, keys missing.
hostile_times = (st.floats() | st.integers(-(10 ** 400), 10 ** 400)
                 | st.sampled_from(["nan", "inf", "-inf", "1e400", "x", "0.5"]))
hostile_segments = st.one_of(
    json_values,
    st.fixed_dictionaries({"start": hostile_times, "end": hostile_times},
                          optional={"text": json_values, "completed": json_values}),
)
_NESTED = "[" * 50_000 + "]" * 50_000  # past the JSON parser's stack
server_messages = st.one_of(
    st.lists(hostile_segments, max_size=4).map(
        lambda items: json.dumps({"uid": UID, "segments": items})),
    st.just(_NESTED),
    st.just(json.dumps({"uid": UID, "segments": []}).replace("[]", "9" * 5000)),
    st.builds(lambda m: json.dumps({"uid": UID, "status": "WAIT", "message": m}),
              json_values),
    st.just(protocol.server_ready(UID, "s-1")),
    st.floats(0, 10).map(lambda m: protocol.wait(UID, m)),
    texts.map(lambda t: protocol.error(UID, t)),
    st.just(protocol.language(UID, "en", 0.9)),
    segment_lists.map(lambda items: protocol.segments(UID, items)),
    st.just(protocol.disconnect(UID)),
    st.just(protocol.end_of_transcript(UID)),
    st.just(protocol.segments("someone-else", [])),
    st.just(json.dumps({"uid": UID, "segments": [{"start": "x"}]})),
    st.just(json.dumps({"uid": UID, "something": "new"})),
    json_values.map(json.dumps),
    texts,
    st.binary(max_size=16),
)


@dataclass(frozen=True)
class Do:
    """An intention of the side under test."""

    name: str
    arg: Any = None


server_intentions = st.one_of(
    st.builds(Do, st.just("accept"), st.just("s-1")),
    st.builds(Do, st.just("segments"), segment_lists),
    st.builds(Do, st.just("language")),
    st.builds(Do, st.just("end"), st.sampled_from(list(Ending))),
)
client_intentions = st.one_of(
    st.builds(Do, st.just("config")),
    st.builds(Do, st.just("audio")),
    st.builds(Do, st.just("end_of_audio")),
    st.builds(Do, st.just("close")),
)


def _snapshot(connection: Any) -> dict[str, Any]:
    state = {k: v for k, v in vars(connection).items() if k != "transcript"}
    if isinstance(connection, ClientConnection):
        state["completed"] = connection.transcript.completed
        state["partial"] = connection.transcript.partial
    return state


# -- the server's machine -----------------------------------------------------------


def _server_do(connection: ServerConnection, step: Any) -> None:
    if not isinstance(step, Do):
        connection.receive(step)
    elif step.name == "accept":
        connection.accept(step.arg)
    elif step.name == "segments":
        connection.segments(step.arg)
    elif step.name == "language":
        connection.language("en", 0.5)
    else:
        connection.end(step.arg, "why", close_code=CloseCode.POLICY)


@PROPERTY
@given(st.lists(st.one_of(client_frames, server_intentions), max_size=25))
def test_server_machine_survives_any_sequence_and_ends_by_the_table(steps: list[Any]) -> None:
    connection = ServerConnection(max_frame_bytes=32)
    for step in steps:
        before = _snapshot(connection)
        try:
            _server_do(connection, step)
        except InvalidState:
            assert _snapshot(connection) == before, f"{step!r} failed but changed the state"
        except ProtocolError as exc:  # the client's fault: the server ends it so
            assert connection.state in (ServerState.CONFIG, ServerState.STREAMING,
                                        ServerState.FINISHING)
            outcome = connection.reject(exc)
            assert outcome is not None and outcome.ending is Ending.CLIENT_ERROR
    if not connection.ended:
        connection.end(Ending.LOST)
    outcome = connection.outcome
    assert connection.state is ServerState.ENDED and outcome is not None
    assert outcome.close_code in CLOSE_CODES[outcome.ending]
    for frame in outcome.frames:
        assert json.loads(frame)["uid"] == connection.uid
    assert connection.end(Ending.COMPLETE) is None, "the first end decides"
    assert connection.receive(b"late audio") is None


# -- the client's machine -------------------------------------------------------------


def _client_do(connection: ClientConnection, step: Any) -> None:
    if not isinstance(step, Do):
        connection.receive(step)
    elif step.name == "config":
        connection.send_config(ClientConfig(uid=UID))
    elif step.name == "audio":
        assert isinstance(connection.send_audio(np.zeros(160, np.float32)), bytes)
    elif step.name == "end_of_audio":
        assert connection.send_end_of_audio() == END_OF_AUDIO
    else:
        connection.close()


@PROPERTY
@given(st.lists(st.one_of(server_messages, client_intentions), max_size=25),
       st.sampled_from([None, 1000, 1001, 1006, 1008, 1011, 1013, 4000]))
def test_client_machine_survives_any_sequence_and_always_closes(steps: list[Any],
                                                                 code: int | None) -> None:
    connection = ClientConnection(UID, clock=lambda: 0.0)
    for step in steps:
        before = _snapshot(connection)
        try:
            _client_do(connection, step)
        except (ProtocolError, InvalidState):  # either way, nothing changed
            assert _snapshot(connection) == before, f"{step!r} failed but changed the state"
    outcome = connection.closed(code, "bye")
    assert connection.state is ClientState.CLOSED and outcome.close_code == code
    assert outcome.ending in CLOSE_CODES
    assert (outcome.ending is Ending.COMPLETE) == connection.final
    assert connection.closed(1000) is outcome, "the close is seen once"
    with pytest.raises(ProtocolError):
        connection.receive(protocol.segments(UID, []))


# -- both together ---------------------------------------------------------------------

ends = st.sampled_from([Ending.COMPLETE, Ending.SERVER_ERROR, Ending.MAX_CONNECTION_TIME,
                        Ending.SHUTDOWN, Ending.CLIENT_ERROR])


@PROPERTY
@given(st.lists(segment_lists, max_size=8), st.integers(0, 8), ends,
       st.sampled_from(list(protocol.AudioFormat)))
def test_client_fed_by_the_server_agrees_on_transcript_and_ending(
        updates: list[list[Segment]], audio_ends_after: int, ending: Ending,
        audio_format: protocol.AudioFormat) -> None:
    server, client = ServerConnection(), ClientConnection(UID, clock=lambda: 0.0)
    server.receive(client.send_config(ClientConfig(uid=UID, audio_format=audio_format)))
    client.receive(server.accept("s-1"))
    sent: list[list[Segment]] = []
    audio_ended = False
    for index, items in enumerate(updates):
        if index == audio_ends_after:
            server.receive(client.send_end_of_audio())
            audio_ended = True
        elif not audio_ended:
            event = server.receive(client.send_audio(np.linspace(-1, 1, 320, dtype=np.float32)))
            assert isinstance(event, protocol.AudioReceived) and len(event.samples) == 320
        client.receive(server.segments(items))
        sent.append(items)
    if ending is Ending.COMPLETE and not audio_ended:
        server.receive(client.send_end_of_audio())
    outcome = server.end(ending, "what went wrong")
    assert outcome is not None and outcome.close_code in CLOSE_CODES[ending]
    for frame in outcome.frames:
        client.receive(frame)
    seen = client.closed(outcome.close_code, outcome.reason)
    assert seen.ending is ending
    assert client.transcript.completed == Transcript.fold(sent).completed
    assert client.final == (ending is Ending.COMPLETE)


# -- the ordering rules, one by one -------------------------------------------------------


def _streaming_pair() -> tuple[ServerConnection, ClientConnection]:
    server, client = ServerConnection(), ClientConnection(UID, clock=lambda: 0.0)
    server.receive(client.send_config(ClientConfig(uid=UID)))
    client.receive(server.accept("s-1"))
    return server, client


def test_the_client_refuses_server_messages_out_of_order() -> None:
    client = ClientConnection(UID)
    with pytest.raises(ProtocolError, match="in state IDLE"):
        client.receive(protocol.server_ready(UID, "s"))
    client.send_config(ClientConfig(uid=UID))
    for early in (protocol.segments(UID, []), protocol.end_of_transcript(UID),
                  protocol.disconnect(UID)):
        with pytest.raises(ProtocolError, match="AWAITING_READY"):
            client.receive(early)
    client.receive(protocol.server_ready(UID, "s"))
    for wrong in (protocol.server_ready(UID, "s"), protocol.wait(UID, 1),
                  protocol.end_of_transcript(UID)):  # END_OF_TRANSCRIPT before END_OF_AUDIO
        with pytest.raises(ProtocolError, match="STREAMING"):
            client.receive(wrong)
    client.send_end_of_audio()
    client.receive(protocol.end_of_transcript(UID))
    with pytest.raises(ProtocolError, match="FINAL"):
        client.receive(protocol.segments(UID, []))
    with pytest.raises(InvalidState):
        client.send_audio(np.zeros(16, np.float32))


def test_the_server_refuses_client_frames_and_its_own_steps_out_of_order() -> None:
    server, client = _streaming_pair()
    with pytest.raises(InvalidState):
        server.accept("again")
    with pytest.raises(InvalidState, match="COMPLETE"):
        server.end(Ending.COMPLETE)  # no END_OF_AUDIO yet
    with pytest.raises(ProtocolError, match="text frame"):
        server.receive("hello")
    assert isinstance(server.receive(client.send_end_of_audio()), protocol.AudioEnded)
    with pytest.raises(ProtocolError, match="after END_OF_AUDIO"):
        server.receive(b"\0\0\0\0")
    assert server.language("en", 0.9) is not None and server.language("en", 0.9) is None
    outcome = server.end(Ending.COMPLETE)
    assert outcome is not None and outcome.close_code == CloseCode.NORMAL
    assert [json.loads(f)["message"] for f in outcome.frames] == [protocol.END_OF_TRANSCRIPT]
    with pytest.raises(InvalidState):
        server.segments([])


@pytest.mark.parametrize(("prepare", "message", "says"), [
    ([], protocol.error(UID, "x"), "ERROR in state IDLE"),
    (["config"], protocol.segments(UID, []), "a segments update in state AWAITING_READY"),
    (["config"], protocol.language(UID, "en", 1), "a language message in state AWAITING_READY"),
    (["config"], protocol.disconnect(UID), "DISCONNECT in state AWAITING_READY"),
    (["config", "ready"], protocol.server_ready(UID, "s"), "SERVER_READY in state STREAMING"),
    (["config", "ready"], protocol.wait(UID, 1), "WAIT in state STREAMING"),
    (["config", "ready"], protocol.end_of_transcript(UID),
     "END_OF_TRANSCRIPT in state STREAMING"),
])
def test_a_server_message_out_of_order_is_named_as_the_protocol_names_it(
        prepare: list[str], message: str, says: str) -> None:
    client = ClientConnection(UID)
    if "config" in prepare:
        client.send_config(ClientConfig(uid=UID))
    if "ready" in prepare:
        client.receive(protocol.server_ready(UID, "s"))
    with pytest.raises(ProtocolError) as caught:
        client.receive(message)
    assert caught.value.message == says


def test_a_rejected_client_error_ends_with_its_text_and_its_close_code() -> None:
    server, _ = _streaming_pair()
    outcome = server.reject(ProtocolError("frame too big", CloseCode.TOO_BIG))
    assert outcome is not None and outcome.ending is Ending.CLIENT_ERROR
    assert outcome.close_code == CloseCode.TOO_BIG and outcome.message == "frame too big"
    assert [json.loads(f) for f in outcome.frames] == [
        {"uid": UID, "status": "ERROR", "message": "frame too big"}]


def test_the_language_goes_out_once_while_streaming_or_finishing_and_never_before() -> None:
    early = ServerConnection()
    early.receive(ClientConnection(UID).send_config(ClientConfig(uid=UID)))
    with pytest.raises(InvalidState, match="send the language in state ADMISSION"):
        early.language("en", 0.9)
    server, client = _streaming_pair()
    server.receive(client.send_end_of_audio())
    sent = server.language("en", 0.98765)  # the first time may be after END_OF_AUDIO
    assert sent is not None and json.loads(sent)["language_prob"] == 0.9877
    assert server.language("en", 0.5) is None


def test_the_language_may_go_out_while_streaming_and_carries_the_uid_and_code() -> None:
    server, _ = _streaming_pair()
    sent = server.language("de", 0.5)
    assert sent is not None
    assert json.loads(sent) == {"uid": UID, "language": "de", "language_prob": 0.5}


@pytest.mark.parametrize(("this_side_closed", "ending"), [
    (True, Ending.CLOSED_BY_CLIENT), (False, Ending.LOST)])
def test_a_close_before_the_final_is_the_clients_own_only_when_it_began_it(
        this_side_closed: bool, ending: Ending) -> None:
    _, client = _streaming_pair()
    if this_side_closed:
        client.close()
    assert client.closed(CloseCode.NORMAL).ending is ending


def test_an_invalid_state_says_what_was_asked_in_which_state() -> None:
    with pytest.raises(InvalidState) as caught:
        ServerConnection().language("en", 0.9)
    assert caught.value.message == str(caught.value) == (
        "cannot send the language in state CONFIG")


@pytest.mark.parametrize(("text", "reason"), [
    ("é" * 100, "é" * 61),  # 200 bytes: cut at 123, on the boundary before the split é
    ("x" * 123, "x" * 123),
    ("x" * 124, "x" * 123),
], ids=["split character", "fits", "one byte over"])
def test_a_close_reason_is_cut_to_a_close_frame_on_a_character_boundary(
        text: str, reason: str) -> None:
    from earshot.protocol.ending import close_reason
    assert close_reason(text) == reason


@pytest.mark.parametrize(("config", "bytes_per_sample"), [
    ({"uid": UID, "audio_format": "int16"}, 2),
    ({"uid": UID}, 4),  # WhisperLive's default: float32
    ({"uid": UID, "audio_format": "mp3"}, 4),  # broken: the server refuses it first
], ids=["int16", "no format", "unknown format"])
def test_a_config_sent_as_a_mapping_sets_the_format_of_the_audio_frames(
        config: dict[str, str], bytes_per_sample: int) -> None:
    client = ClientConnection(UID)
    client.send_config(config)
    client.receive(json.dumps({"uid": UID, "message": "SERVER_READY", "backend": "x"}))
    frame = client.send_audio(np.zeros(160, dtype=np.float32))
    assert len(frame) == 160 * bytes_per_sample


def test_a_folded_transcript_has_no_clock_and_no_session() -> None:
    first = Segment(0.0, 1.0, "Hello", completed=True)
    partial = Segment(1.0, 2.0, "there", completed=False)
    folded = Transcript.fold([[first], [first, partial]])
    assert folded.received == [Received(first, 0.0, "")]
    assert folded.partial == Received(partial, 0.0, "") and folded.updates == 2
