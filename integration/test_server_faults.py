"""The server killed, restarted, paused and stopped while clients stream.

Each client ends in a defined state: with a reconnect policy, a new session
that resumes the unconfirmed audio and completes the transcript; without one,
a typed error. Every test has a server of its own (``controllable_server``:
a container, or a local process with ``--earshot-target local``), so these
skip on a deployment; its URL stays valid across restarts.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from earshot.client import AsyncTranscriptionClient, ConnectionLost, ConnectionState
from earshot.client.reconnect import ReconnectPolicy
from earshot.testing.waiting import eventually_async, wait_for_sessions_async
from earshot.testing.wer import wer

S = ConnectionState
SHORT = 32000  # 2 s of audio
# Patient enough for a container to start again on a loaded 2-core machine.
POLICY = ReconnectPolicy(attempts=100, deadline=60, initial=0.1, maximum=0.5)
PAUSE_S = 5.0
# The faults must land while audio is still being sent; the speaker's pace is not
# what these scenarios test. At twice real time a stream is as live, in half the
# wall time and about half the server's passes (the suite is CPU-bound on 2 cores).
# The faults after the last chunk stream paced too: unpaced, the new session got
# the whole 22 s at once, a window holding the sentence twice, and under load its
# final pass was once taken for a repetition loop, losing the last words (the open
# defect in docs/suite.md); paced, the first sentence is completed before the fault.
SPEED = 2.0
# Under xdist (make integration), two groups of their own, each run by one worker:
# at most two of these scenarios at once, each streaming real speech to a server of
# its own, beside the plugin's two groups of the other such tests. Four of them at
# once starved the servers of CPU on 2 cores, and the waits for the first sentence
# timed out. Each group holds about 75 s of the suite's slowest scenarios.
FAULTS_A = pytest.mark.xdist_group("earshot-server-faults-a")
FAULTS_B = pytest.mark.xdist_group("earshot-server-faults-b")


@pytest.fixture
def speech(jfk: np.ndarray) -> np.ndarray:
    """JFK's sentence twice (22 s): the server usually completes its first sentence
    once it is 2 s behind the audio and the model has closed it (11-14 s in), so a
    fault can land after a completed segment while audio is still being sent."""
    return np.concatenate([jfk, jfk])


FIRST_SENTENCE_S = 12.0  # where the second sentence begins, about


def past_the_first_sentence(client: AsyncTranscriptionClient) -> bool:
    """The client has sent the first sentence and the server has answered with text
    (a completed segment or a partial): a fault now lands mid-stream. Whether a
    segment is completed by then varies: back to back, tiny.en sometimes reads both
    sentences as one growing segment that no two passes agree on, which the server
    completes only when its window fills (28.5 s), and on a loaded machine its
    passes come less often. The transcript must come out whole both ways."""
    answered = bool(client.transcript.completed) or client.partial is not None
    return client.audio_sent >= FIRST_SENTENCE_S and answered


def assert_whole(manifest, client: AsyncTranscriptionClient, segments) -> None:
    """The transcript of the speech is whole: close to the reference, to its last word."""
    text = " ".join(s.text for s in segments)
    reference = manifest["jfk.flac"].reference
    assert wer(f"{reference} {reference}", text) <= 0.25, text
    assert "country" in text.split()[-1].lower(), text


def sessions_of(client: AsyncTranscriptionClient) -> set[str]:
    return {r.session_id for r in client.transcript.received}


def session_at_fault(client: AsyncTranscriptionClient) -> tuple[str | None, bool]:
    """The client's session as the fault lands, and whether it had completed a
    segment by then."""
    return client.session_id, bool(client.transcript.completed)


def assert_resumed(client: AsyncTranscriptionClient, at_fault: tuple[str | None, bool]) -> None:
    """The client went on in a new session, and what the first one completed before
    the fault stayed in the transcript (a fault that lands before the first segment
    is completed leaves nothing of that session to keep: on a loaded machine that
    happens in about one run in two)."""
    first_session, had_completed = at_fault
    assert client.session_id != first_session
    if had_completed:
        assert first_session in sessions_of(client)


async def streaming_clients(server, client_factory, speech, count: int, speed: float = SPEED):
    """``count`` patient clients streaming the speech at ``speed`` x real time, each
    past its first sentence; returns them and their stream tasks."""
    clients = [client_factory(server=server, reconnect=POLICY) for _ in range(count)]
    await asyncio.gather(*(c.connect() for c in clients))
    streams = [asyncio.create_task(c.stream(speech, speed=speed)) for c in clients]
    await eventually_async(lambda: [_progress(c) for c in clients],
                           lambda _: all(past_the_first_sentence(c) for c in clients),
                           timeout=20, description="every client past the first sentence "
                                                   "(completed, state, partial)")
    return clients, streams


def _progress(client: AsyncTranscriptionClient) -> tuple[int, str, str | None]:
    """What a client has so far, for a wait's failure to show."""
    partial = client.partial
    return (len(client.transcript.completed), client.state.name,
            f"{partial.start:.1f}-{partial.end:.1f} {partial.text[-40:]!r}" if partial else None)


async def _kill_and_start(server) -> None:
    await asyncio.to_thread(server.kill)
    await asyncio.to_thread(server.start)  # same URL: the port is kept


@pytest.mark.parametrize("moment", [
    pytest.param("mid-stream", marks=FAULTS_A),
    pytest.param("after the last chunk", marks=FAULTS_B),
    pytest.param("during finish", marks=FAULTS_A),
])
async def test_reconnects_after_the_server_is_killed_and_restarted(
    controllable_server, client_factory, manifest, speech, moment
) -> None:
    """Wherever the kill lands, the client resumes in a new session and the
    transcript comes out whole (the flaky failure: a kill after the last chunk
    left finish() with a dead session and ConnectionLost)."""
    client = client_factory(server=controllable_server, reconnect=POLICY)
    await client.connect()
    streaming = asyncio.create_task(client.stream(speech, speed=SPEED))
    if moment == "mid-stream":
        await eventually_async(lambda: _progress(client),
                               lambda _: past_the_first_sentence(client), timeout=20,
                               description="the first sentence before the kill "
                                           "(completed, state, partial)")
        at_fault = session_at_fault(client)
        await _kill_and_start(controllable_server)
        await asyncio.wait_for(streaming, 60)
        segments = await client.finish(timeout=60)
    elif moment == "after the last chunk":
        await asyncio.wait_for(streaming, 60)
        at_fault = session_at_fault(client)
        await _kill_and_start(controllable_server)
        segments = await client.finish(timeout=60)
    else:  # the server freezes, so END_OF_AUDIO is sent but never answered; then dies
        await asyncio.wait_for(streaming, 60)
        await asyncio.to_thread(controllable_server.pause)
        finishing = asyncio.create_task(client.finish(timeout=60))
        await eventually_async(lambda: client.end_of_audio_at, timeout=10,
                               description="END_OF_AUDIO sent to the frozen server")
        at_fault = session_at_fault(client)
        await _kill_and_start(controllable_server)
        segments = await asyncio.wait_for(finishing, 70)
    assert client.state is S.DISCONNECTED
    assert_resumed(client, at_fault)
    assert_whole(manifest, client, segments)
    await wait_for_sessions_async(controllable_server, 0)


@FAULTS_B
async def test_server_that_vanishes_leaves_the_client_disconnected(controllable_server,
                                                                   client_factory, jfk) -> None:
    client = client_factory(server=controllable_server)
    await client.connect()
    await client.send_audio(jfk[:SHORT])
    await asyncio.to_thread(controllable_server.kill)
    await client.wait_for_state(S.DISCONNECTED, timeout=10)
    with pytest.raises(ConnectionLost):
        await client.send_audio(jfk[:1600])
    with pytest.raises(ConnectionLost):
        await client.finish()


@FAULTS_B
async def test_restart_while_clients_stream(controllable_server, client_factory, manifest,
                                            speech) -> None:
    clients, streams = await streaming_clients(controllable_server, client_factory, speech, 2)
    at_fault = [session_at_fault(c) for c in clients]
    await asyncio.to_thread(controllable_server.restart)
    await asyncio.wait_for(asyncio.gather(*streams), 60)
    for client, fault, segments in zip(clients, at_fault, await asyncio.gather(
            *(c.finish(timeout=60) for c in clients)), strict=True):
        assert_resumed(client, fault)
        assert_whole(manifest, client, segments)
    await wait_for_sessions_async(controllable_server, 0)


@FAULTS_A
async def test_pause_then_unpause_while_clients_stream(controllable_server, client_factory,
                                                       manifest, speech) -> None:
    """A server frozen for 5 s of audio: every stream still comes out whole.

    At real time: at twice real time one of the three finals lost its last words
    once in about 17 runs (the open defect of docs/suite.md's series C, whose
    windows then hold more of the repeated sentence); at real time, once in 25."""
    clients, streams = await streaming_clients(controllable_server, client_factory, speech, 3,
                                               speed=1.0)
    await asyncio.to_thread(controllable_server.pause)
    # The fault itself lasts 5 s: a stimulus of fixed length, not a wait for
    # anything (the clients' sends stall meanwhile: TCP back-pressure).
    await asyncio.sleep(PAUSE_S)  # pacing: the freeze's length
    await asyncio.to_thread(controllable_server.unpause)
    await asyncio.wait_for(asyncio.gather(*streams), 60)
    results = await asyncio.gather(*(c.finish(timeout=60) for c in clients))
    for client, segments in zip(clients, results, strict=True):
        assert client.state is S.DISCONNECTED
        assert_whole(manifest, client, segments)
    await wait_for_sessions_async(controllable_server, 0)


@FAULTS_B
async def test_stop_drains_clients_each_per_its_policy(controllable_server, client_factory,
                                                       manifest, speech) -> None:
    """SIGTERM drains: a client without a policy gets ConnectionLost with 1001
    (DISCONNECT); one with a policy resumes once the server is back."""
    patient = client_factory(server=controllable_server, reconnect=POLICY)
    plain = client_factory(server=controllable_server)
    await asyncio.gather(patient.connect(), plain.connect())
    streams = [asyncio.create_task(c.stream(speech, speed=SPEED)) for c in (patient, plain)]
    await eventually_async(lambda: _progress(patient),
                           lambda _: past_the_first_sentence(patient), timeout=20,
                           description="the first sentence before the stop "
                                       "(completed, state, partial)")
    assert await asyncio.to_thread(controllable_server.terminate) == 0
    with pytest.raises(ConnectionLost) as caught:
        await asyncio.wait_for(streams[1], 30)
    assert caught.value.close_code == 1001 and "DISCONNECT" in str(caught.value)
    assert plain.state is S.DISCONNECTED
    await asyncio.to_thread(controllable_server.start)
    await asyncio.wait_for(streams[0], 60)
    assert_whole(manifest, patient, await patient.finish(timeout=60))
    await wait_for_sessions_async(controllable_server, 0)
