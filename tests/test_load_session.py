"""run_session, one load-test session, against stand-in servers on 127.0.0.1.

Each stand-in is a websockets server in a thread of this process that speaks
the protocol through the server's own ``ServerConnection`` and follows a
script: the happy path, or one of the ways a session goes wrong (WAIT, ERROR,
a loop, an early close, silence). The clip is a quarter second of generated
audio with a made-up reference, so a session takes about 0.3 s at real time.
What is checked is what the load tools count: each step reported once, in
order, with a time taken from where that step began, and the reason it failed.
"""

from __future__ import annotations

import contextlib
import gc
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from earshot.audio import Speech
from earshot.load.session import FRAME_SECONDS, SessionOptions, run_session
from earshot.protocol import (
    SAMPLE_RATE,
    AudioEnded,
    AudioReceived,
    CloseCode,
    Ending,
    Segment,
)
from earshot.protocol import ServerConnection as ServerProtocol
from earshot.testing import wire
from earshot.testing.waiting import eventually

REFERENCE = "ask not what your country can do for you today"  # ten words
FRAME = round(FRAME_SECONDS * SAMPLE_RATE)
CLIP = Speech("stand-in.wav", np.linspace(-0.5, 0.5, SAMPLE_RATE // 4, dtype=np.float32),
              REFERENCE)
FRAMES = -(-len(CLIP.samples) // FRAME)  # 3: two whole frames and a half one


class Peer:
    """The server's side of one stand-in connection, for a script to drive."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.protocol = ServerProtocol()
        self.config: dict[str, object] = {}
        self.ready_at: float | None = None  # just before SERVER_READY left
        self.audio: list[tuple[float, np.ndarray]] = []  # (received at, samples)
        self.end_of_audio = False
        self.client_close: int | None = None  # the close code the client sent
        self.done = False  # the handler has returned

    def read_config(self) -> None:
        self.protocol.receive(self.ws.recv(timeout=5))
        assert self.protocol.config is not None
        self.config = {"uid": self.protocol.config.uid}

    def accept(self) -> None:
        self.read_config()
        self.ready_at = time.monotonic()
        self.ws.send(self.protocol.accept("stand-in-session"))

    def read_audio(self, frames: int | None = None) -> None:
        """Read ``frames`` audio frames, or (None) all of them and END_OF_AUDIO."""
        while frames is None or frames > 0:
            event = self.protocol.receive(self.ws.recv(timeout=5))
            if isinstance(event, AudioEnded):
                self.end_of_audio = True
                return
            assert isinstance(event, AudioReceived)
            self.audio.append((time.monotonic(), event.samples))
            frames = None if frames is None else frames - 1

    def say(self, *segments: Segment) -> None:
        self.ws.send(self.protocol.segments(list(segments)))

    def end(self, ending: Ending, message: str = "", wait_minutes: float = 0.0) -> None:
        """End as the server would: its last frames, then its close."""
        outcome = self.protocol.end(ending, message, wait_minutes=wait_minutes)
        assert outcome is not None and outcome.close_code is not None
        for frame in outcome.frames:
            self.ws.send(frame)
        self.ws.close(outcome.close_code, outcome.reason)

    def hold(self) -> None:
        """Say nothing more; return once the client has closed."""
        with contextlib.suppress(ConnectionClosed):
            while True:
                self.ws.recv()

    @property
    def received(self) -> np.ndarray:
        return np.concatenate([samples for _, samples in self.audio])


Script = Callable[[Peer], None]


@dataclass
class StandIn:
    """A stand-in server: every connection runs ``script``; ``status`` refuses the
    handshake with that HTTP status instead."""

    script: Script
    status: int | None = None
    peers: list[Peer] = field(default_factory=list)
    headers: list[Headers] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    server: Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}"

    @property
    def peer(self) -> Peer:
        [peer] = self.peers
        return peer

    def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        self.headers.append(request.headers)
        return None if self.status is None else ws.respond(self.status, "no\n")

    def handle(self, ws: ServerConnection) -> None:
        peer = Peer(ws)
        self.peers.append(peer)
        try:
            self.script(peer)
            peer.hold()
        except ConnectionClosed:
            pass
        except BaseException as exc:  # the test reports it: a script must not fail
            self.errors.append(exc)
        rcvd = ws.protocol.close_rcvd
        peer.client_close = rcvd.code if rcvd is not None else None
        peer.done = True

    def client_closed(self) -> int | None:
        """The close code the client ended the connection with (once it has)."""
        return eventually(lambda: self.peer, lambda peer: peer.done, timeout=10,
                          description="the stand-in's handler to end").client_close


@pytest.fixture
def stand_in() -> Iterator[Callable[..., StandIn]]:
    started: list[tuple[StandIn, threading.Thread]] = []

    def start(script: Script, status: int | None = None) -> StandIn:
        standin = StandIn(script, status)
        standin.server = serve(standin.handle, "127.0.0.1", 0, compression=None,
                               process_request=standin.process_request)
        thread = threading.Thread(target=standin.server.serve_forever, name="stand-in server")
        thread.start()
        started.append((standin, thread))
        return standin

    yield start
    for standin, thread in started:
        assert standin.server is not None
        standin.server.shutdown()
        thread.join(10)
        assert not standin.errors, standin.errors
    # serve_forever() leaves its selector (an epoll descriptor) in a reference cycle
    # (websockets 17 never closes it); collect it rather than leave it to chance
    gc.collect()


@dataclass
class Run:
    """What one run_session reported, with the test's own clock around it."""

    reports: list[tuple[str, float, str | None]]
    began: float  # just before run_session
    returned: float  # just after

    @property
    def steps(self) -> list[tuple[str, str | None]]:
        return [(step, reason) for step, _, reason in self.reports]

    def seconds(self, step: str) -> float:
        [seconds] = [s for name, s, _ in self.reports if name == step]
        return seconds


def session(url: str, options: SessionOptions | None = None, clip: Speech = CLIP) -> Run:
    reports: list[tuple[str, float, str | None]] = []
    began = time.monotonic()
    run_session(url, clip, "alice", lambda *report: reports.append(report), options)
    return Run(reports, began, time.monotonic())


def text(words: str, completed: bool = True, start: float = 0.0) -> Segment:
    return Segment(start, start + 0.25, words, completed)


def transcribe(final: str = REFERENCE, tail: Segment | None = None,
               before: Script | None = None) -> Script:
    """The happy path: a partial after the second frame, the whole text at the end;
    ``before`` runs first, right after SERVER_READY."""
    def script(peer: Peer) -> None:
        peer.accept()
        if before is not None:
            before(peer)
        peer.read_audio(2)
        peer.say(text("ask not", completed=False))
        peer.read_audio()
        peer.say(text(final), *([tail] if tail else []))
        peer.end(Ending.COMPLETE)
    return script


# -- a whole session -------------------------------------------------------------------


def test_a_whole_session_reports_each_step_once_in_order(stand_in) -> None:
    server = stand_in(transcribe())
    run = session(server.url)
    assert run.steps == [("connect", None), ("first_text", None), ("final", None)]
    peer = server.peer
    assert peer.ready_at is not None
    # each step is timed from where it begins: connect from the start, first_text
    # from the first frame (which left at least one frame after SERVER_READY),
    # final from END_OF_AUDIO (after the last frame)
    assert 0 < run.seconds("connect") <= peer.ready_at - run.began + 0.5
    assert run.seconds("connect") <= run.returned - run.began
    assert 0 < run.seconds("first_text") <= run.returned - peer.ready_at - FRAME_SECONDS
    assert 0 < run.seconds("final") <= run.returned - peer.ready_at - FRAMES * FRAME_SECONDS


def test_the_server_gets_the_whole_clip_at_real_time_then_end_of_audio(stand_in) -> None:
    server = stand_in(transcribe())
    session(server.url)
    peer = server.peer
    assert [len(samples) for _, samples in peer.audio] == [FRAME, FRAME, len(CLIP.samples) % FRAME]
    np.testing.assert_array_equal(peer.received, CLIP.samples)
    assert peer.end_of_audio
    # a microphone's pace: frame k leaves once its 100 ms are captured, not before
    assert peer.ready_at is not None
    for k, (at, _) in enumerate(peer.audio):
        assert at - peer.ready_at >= (k + 1) * FRAME_SECONDS
    assert server.client_closed() == CloseCode.NORMAL  # and the session closed its connection


def test_the_session_is_named_as_this_process_s_own(stand_in) -> None:
    server = stand_in(transcribe())
    session(server.url)
    assert server.peer.config["uid"] == wire.uid("alice")
    assert wire.is_own(str(server.peer.config["uid"]))


def test_the_options_headers_go_with_the_handshake(stand_in) -> None:
    server = stand_in(transcribe())
    run = session(server.url, SessionOptions(headers={"Authorization": "Bearer k"}))
    assert run.steps[-1] == ("final", None)
    assert server.headers[0].get("Authorization") == "Bearer k"


def test_a_reply_over_a_mebibyte_is_read(stand_in) -> None:
    def big(peer: Peer) -> None:  # a kind of message this client does not know: passed over
        peer.ws.send(json.dumps({"uid": peer.protocol.uid, "detail": "x" * 1_100_000}))

    server = stand_in(transcribe(before=big))  # over websockets' 1 MiB default frame limit
    assert session(server.url).steps[-1] == ("final", None)


# -- the transcript's score ------------------------------------------------------------


@pytest.mark.parametrize(("final", "options", "failure"), [
    ("ask not what your country can do for you tomorrow", SessionOptions(max_wer=0.10), None),
    ("ask not what your country can do for me tomorrow", SessionOptions(max_wer=0.10),
     "WER 0.200 over 0.100: 'ask not what your country can do for me tomorrow'"),
    ("ask not what your country can do for me tomorrow",
     SessionOptions(max_wer=0.0, wer_bounds={CLIP.name: 0.2}), None),
    ("ask not what your country can do for you tomorrow",
     SessionOptions(max_wer=0.5, wer_bounds={CLIP.name: 0.05}),
     "WER 0.100 over 0.050: 'ask not what your country can do for you tomorrow'"),
], ids=["at the bound", "over the bound", "the clip's own bound", "under max_wer, over its own"])
def test_the_final_transcript_is_held_to_the_clip_s_wer_bound(
        stand_in, final: str, options: SessionOptions, failure: str | None) -> None:
    server = stand_in(transcribe(final))
    run = session(server.url, options)
    assert run.steps == [("connect", None), ("first_text", None), ("final", failure)]


def test_an_unfinished_segment_after_end_of_transcript_is_not_scored(stand_in) -> None:
    tail = text("and some words the server never finished", completed=False, start=1.0)
    server = stand_in(transcribe(tail=tail))
    assert session(server.url).steps[-1] == ("final", None)


# -- a server without END_OF_TRANSCRIPT ------------------------------------------------


def close_after_the_audio(code: int, reason: str = "") -> Script:
    def script(peer: Peer) -> None:
        peer.accept()
        peer.read_audio(1)
        peer.say(text("ask not", completed=False))
        peer.read_audio()
        peer.say(text(REFERENCE, completed=False))  # never marked completed
        peer.ws.close(code, reason)
    return script


def test_where_the_server_ends_by_closing_its_normal_close_is_the_end(stand_in) -> None:
    server = stand_in(close_after_the_audio(CloseCode.NORMAL))
    run = session(server.url, SessionOptions(end_by_close=True))
    assert run.steps == [("connect", None), ("first_text", None), ("final", None)]
    peer = server.peer
    assert peer.ready_at is not None
    assert 0 < run.seconds("final") <= run.returned - peer.ready_at - FRAMES * FRAME_SECONDS


def test_where_the_server_ends_by_closing_another_close_fails_the_final_step(
        stand_in) -> None:
    server = stand_in(close_after_the_audio(CloseCode.INTERNAL, "boom"))
    run = session(server.url, SessionOptions(end_by_close=True))
    assert run.steps[-1] == (
        "final", "the server closed before END_OF_TRANSCRIPT (code 1011, reason 'boom')")


def test_a_close_instead_of_end_of_transcript_fails_the_final_step(stand_in) -> None:
    server = stand_in(close_after_the_audio(CloseCode.NORMAL))
    run = session(server.url)  # this server has END_OF_TRANSCRIPT: a close is not the end
    assert run.steps == [
        ("connect", None), ("first_text", None),
        ("final", "the server closed before END_OF_TRANSCRIPT (code 1000, reason '')")]
    peer = server.peer
    assert peer.ready_at is not None  # timed from END_OF_AUDIO, not from the start
    assert 0 < run.seconds("final") <= run.returned - peer.ready_at - FRAMES * FRAME_SECONDS


# -- what goes wrong on the way --------------------------------------------------------


@pytest.mark.parametrize("final_timeout", [0.3, 0.0])
def test_no_end_of_transcript_within_the_final_timeout_fails_the_final_step(
        stand_in, final_timeout: float) -> None:
    def script(peer: Peer) -> None:
        peer.accept()
        peer.read_audio(1)
        peer.say(text("ask not what", completed=False))
        peer.read_audio()  # and then nothing

    server = stand_in(script)
    run = session(server.url, SessionOptions(final_timeout=final_timeout))
    assert run.steps == [
        ("connect", None), ("first_text", None),
        ("final", f"timeout: no END_OF_TRANSCRIPT within {final_timeout:g} s of "
                  "END_OF_AUDIO; last text 'ask not what'")]
    assert final_timeout <= run.seconds("final") < final_timeout + 5
    assert server.client_closed() is not None  # the session closed it, on this path too


def refuse_mid_stream(ending: Ending, message: str, after_text: bool) -> Script:
    def script(peer: Peer) -> None:
        peer.accept()
        peer.read_audio(1)
        if after_text:
            peer.say(text("ask not", completed=False))
            peer.read_audio(1)
        peer.end(ending, message)
    return script


@pytest.mark.parametrize(("after_text", "step"), [(False, "first_text"), (True, "final")])
def test_an_error_mid_stream_fails_the_step_under_way(
        stand_in, after_text: bool, step: str) -> None:
    server = stand_in(refuse_mid_stream(Ending.SERVER_ERROR, "the model crashed", after_text))
    run = session(server.url)
    assert run.steps[-1] == (step, "server sent ERROR: 'the model crashed'")
    assert len(run.steps) == (3 if after_text else 2)
    ready_at = server.peer.ready_at
    assert ready_at is not None
    if not after_text:  # timed from the first audio frame, not the start
        assert 0 < run.seconds(step) <= run.returned - ready_at - FRAME_SECONDS
    else:  # "final" had not begun (no END_OF_AUDIO yet): timed from the session's start
        assert ready_at - run.began + 2 * FRAME_SECONDS <= run.seconds(step)
        assert run.seconds(step) <= run.returned - run.began


def test_a_disconnect_mid_stream_fails_the_step_under_way(stand_in) -> None:
    server = stand_in(refuse_mid_stream(Ending.SHUTDOWN, "", after_text=True))
    run = session(server.url)
    assert run.steps[-1] == ("final", "server sent DISCONNECT: 'DISCONNECT'")


def test_a_close_while_audio_is_sent_fails_the_step_under_way(stand_in) -> None:
    def script(peer: Peer) -> None:
        peer.accept()
        peer.read_audio(1)
        peer.ws.close(CloseCode.GOING_AWAY, "bye")

    server = stand_in(script)
    run = session(server.url)
    assert run.steps == [("connect", None), ("first_text", "the server closed while audio "
                                                           "was sent (code 1001, reason 'bye')")]


def test_a_snapshot_that_repeats_itself_fails_the_step_under_way(stand_in) -> None:
    def script(peer: Peer) -> None:
        peer.accept()
        peer.read_audio(1)
        # the run of five words repeats across the two segments' boundary
        peer.say(text("ask not what"), text("your country ask not what your country", False))

    server = stand_in(script)
    run = session(server.url)
    assert run.steps == [
        ("connect", None),
        ("first_text", "a snapshot repeated itself ('ask not what your country'): "
                       "'ask not what your country ask not what your country'")]


def test_a_final_transcript_with_no_text_before_it_fails_first_text(stand_in) -> None:
    def script(peer: Peer) -> None:
        peer.accept()
        peer.read_audio(1)
        peer.say(text("  ", completed=False))  # a snapshot, but no words in it
        peer.read_audio()
        peer.say(text(""))
        peer.end(Ending.COMPLETE)

    server = stand_in(script)
    run = session(server.url)
    assert run.steps == [("connect", None),
                         ("first_text", "no text arrived before the final transcript")]


def test_a_message_the_protocol_refuses_fails_the_step_under_way(stand_in) -> None:
    def script(peer: Peer) -> None:
        peer.accept()
        peer.read_audio(1)
        peer.say(text("ask not", completed=False))
        peer.ws.send('{"uid": "someone-else", "segments": []}')

    server = stand_in(script)
    run = session(server.url)
    assert run.steps[-1] == ("final", "ProtocolError: message for another uid ('someone-else')")


# -- the connect step ------------------------------------------------------------------


@pytest.mark.parametrize(("ending", "message", "failure"), [
    (Ending.FULL, "", "server answered WAIT 1.5, not SERVER_READY"),
    (Ending.CLIENT_ERROR, "no such model", "server answered ERROR 'no such model', "
                                           "not SERVER_READY"),
])
def test_a_refused_config_fails_connect(stand_in, ending: Ending, message: str,
                                        failure: str) -> None:
    def script(peer: Peer) -> None:
        peer.read_config()
        peer.end(ending, message, wait_minutes=1.5)

    server = stand_in(script)
    run = session(server.url)
    assert run.steps == [("connect", failure)]
    assert 0 < run.seconds("connect") <= run.returned - run.began


def test_a_refused_handshake_fails_connect_with_its_http_status(stand_in) -> None:
    server = stand_in(transcribe(), status=503)
    run = session(server.url)
    assert run.steps == [("connect", "handshake refused: HTTP 503")]
    assert 0 < run.seconds("connect") <= run.returned - run.began


def test_a_reply_that_is_not_a_message_fails_connect(stand_in) -> None:
    def script(peer: Peer) -> None:
        peer.read_config()
        peer.ws.send(b"\x00\x01\x02")

    server = stand_in(script)
    run = session(server.url)
    assert run.steps == [("connect", "ProtocolError: server sent a binary frame (3 bytes)")]


def test_a_server_that_never_says_ready_fails_connect_at_its_timeout(stand_in) -> None:
    server = stand_in(Peer.read_config)
    run = session(server.url, SessionOptions(connect_timeout=0.2))
    [(step, reason)] = run.steps
    assert step == "connect" and reason is not None and reason.startswith("TimeoutError")
    assert 0.2 <= run.seconds("connect") < 5


def test_a_handshake_that_never_ends_fails_connect_at_its_timeout() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:  # accepts TCP, says nothing
        port = listener.getsockname()[1]
        run = session(f"ws://127.0.0.1:{port}", SessionOptions(connect_timeout=0.2))
    [(step, reason)] = run.steps
    assert step == "connect" and reason is not None and reason.startswith("TimeoutError")
    assert 0.2 <= run.seconds("connect") < 5


def test_nothing_listening_fails_connect() -> None:
    with socket.create_server(("127.0.0.1", 0)) as unused:
        port = unused.getsockname()[1]
    run = session(f"ws://127.0.0.1:{port}")
    [(step, reason)] = run.steps
    assert step == "connect" and reason is not None
    assert reason.startswith("ConnectionRefusedError: ")
