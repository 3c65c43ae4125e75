"""eventually(): bounded polling that says what it waited for and what it saw."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest
import tenacity.nap
from websockets.asyncio.server import serve

from earshot import protocol
from earshot.client import AsyncTranscriptionClient, ConnectionState
from earshot.testing import wire
from earshot.testing.http import HttpEndpoints
from earshot.testing.waiting import (
    WaitTimeout,
    eventually,
    eventually_async,
    transcript_text,
    wait_for_container_status,
    wait_for_container_status_async,
    wait_for_sessions,
    wait_for_sessions_async,
    wait_for_state,
    wait_for_state_async,
    wait_for_transcript,
    wait_for_transcript_async,
)


def test_returns_the_first_value_that_satisfies() -> None:
    counter = itertools.count()
    assert eventually(lambda: next(counter), lambda n: n >= 3, timeout=5) == 3


def test_an_assertion_in_the_probe_means_not_yet() -> None:
    counter = itertools.count()

    def probe() -> int:
        n = next(counter)
        assert n >= 2, "too small"
        return n

    assert eventually(probe, timeout=5) == 2


def test_timeout_says_what_how_long_how_often_and_what_was_seen() -> None:
    polled_at: list[float] = []

    def probe() -> str:
        polled_at.append(time.monotonic())
        return "still 41"

    started = time.monotonic()
    with pytest.raises(WaitTimeout) as caught:
        eventually(probe, lambda v: v == "42", timeout=1.0, description="the answer")
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert "waiting for the answer" in message and "limit 1 s" in message
    assert "last seen: 'still 41'" in message
    polls = int(message.split(" polls")[0].rsplit(", ", 1)[1])
    assert polls == len(polled_at) >= 3
    # Never gives up early; the last poll is right at the deadline (the backoff
    # is cut to what is left, never past it); and it gives up then. Only the
    # end's bound allows for a loaded machine's scheduling.
    assert elapsed >= 1.0
    assert polled_at[-1] - started >= 1.0 - 0.002
    assert elapsed <= 1.0 + 0.25, f"gave up {elapsed - 1.0:.3f} s after its deadline"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_long_backoff_is_cut_short_at_the_deadline(kind: str) -> None:
    # Left alone, the backoff's seventh sleep would end at about 1.27 s.
    started = time.monotonic()
    with pytest.raises(WaitTimeout):
        if kind == "sync":
            eventually(lambda: False, timeout=0.7, max_interval=5.0)
        else:
            asyncio.run(eventually_async(lambda: False, timeout=0.7, max_interval=5.0))
    assert time.monotonic() - started < 0.7 + 0.2


def test_other_exceptions_propagate_at_once() -> None:
    with pytest.raises(ZeroDivisionError):
        eventually(lambda: 1 / 0, timeout=5)


async def test_async_variant_takes_plain_and_async_probes() -> None:
    counter = itertools.count()

    async def async_probe() -> int:
        return next(counter)

    assert await eventually_async(async_probe, lambda n: n >= 2, timeout=5) == 2
    assert await eventually_async(lambda: "x", timeout=5) == "x"
    with pytest.raises(WaitTimeout, match="last seen: 0"):
        await eventually_async(lambda: 0, timeout=0.2, description="non-zero")



def requested_sleeps(kind: str, monkeypatch: pytest.MonkeyPatch, probe: Any = lambda: False,
                     **options: Any) -> list[float]:
    """The sleeps a wait asks for between its polls (each still slept). The policy is
    judged by what it asks, not by wall-clock gaps: under make test's parallel load
    a process may run 100 ms late whatever it asked (a 140 ms gap was seen there)."""
    asked: list[float] = []
    if kind == "sync":  # tenacity's default sleep calls time.sleep through its nap module
        real_sleep = time.sleep

        def sleep(seconds: float) -> None:
            asked.append(seconds)
            real_sleep(seconds)

        monkeypatch.setattr(tenacity.nap, "time", SimpleNamespace(sleep=sleep))
        run = eventually
    else:
        real_async_sleep = asyncio.sleep

        async def async_sleep(seconds: float) -> None:
            asked.append(seconds)
            await real_async_sleep(seconds)

        monkeypatch.setattr(asyncio, "sleep", async_sleep)

        def run(*args: Any, **kwargs: Any) -> Any:
            return asyncio.run(eventually_async(*args, **kwargs))

    with contextlib.suppress(WaitTimeout):  # the probes here mostly never succeed
        run(probe, **{"timeout": 1.0, **options})
    return asked


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_condition_that_holds_soon_is_seen_soon(kind: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # The backoff starts small: a condition true at the second poll ends the wait
    # after one short sleep (10 ms), not one at the cap.
    counter = itertools.count()
    asked = requested_sleeps(kind, monkeypatch, lambda: next(counter) >= 1, timeout=5)
    assert len(asked) == 1 and asked[0] <= 0.02, asked


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_the_backoff_never_waits_longer_than_max_interval(
        kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = requested_sleeps(kind, monkeypatch, max_interval=0.05)
    assert max(asked) == pytest.approx(0.05), asked  # it reaches the cap, never more
    assert all(s == pytest.approx(0.05) for s in asked[3:-1]), asked  # and stays there


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_the_backoff_is_capped_at_a_quarter_second_unless_told(
        kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = requested_sleeps(kind, monkeypatch)
    assert max(asked) == pytest.approx(0.25), asked
    assert asked[0] <= 0.02, asked  # from a small start


async def test_an_async_wait_without_a_description_waits_for_a_condition() -> None:
    with pytest.raises(WaitTimeout, match=r"waiting for a condition; last seen: 0$"):
        await eventually_async(lambda: 0, timeout=0.2)


def test_a_timeout_says_how_long_it_waited_and_the_probes_last_assertion() -> None:
    def probe() -> int:
        raise AssertionError("not there yet")

    started = time.monotonic()
    with pytest.raises(WaitTimeout) as caught:
        eventually(probe, timeout=0.3)
    took = time.monotonic() - started
    message = str(caught.value)
    waited = float(message.split("timed out after ")[1].split(" s ")[0])
    assert 0.3 <= waited <= took + 0.01
    assert "(limit 0.3 s, " in message and "waiting for a condition;" in message
    assert message.endswith("last seen: AssertionError('not there yet')")


async def test_a_timeout_in_a_loop_says_the_same() -> None:
    async def probe() -> int:
        raise AssertionError("not there yet")

    with pytest.raises(WaitTimeout) as caught:
        await eventually_async(probe, timeout=0.3, description="the answer")
    message = str(caught.value)
    waited = float(message.split("timed out after ")[1].split(" s ")[0])
    assert 0.3 <= waited < 1.0
    assert "(limit 0.3 s, " in message and "waiting for the answer;" in message
    assert message.endswith("last seen: AssertionError('not there yet')")


async def test_an_async_wait_counts_its_polls_and_never_sleeps_past_its_deadline() -> None:
    polled_at: list[float] = []

    async def probe() -> str:
        polled_at.append(time.monotonic())
        return "still 41"

    started = time.monotonic()
    with pytest.raises(WaitTimeout) as caught:
        await eventually_async(probe, lambda v: v == "42", timeout=1.0)
    elapsed = time.monotonic() - started
    polls = int(str(caught.value).split(" polls")[0].rsplit(", ", 1)[1])
    assert polls == len(polled_at) >= 3
    assert polled_at[-1] - started >= 1.0 - 0.002
    assert elapsed <= 1.0 + 0.25


async def test_an_async_probe_that_raises_ends_the_wait_at_once() -> None:
    async def probe() -> int:
        raise ZeroDivisionError

    started = time.monotonic()
    with pytest.raises(ZeroDivisionError):
        await eventually_async(probe, timeout=5)
    assert time.monotonic() - started < 1.0


# -- named waits ---------------------------------------------------------------------


class StatusServer(HttpEndpoints):
    """A real HTTP server on 127.0.0.1 whose /status lists ``sessions``; it keeps
    the headers of every request."""

    host = "127.0.0.1"

    def __init__(self, shared: bool = False) -> None:
        self.shared = shared
        self.sessions: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.headers.append(dict(self.headers))
                body = json.dumps({"sessions": owner.sessions}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,),
                                       name="status-server")

    def __enter__(self) -> StatusServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


def session(uid: str) -> dict[str, Any]:
    return {"uid": uid, "session_id": f"s-{uid}"}


def test_wait_for_sessions_counts_every_session_on_a_server_of_its_own() -> None:
    with StatusServer() as server:
        server.sessions = [session("theirs"), session(wire.uid("mine"))]
        status = wait_for_sessions(server, 2, timeout=5)
        assert status == {"sessions": server.sessions}
        with pytest.raises(WaitTimeout) as caught:
            wait_for_sessions(server, 1, timeout=0.2)
    message = str(caught.value)
    assert "limit 0.2 s" in message and "waiting for 1 session(s) in the server's /status;" in (
        message)


def test_wait_for_sessions_counts_only_its_own_on_a_shared_server() -> None:
    with StatusServer(shared=True) as server:
        server.sessions = [session("theirs"), session(wire.uid("mine"))]
        assert wait_for_sessions(server, 1, timeout=5)["sessions"] == server.sessions
        with pytest.raises(WaitTimeout, match=r"waiting for 2 session\(s\) of this run's own "
                                              r"in the server's /status;"):
            wait_for_sessions(server, 2, timeout=0.2)


def test_wait_for_sessions_among_uids_counts_only_those() -> None:
    with StatusServer(shared=True) as server:
        server.sessions = [session("a"), session("b"), session(wire.uid("mine"))]
        wait_for_sessions(server, 2, timeout=5, uids={"b", "a", "c"})
        with pytest.raises(WaitTimeout, match=r"waiting for 0 session\(s\) among uids "
                                              r"\['a', 'c'\] in the server's /status;"):
            wait_for_sessions(server, 0, timeout=0.2, uids={"c", "a"})


def test_wait_for_sessions_sends_the_headers_it_is_given() -> None:
    with StatusServer() as server:
        wait_for_sessions(server, 0, timeout=5, headers={"Authorization": "Bearer k"})
    assert server.headers and all(h.get("Authorization") == "Bearer k" for h in server.headers)


async def test_wait_for_sessions_async_waits_for_the_count_to_change() -> None:
    with StatusServer(shared=True) as server:
        server.sessions = [session(wire.uid("one"))]

        async def second_session() -> None:
            await asyncio.sleep(0.1)  # pacing: the session opens while it waits
            server.sessions = [*server.sessions, session(wire.uid("two")), session("theirs")]

        opening = asyncio.create_task(second_session())
        status = await wait_for_sessions_async(server, 2, timeout=5,
                                               headers={"Authorization": "Bearer k"})
        await opening
        assert len(status["sessions"]) == 3
        assert wait_for_sessions(server, 1, timeout=5, uids={"theirs"})
        await wait_for_sessions_async(server, 1, timeout=5, uids={"theirs", "nobody"})
        with pytest.raises(WaitTimeout) as caught:
            await wait_for_sessions_async(server, 3, timeout=0.2, uids={"theirs"})
        with pytest.raises(WaitTimeout, match=r"waiting for 3 session\(s\) of this run's own "
                                              r"in the server's /status;"):
            await wait_for_sessions_async(server, 3, timeout=0.2)
    assert all(h.get("Authorization") == "Bearer k" for h in server.headers[:2])
    message = str(caught.value)
    assert "limit 0.2 s" in message
    assert "waiting for 3 session(s) among uids ['theirs'] in the server's /status;" in message


class PlainTarget:
    """A target that is not one of earshot's (no ``shared`` attribute): a /status of
    its own, listing ``sessions``."""

    def __init__(self, sessions: list[dict[str, Any]]) -> None:
        self.sessions = sessions

    def server_status(self, headers: Any = None) -> dict[str, Any]:
        return {"sessions": self.sessions}

    def own_sessions(self, status: dict[str, Any]) -> list[dict[str, Any]]:
        return status["sessions"]


async def test_a_target_without_shared_counts_all_its_sessions() -> None:
    target = PlainTarget([session("theirs")])
    assert wait_for_sessions(target, 1, timeout=5) == {"sessions": target.sessions}
    for wait in (wait_for_sessions, wait_for_sessions_async):
        with pytest.raises(WaitTimeout) as caught:
            result = wait(target, 2, timeout=0.2)
            if asyncio.iscoroutine(result):
                await result
        assert "waiting for 2 session(s) in the server's /status;" in str(caught.value)


@pytest.fixture
async def ready_server() -> AsyncIterator[str]:
    """A stand-in WhisperLive server that answers the config with SERVER_READY."""

    async def handler(ws: Any) -> None:
        config = json.loads(await ws.recv())
        await ws.send(protocol.server_ready(config["uid"], "sid-1"))
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_wait_for_state_sees_the_client_reach_it(ready_server: str) -> None:
    client = AsyncTranscriptionClient(ready_server)
    try:
        assert wait_for_state(client, ConnectionState.DISCONNECTED, timeout=5) is (
            ConnectionState.DISCONNECTED)
        connecting = asyncio.create_task(client.connect())
        assert await wait_for_state_async(client, ConnectionState.READY, timeout=5) is (
            ConnectionState.READY)
        await connecting
        # the sync one from another thread, as from a sync test beside a client's loop
        assert await asyncio.to_thread(wait_for_state, client, ConnectionState.READY, 5) is (
            ConnectionState.READY)
    finally:
        await client.close()


async def test_wait_for_state_says_which_client_and_state_it_waited_for() -> None:
    client = AsyncTranscriptionClient("ws://127.0.0.1:9")
    what = f"waiting for client {client.client_id[:12]} to reach READY; last seen: "
    try:
        with pytest.raises(WaitTimeout) as sync_caught:
            wait_for_state(client, ConnectionState.READY, timeout=0.2)
        with pytest.raises(WaitTimeout) as async_caught:
            await wait_for_state_async(client, ConnectionState.READY, timeout=0.2)
    finally:
        await client.close()
    for caught in (sync_caught, async_caught):
        assert what + "<ConnectionState.DISCONNECTED: 'disconnected'>" in str(caught.value)
        assert "limit 0.2 s" in str(caught.value)


def seg(text: str, completed: bool = True, start: float = 0.0) -> protocol.Segment:
    return protocol.Segment(start, start + 1.0, text, completed)


async def test_transcript_text_joins_the_completed_segments_and_the_partial() -> None:
    client = AsyncTranscriptionClient("ws://127.0.0.1:9")
    try:
        assert transcript_text(client) == ""
        client.transcript.apply([seg(" And so ", start=0.0), seg("my fellow", start=1.0),
                                 seg(" Americans ", completed=False, start=2.0)], 0.0, "s")
        assert transcript_text(client) == "And so my fellow Americans"
        client.transcript.apply([seg(" And so ", start=0.0), seg("my fellow", start=1.0)],
                                0.0, "s")
        assert transcript_text(client) == "And so my fellow"
    finally:
        await client.close()


def test_transcript_text_takes_a_plain_list_of_segments() -> None:
    # Stand-in for the sync client's shape: its transcript is a list of segments.
    client = SimpleNamespace(transcript=[seg(" ask not ")], partial=seg(" what", False))
    assert transcript_text(client) == "ask not what"


async def test_wait_for_transcript_waits_for_the_words_asked_for() -> None:
    client = AsyncTranscriptionClient("ws://127.0.0.1:9")

    async def speak() -> None:
        for i, word in enumerate(["And", "so", "my", "Fellow", "Americans"]):
            await asyncio.sleep(0.02)  # pacing: the words arrive while it waits
            client.transcript.apply([seg(word, start=float(i))], 0.0, "s")

    speaking = asyncio.create_task(speak())
    try:
        text = await wait_for_transcript_async(client, contains="my fellow", timeout=5)
        assert "my fellow" in text.lower()
        text = await wait_for_transcript_async(client, min_words=5, timeout=5)
        assert text == "And so my Fellow Americans"
        assert wait_for_transcript(client, contains="AMERICANS", min_words=5, timeout=5) == text
        assert wait_for_transcript(client, timeout=5) == text  # nothing asked: any text
    finally:
        await speaking
        await client.close()


@pytest.mark.parametrize(("contains", "min_words", "what"), [
    ("ask not", None, "a transcript with 'ask not'"),
    (None, 9, "a transcript with 9+ words"),
    ("ask not", 9, "a transcript with 'ask not' and 9+ words"),
    ("so", 9, "a transcript with 'so' and 9+ words"),
])
async def test_wait_for_transcript_says_what_it_waited_for(contains: str | None,
                                                           min_words: int | None,
                                                           what: str) -> None:
    client = AsyncTranscriptionClient("ws://127.0.0.1:9")
    client.transcript.apply([seg("And so")], 0.0, "s")
    try:
        with pytest.raises(WaitTimeout) as sync_caught:
            wait_for_transcript(client, contains=contains, min_words=min_words, timeout=0.2)
        with pytest.raises(WaitTimeout) as async_caught:
            await wait_for_transcript_async(client, contains=contains, min_words=min_words,
                                            timeout=0.2)
    finally:
        await client.close()
    for caught in (sync_caught, async_caught):
        assert f"waiting for {what}; last seen: 'And so'" in str(caught.value)
        assert "limit 0.2 s" in str(caught.value)


class StandInContainer:
    """Stand-in for a testcontainers container (no Docker here): its wrapped
    container's status changes only when reloaded, as Docker's does."""

    def __init__(self, *statuses: str) -> None:
        self.statuses = list(statuses)
        self.status = "created"  # what a reload has fetched so far

    def get_wrapped_container(self) -> StandInContainer:
        return self

    def reload(self) -> None:
        if self.statuses:
            self.status = self.statuses.pop(0)


def test_wait_for_container_status_reloads_until_docker_reports_it() -> None:
    container = StandInContainer("created", "running", "paused")
    assert wait_for_container_status(container, "paused", timeout=5) == "paused"
    assert container.statuses == []


async def test_wait_for_container_status_async_reloads_until_docker_reports_it() -> None:
    container = StandInContainer("running", "exited")
    assert await wait_for_container_status_async(container, "exited", timeout=5) == "exited"


async def test_wait_for_container_status_says_what_it_saw() -> None:
    with pytest.raises(WaitTimeout) as caught:
        wait_for_container_status(StandInContainer("running"), "exited", timeout=0.2)
    with pytest.raises(WaitTimeout) as async_caught:
        await wait_for_container_status_async(StandInContainer("running"), "exited", 0.2)
    for raised in (caught, async_caught):
        assert "waiting for container status 'exited'; last seen: 'running'" in str(
            raised.value)
        assert "limit 0.2 s" in str(raised.value)
