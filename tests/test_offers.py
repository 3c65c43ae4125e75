"""The extension probe against stand-in servers on 127.0.0.1, one per way a
server may answer: what it finds offered, what it says it saw, and the one-line
TargetError for a server that cannot be tested at all.

The stand-ins are real WebSocket (and plain TCP) servers in this process; the
probe runs on a thread, as it blocks.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from earshot import protocol
from earshot.testing import offers
from earshot.testing.offers import EXTENSIONS, Offers, TargetError, probe

OnConfig = Callable[[ServerConnection, str], Awaitable[None]]
OnBadConfig = Callable[[ServerConnection], Awaitable[None]]
STATUS_JSON = json.dumps({"sessions": []})
METRICS = "# HELP up 1 if up\n# TYPE up gauge\nup 1\n"
EARSHOT_HTTP = {"/readyz": (200, "ready"), "/status": (200, STATUS_JSON),
                "/metrics": (200, METRICS)}


# -- the stand-ins' parts -----------------------------------------------------------


async def until_end_of_audio(ws: ServerConnection) -> None:
    async for frame in ws:
        if frame == protocol.END_OF_AUDIO:
            return


async def like_earshot(ws: ServerConnection, uid: str) -> None:
    """SERVER_READY with a session id; after END_OF_AUDIO the last segment,
    END_OF_TRANSCRIPT and a close with 1000."""
    await ws.send(protocol.server_ready(uid, "sid-1"))
    await until_end_of_audio(ws)
    await ws.send(protocol.segments(uid, [protocol.Segment(0.0, 0.5, " hm", True)]))
    await ws.send(protocol.end_of_transcript(uid))
    await ws.close(1000)


async def refuse_like_earshot(ws: ServerConnection) -> None:
    await ws.send(json.dumps({"status": "ERROR", "message": "the config is not JSON"}))
    await ws.close(1008)


def ready_then(*after_end: str | bytes, close: int | None = 1000,
               session_id: bool = True) -> OnConfig:
    """SERVER_READY (with or without a session id); after END_OF_AUDIO the frames
    ``after_end``, then a close with ``close`` (None: stays open, quiet)."""

    async def reply(ws: ServerConnection, uid: str) -> None:
        if session_id:
            await ws.send(protocol.server_ready(uid, "sid-1"))
        else:
            await ws.send(json.dumps({"uid": uid, "message": protocol.SERVER_READY,
                                      "backend": protocol.BACKEND}))
        await until_end_of_audio(ws)
        for frame in after_end:
            await ws.send(frame(uid) if callable(frame) else frame)
        if close is None:
            await ws.wait_closed()
        else:
            await ws.close(close)

    return reply


def answer(frame: Callable[[str], str] | str) -> OnConfig:
    """Answer the config with one frame, then wait for the client to close."""

    async def reply(ws: ServerConnection, uid: str) -> None:
        await ws.send(frame(uid) if callable(frame) else frame)
        await ws.wait_closed()

    return reply


def close_with(code: int) -> OnConfig:
    async def reply(ws: ServerConnection, uid: str) -> None:
        await ws.close(code)

    return reply


async def abort(ws: ServerConnection, uid: str) -> None:
    """Drop the TCP connection: no close frame."""
    ws.transport.abort()


async def say_nothing(ws: ServerConnection, uid: str) -> None:
    await ws.wait_closed()


@dataclass
class StandIn:
    """A WhisperLive-protocol server whose answers a test chooses."""

    on_config: OnConfig = like_earshot
    on_bad_config: OnBadConfig = refuse_like_earshot
    http: dict[str, tuple[int, str]] = field(default_factory=lambda: dict(EARSHOT_HTTP))
    upgrade: int | None = None  # answer the upgrade request with this HTTP status
    headers: list[Headers] = field(default_factory=list)  # of every request it got
    port: int = 0
    # Seconds to take before answering a GET of a path, or the n-th upgrade request
    delays: dict[str, float] = field(default_factory=dict)
    upgrade_delays: list[float] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def process_request(self, connection: ServerConnection,
                              request: Request) -> Response | None:
        self.headers.append(request.headers)
        if request.path in self.http:
            await asyncio.sleep(self.delays.get(request.path, 0.0))  # pacing: a slow answer
            status, body = self.http[request.path]
            return connection.respond(status, body)
        if self.upgrade_delays:
            await asyncio.sleep(self.upgrade_delays.pop(0))  # pacing: a slow handshake
        if self.upgrade is not None:
            return connection.respond(self.upgrade, "no\n")
        return None

    async def handle(self, ws: ServerConnection) -> None:
        frame = await ws.recv()
        try:
            config = json.loads(frame)
        except ValueError:
            await self.on_bad_config(ws)
            return
        await self.on_config(ws, config["uid"])


@asynccontextmanager
async def serving(standin: StandIn) -> AsyncIterator[StandIn]:
    async with serve(standin.handle, "127.0.0.1", 0,
                     process_request=standin.process_request) as server:
        standin.port = server.sockets[0].getsockname()[1]
        yield standin


async def probed(standin: StandIn, headers: dict[str, str] | None = None,
                 timeout: float = 10.0) -> Offers:
    async with serving(standin):
        return await asyncio.to_thread(probe, standin.ws_url, standin.http_url, headers,
                                       timeout)


async def refused(standin: StandIn, headers: dict[str, str] | None = None) -> str:
    """The one line of the TargetError the probe raises."""
    with pytest.raises(TargetError) as caught:
        await probed(standin, headers)
    text = str(caught.value)
    assert "\n" not in text
    return text


@asynccontextmanager
async def raw_tcp(reply: bytes | None, *, close: bool = True,
                  scheme: str = "ws") -> AsyncIterator[str]:
    """A TCP server that answers every request with ``reply`` and closes (None:
    it reads and never answers; ``close=False``: it sends ``reply`` and then holds
    the connection open until the client hangs up)."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        if reply is not None:
            writer.write(reply)
            await writer.drain()
            if close:
                writer.close()
                return
        await reader.read()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"{scheme}://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short quiet and first-reply limits, so a silent stand-in costs a fraction of a
    second (the shipped ones wait for servers that load a model first)."""
    monkeypatch.setattr(offers, "QUIET_SECONDS", 0.3)
    monkeypatch.setattr(offers, "FIRST_REPLY_SECONDS", 0.3)


# -- what is offered ----------------------------------------------------------------


async def test_a_server_like_earshot_offers_every_extension() -> None:
    found = await probed(StandIn())
    assert found.offered == frozenset(EXTENSIONS), found.seen
    assert found.seen["session_id"] == "SERVER_READY carries session_id"
    assert found.seen["end_of_transcript"] == "END_OF_TRANSCRIPT, then close 1000"
    assert found.seen["close_codes"] == "a config that is not JSON: close 1008"
    for name, path in (("readyz", "/readyz"), ("status", "/status"), ("metrics", "/metrics")):
        assert found.seen[name].startswith(f"GET {path}: 200 in ")
        assert found.seen[name].endswith(" ms")


async def test_the_headers_go_with_every_request() -> None:
    standin = StandIn()
    await probed(standin, {"Authorization": "Bearer k"})
    assert len(standin.headers) == 5  # two sessions, three GETs
    assert all(h.get("Authorization") == "Bearer k" for h in standin.headers)


async def test_the_session_streams_silence_before_end_of_audio() -> None:
    received: list[bytes] = []

    async def record(ws: ServerConnection, uid: str) -> None:
        await ws.send(protocol.server_ready(uid, "sid-1"))
        async for frame in ws:
            if frame == protocol.END_OF_AUDIO:
                break
            received.append(frame)
        await ws.send(protocol.end_of_transcript(uid))
        await ws.close(1000)

    found = await probed(StandIn(on_config=record))
    assert "end_of_transcript" in found.offered
    samples = np.frombuffer(b"".join(received), dtype="<f4")
    assert received and samples.size and not np.any(samples)  # float32 zeros: silence


async def test_a_message_of_any_size_is_taken() -> None:
    huge = [protocol.Segment(float(i), i + 1.0, " word" * 200, True) for i in range(1500)]
    found = await probed(StandIn(on_config=ready_then(
        lambda uid: protocol.segments(uid, huge), protocol.end_of_transcript)))
    assert "end_of_transcript" in found.offered, found.seen  # over 1 MiB: still a message


async def test_server_ready_without_a_session_id_is_said_so() -> None:
    found = await probed(StandIn(on_config=ready_then(protocol.end_of_transcript,
                                                      session_id=False)))
    assert "session_id" not in found.offered
    assert found.seen["session_id"] == (
        "SERVER_READY has no session_id: ['backend', 'message', 'uid']")
    assert "end_of_transcript" in found.offered


async def test_end_of_transcript_needs_its_message_and_a_close_with_1000() -> None:
    found = await probed(StandIn(on_config=ready_then(protocol.end_of_transcript,
                                                      close=1001)))
    assert "end_of_transcript" not in found.offered
    assert found.seen["end_of_transcript"] == "after END_OF_AUDIO: end; closed with 1001"
    plain = await probed(StandIn(on_config=ready_then(
        lambda uid: protocol.segments(uid, []))))
    assert "end_of_transcript" not in plain.offered
    assert plain.seen["end_of_transcript"] == "after END_OF_AUDIO: segments; closed with 1000"


async def test_a_malformed_message_after_end_of_audio_is_counted_as_such() -> None:
    found = await probed(StandIn(on_config=ready_then("{not json", protocol.end_of_transcript,
                                                      close=1000)))
    assert "end_of_transcript" in found.offered
    lone = await probed(StandIn(on_config=ready_then("{not json")))
    assert lone.seen["end_of_transcript"] == "after END_OF_AUDIO: malformed; closed with 1000"
    two = await probed(StandIn(on_config=ready_then(
        "{not json", lambda uid: protocol.segments(uid, []), close=1001)))
    assert two.seen["end_of_transcript"] == (
        "after END_OF_AUDIO: malformed, segments; closed with 1001")


async def test_a_server_that_stays_quiet_and_open_is_said_so(quick: None) -> None:
    found = await probed(StandIn(on_config=ready_then(close=None)))
    assert "end_of_transcript" not in found.offered
    assert found.seen["end_of_transcript"] == (
        "after END_OF_AUDIO: no message; still open 0.3 s after its last message")


async def test_a_bad_config_needs_a_close_with_1008_for_close_codes(quick: None) -> None:
    async def close_plainly(ws: ServerConnection) -> None:
        await ws.close(1000)

    async def error_then_1011(ws: ServerConnection) -> None:
        await ws.send(json.dumps({"status": "ERROR", "message": "no"}))
        await ws.close(1011)

    async def stay_open(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async def garble_then_1001(ws: ServerConnection) -> None:
        await ws.send("{garbled")
        await ws.send(json.dumps({"status": "ERROR", "message": "no"}))
        await ws.close(1001)

    seen = {}
    for name, reply in (("plain", close_plainly), ("1011", error_then_1011),
                        ("open", stay_open), ("two", garble_then_1001)):
        found = await probed(StandIn(on_bad_config=reply))
        assert "close_codes" not in found.offered
        seen[name] = found.seen["close_codes"]
    assert seen == {
        "plain": "a config that is not JSON: no message, close 1000 (earshot: ERROR, 1008)",
        "1011": "a config that is not JSON: error, close 1011 (earshot: ERROR, 1008)",
        "open": "a config that is not JSON: no message, no close (earshot: ERROR, 1008)",
        "two": "a config that is not JSON: malformed, error, close 1001 (earshot: ERROR, 1008)",
    }


async def test_each_endpoint_must_answer_200_in_its_format() -> None:
    found = await probed(StandIn(http={"/readyz": (503, "loading"),
                                       "/status": (200, "<html>not json</html>"),
                                       "/metrics": (200, "up 1\n")}))
    assert not {"readyz", "status", "metrics"} & found.offered
    assert found.seen["readyz"] == "GET /readyz: HTTP 503"
    assert found.seen["status"] == "GET /status: HTTP 200, not the format"
    assert found.seen["metrics"] == "GET /metrics: HTTP 200, not the format"


@pytest.mark.parametrize("body", [json.dumps([]), json.dumps({"sessions": {}}),
                                  json.dumps({"count": 0})],
                         ids=["a list", "sessions not a list", "no sessions"])
async def test_status_must_be_an_object_with_a_list_of_sessions(body: str) -> None:
    found = await probed(StandIn(http={**EARSHOT_HTTP, "/status": (200, body)}))
    assert "status" not in found.offered
    assert found.seen["status"] == "GET /status: HTTP 200, not the format"


async def test_any_200_from_readyz_is_ready() -> None:
    found = await probed(StandIn(http={**EARSHOT_HTTP, "/readyz": (200, "")}))
    assert "readyz" in found.offered


async def test_endpoints_a_websocket_only_server_lacks_are_said_so() -> None:
    found = await probed(StandIn(http={}))  # every GET: 426, as websockets answers
    assert found.offered == frozenset({"session_id", "end_of_transcript", "close_codes"})
    assert found.seen["status"] == "GET /status: HTTP 426"


async def test_http_that_does_not_answer_is_said_so() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        async with serving(StandIn()) as standin:
            found = await asyncio.to_thread(probe, standin.ws_url, url)
    assert not {"readyz", "status", "metrics"} & found.offered
    assert found.seen["readyz"] == "GET /readyz: no HTTP answer ([Errno 111] Connection refused)"


async def test_an_http_url_that_is_not_one_gets_no_http_answer() -> None:
    async with serving(StandIn()) as standin:
        no_scheme = await asyncio.to_thread(probe, standin.ws_url, "127.0.0.1")
        bad_port = await asyncio.to_thread(probe, standin.ws_url, "http://127.0.0.1:port")
    assert no_scheme.seen["status"] == (
        "GET /status: no HTTP answer (unknown url type: '127.0.0.1/status')")
    assert bad_port.seen["status"] == "GET /status: no HTTP answer (nonnumeric port: 'port')"
    assert no_scheme.offered == bad_port.offered == frozenset(
        {"session_id", "end_of_transcript", "close_codes"})


async def test_each_get_says_how_long_it_took() -> None:
    standin = StandIn(delays={"/status": 0.15})
    started = asyncio.get_running_loop().time()
    found = await probed(standin)
    took_ms = (asyncio.get_running_loop().time() - started) * 1000
    status_ms = int(found.seen["status"].removeprefix("GET /status: 200 in ").split()[0])
    assert 150 <= status_ms <= took_ms


async def test_a_body_that_never_ends_is_judged_on_its_first_64_kib() -> None:
    """A hostile or broken endpoint cannot hold the probe: it reads 64 KiB at most."""
    # 200 with a body of 10 MB announced, of which 64 KiB come, then nothing more
    first = b"# TYPE up gauge\n".ljust(65536, b"#")
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n" + first
    async with raw_tcp(reply, close=False, scheme="http") as http_url, \
            serving(StandIn()) as standin:
        found = await asyncio.to_thread(probe, standin.ws_url, http_url, None, 3.0)
    assert {"readyz", "metrics"} <= found.offered, found.seen
    assert found.seen["status"] == "GET /status: HTTP 200, not the format"


async def timed_probe(standin: StandIn, timeout: float) -> tuple[Offers | TargetError, float]:
    """The probe's outcome and how long it took (the stand-in's slow answers
    finish after it, when the stand-in closes)."""
    async with serving(standin):
        started = asyncio.get_running_loop().time()
        try:
            outcome: Offers | TargetError = await asyncio.to_thread(
                probe, standin.ws_url, standin.http_url, None, timeout)
        except TargetError as exc:
            outcome = exc
        return outcome, asyncio.get_running_loop().time() - started


async def test_a_get_that_gets_no_answer_in_time_is_no_http_answer() -> None:
    found, took = await timed_probe(StandIn(delays={"/status": 1.2}), timeout=0.3)
    assert isinstance(found, Offers)
    assert found.seen["status"] == "GET /status: no HTTP answer (timed out)"
    assert {"readyz", "metrics"} <= found.offered
    assert took < 1.0


@pytest.mark.parametrize("slow", [0, 1], ids=["the session", "the malformed config"])
async def test_every_connection_the_probe_opens_has_its_deadline(slow: int) -> None:
    delays = [0.0, 0.0]
    delays[slow] = 1.2
    standin = StandIn(upgrade_delays=delays)
    refusal, took = await timed_probe(standin, timeout=0.3)
    assert str(refusal) == f"cannot reach {standin.ws_url}: no answer within 0.3 s"
    assert took < 1.0


# -- what makes a server untestable -------------------------------------------------


async def test_the_key_errors_say_whether_a_key_was_sent() -> None:
    standin = StandIn(upgrade=401)
    wrong = await refused(standin, {"Authorization": "Bearer no"})
    assert wrong == f"{standin.ws_url}: the API key was refused (HTTP 401 before the upgrade)"
    none = await refused(standin)
    assert none == f"{standin.ws_url}: it needs an API key (HTTP 401 before the upgrade)"
    forbidden = await refused(StandIn(upgrade=403))
    assert forbidden.endswith(": it needs an API key (HTTP 403 before the upgrade)")


async def test_another_http_answer_to_the_upgrade_is_not_a_websocket_server() -> None:
    standin = StandIn(upgrade=500)
    assert await refused(standin) == (f"{standin.ws_url} is not a WebSocket server: it "
                                      "answered HTTP 500 to the upgrade request")


async def test_an_answer_that_is_not_http_is_not_a_websocket_server() -> None:
    async with raw_tcp(b"SSH-2.0-OpenSSH\r\n\r\n") as url:
        with pytest.raises(TargetError) as caught:
            await asyncio.to_thread(probe, url, url.replace("ws://", "http://"))
    assert str(caught.value).startswith(f"{url} is not a WebSocket server: ")
    assert "\n" not in str(caught.value)


async def test_a_server_that_never_answers_the_upgrade_times_out() -> None:
    async with raw_tcp(None) as url:
        with pytest.raises(TargetError) as caught:
            await asyncio.to_thread(probe, url, url.replace("ws://", "http://"), None, 0.3)
    assert str(caught.value) == f"cannot reach {url}: no answer within 0.3 s"


def test_nothing_listening_cannot_be_reached() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{closed.getsockname()[1]}"
        with pytest.raises(TargetError) as caught:
            probe(url, url.replace("ws://", "http://"))
    assert str(caught.value) == f"cannot reach {url}: Connection refused"


async def test_a_full_server_cannot_be_tested() -> None:
    standin = StandIn(on_config=answer(lambda uid: protocol.wait(uid, 2.0)))
    assert await refused(standin) == (
        f"{standin.ws_url} is full (it answered WAIT): no session to test")


@pytest.mark.parametrize("text", ["invalid API key", "Not authorised"])
async def test_an_error_about_the_key_is_a_refused_key(text: str) -> None:
    standin = StandIn(on_config=answer(lambda uid: protocol.error(uid, text)))
    assert await refused(standin) == f"{standin.ws_url}: the API key was refused ({text})"


async def test_another_error_is_an_answer_instead_of_server_ready() -> None:
    standin = StandIn(on_config=answer(lambda uid: protocol.error(uid, "no model")))
    said = await refused(standin)
    assert said.startswith(f"{standin.ws_url} answered the config with {{")
    assert "'message': 'no model'" in said and said.endswith("instead of SERVER_READY")


async def test_a_close_with_1008_after_the_config_is_a_refused_key() -> None:
    standin = StandIn(on_config=close_with(1008))
    assert await refused(standin, {"Authorization": "Bearer no"}) == (
        f"{standin.ws_url}: the API key was refused (closed with 1008 after the config)")


@pytest.mark.parametrize(("reply", "code"), [(close_with(1011), 1011), (abort, 1006)],
                         ids=["1011", "no close frame"])
async def test_another_close_instead_of_an_answer(reply: OnConfig, code: int) -> None:
    standin = StandIn(on_config=reply)
    assert await refused(standin) == (f"{standin.ws_url} closed the connection ({code}) "
                                      "instead of answering the config")


@pytest.mark.parametrize("reply", ["{not json", json.dumps({"uid": "someone else",
                                                            "message": "SERVER_READY"})],
                         ids=["not json", "another uid"])
async def test_an_answer_outside_the_protocol_is_not_whisperlive(reply: str) -> None:
    standin = StandIn(on_config=answer(reply))
    said = await refused(standin)
    assert said.startswith(f"{standin.ws_url} does not speak the WhisperLive protocol: ")


async def test_no_answer_to_the_config_in_time(quick: None) -> None:
    standin = StandIn(on_config=say_nothing)
    assert await refused(standin) == f"{standin.ws_url}: no reply to the config within 0.3 s"


# -- the offers ---------------------------------------------------------------------


def test_missing_lists_the_extensions_not_offered_in_the_order_asked() -> None:
    found = Offers(frozenset({"status"}))
    assert found.missing(["metrics", "status", "readyz"]) == ["metrics", "readyz"]
    assert found.missing(("status",)) == []


def test_missing_refuses_a_name_it_does_not_know() -> None:
    with pytest.raises(ValueError) as caught:
        Offers(frozenset()).missing(["status", "telepathy"])
    assert str(caught.value) == (f"unknown extension(s) ['telepathy']; known: "
                                 f"{', '.join(EXTENSIONS)}")


def test_why_not_says_what_the_probe_saw() -> None:
    found = Offers(frozenset(), {"status": "GET /status: HTTP 404"})
    assert found.why_not("status") == "not offered: status (GET /status: HTTP 404)"
    assert found.why_not("metrics") == "not offered: metrics (not probed)"


def test_as_dict_has_every_extension_with_its_meaning_and_what_was_seen() -> None:
    found = Offers(frozenset({"readyz"}), {"readyz": "GET /readyz: 200 in 3 ms"})
    data = found.as_dict()
    assert list(data) == list(EXTENSIONS)
    assert data["readyz"] == {"offered": True, "meaning": EXTENSIONS["readyz"],
                              "seen": "GET /readyz: 200 in 3 ms"}
    assert data["status"] == {"offered": False, "meaning": EXTENSIONS["status"], "seen": ""}


@pytest.mark.parametrize(("error", "reason"), [
    (OSError("no route from here"), "no route from here"),
    (OSError(), "OSError"),
], ids=["without an errno", "without a text"])
def test_a_connection_error_is_named_by_its_text_or_else_its_type(
        monkeypatch: pytest.MonkeyPatch, error: OSError, reason: str) -> None:
    """Not every OSError carries an errno (websockets raises some of its own); the
    refusal still says what went wrong. The library's connect is replaced by one that
    raises it: no real connection fails this way on demand."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(offers, "connect", refuse)
    with pytest.raises(TargetError) as caught:
        probe("ws://127.0.0.1:9", "http://127.0.0.1:9")
    assert str(caught.value) == f"cannot reach ws://127.0.0.1:9: {reason}"
