"""The real server behind the latency proxy: real latency, real outages (seed 002).

Every deadline comes from ``earshot.testing.budgets``: the profile's round
trips and bandwidth plus what the server needs, never a number of the test's.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from earshot.client import (
    ConnectError,
    ConnectionState,
    ReconnectPolicy,
    TranscriptTimeout,
)
from earshot.testing.budgets import budget
from earshot.testing.proxy import PROFILES, Bandwidth, Blackhole, Proxy, ResetPeer
from earshot.testing.waiting import eventually_async, wait_for_sessions_async
from earshot.testing.wer import wer

# Every scenario here ends in the client's finish(), which waits for END_OF_TRANSCRIPT.
pytestmark = pytest.mark.extension("end_of_transcript")

S = ConnectionState
POLICY = ReconnectPolicy(attempts=100, deadline=30, initial=0.05, maximum=0.3)


def proxied(proxy) -> str:
    return f"ws://127.0.0.1:{proxy.port}"


def connect_seconds(client) -> float:
    """CONNECTING to READY of the client's latest session."""
    starts = [t.at for t in client.history if t.new is S.CONNECTING]
    ready = [t.at for t in client.history if t.new is S.READY]
    return ready[-1] - starts[-1]


def assert_whole(manifest, segments) -> None:
    text = " ".join(s.text for s in segments)
    assert wer(manifest["jfk.flac"].reference, text) <= 0.25, text
    assert "country" in text.split()[-1].lower(), text


@pytest.mark.parametrize("profile", list(PROFILES))
async def test_a_session_keeps_its_deadlines_on_each_network(idle_server, proxy, client_factory,
                                                             manifest, jfk, profile) -> None:
    limits = budget(proxy.apply_profile(profile))
    client = client_factory(proxied(proxy))
    await asyncio.wait_for(client.connect(), limits.connect_s)
    took = connect_seconds(client)
    assert limits.connect_min_s <= took <= limits.connect_s, (profile, took)
    streaming = asyncio.create_task(client.stream(jfk, realtime=True))
    started = time.monotonic()
    await eventually_async(lambda: client.partial or client.transcript.completed,
                           timeout=limits.first_text_s,
                           description=f"first text over {profile}")
    assert time.monotonic() - started <= limits.first_text_s
    await streaming
    segments = await client.finish(timeout=limits.final_s())
    assert client.final_at - client.end_of_audio_at <= limits.final_s()
    assert_whole(manifest, segments)
    await asyncio.wait_for(client.connect(), limits.connect_s)  # and again, a new session
    assert connect_seconds(client) <= limits.connect_s
    closing = time.monotonic()
    await client.close(limits.close_s)
    assert time.monotonic() - closing <= limits.close_s and client.state is S.DISCONNECTED


async def test_bandwidth_below_the_audio_rate_lags_but_loses_nothing(
    server_factory, client_factory, manifest, jfk
) -> None:
    """40 kB/s up for 64 kB/s of audio: the server falls behind the client, more
    and more; the proxy back-pressures the sender; the transcript is whole.

    The server's keepalive must outwait the lag (the client's pongs queue behind
    its audio, up to 7 s here), hence a server of the test's own.
    """
    srv = server_factory(ping_interval=5, ping_timeout=30)
    with Proxy(srv.host, srv.port) as proxy:
        proxy.add(Bandwidth(40), "upstream")
        client = client_factory(proxied(proxy), server=srv)
        await client.connect()
        lags: list[float] = []

        async def lag() -> float:
            status = await asyncio.to_thread(srv.server_status)
            heard = [s["audio_seconds"] for s in status["sessions"]
                     if s["uid"] == client.session_id]
            return client.audio_sent - (heard[0] if heard else 0.0)

        streaming = asyncio.create_task(client.stream(jfk, realtime=True))
        for after in (3.0, 8.0):  # seconds of stream sent
            await eventually_async(lambda after=after: client.audio_sent >= after, timeout=30,
                                   description=f"{after:g} s of audio sent")
            lags.append(await lag())
        await streaming
        assert lags[1] > lags[0] > 0, lags
        limits = budget(proxy.toxics("upstream"))
        segments = await client.finish(timeout=limits.final_s(backlog_s=len(jfk) / 16000))
    assert_whole(manifest, segments)


async def test_reset_mid_stream_resumes_in_a_new_session(idle_server, proxy, client_factory,
                                                         manifest, jfk) -> None:
    # The speech twice: JFK's first completed segment can come as late as 10 s into
    # the clip, and the reset must land while audio is still being sent (seen once:
    # with one JFK the reset came after stream() had returned). The reset meets the
    # next audio frame (upstream, every 100 ms), so it lands at once.
    # At real time: at twice real time (tried) the first completed segment came,
    # under load, after the last chunk had been sent, and the reset met no frame.
    speech = np.concatenate([jfk, jfk])
    client = client_factory(proxied(proxy), reconnect=POLICY)
    await client.connect()
    first = client.session_id
    streaming = asyncio.create_task(client.stream(speech, realtime=True))
    await eventually_async(lambda: client.transcript.completed, timeout=20,
                           description="a completed segment before the reset")
    reset = ResetPeer()
    proxy.add(reset, "upstream")
    await eventually_async(lambda: client.session_id != first, timeout=10,
                           description="a new session after the reset")
    proxy.remove(reset)
    await wait_for_sessions_async(idle_server, 0, uids={first})  # the old one is freed
    await asyncio.wait_for(streaming, 60)
    segments = await client.finish(timeout=30)
    text = " ".join(s.text for s in segments)
    reference = manifest["jfk.flac"].reference
    # 0-0.03 measured; without the replay of the unconfirmed audio 0.14-0.18.
    assert wer(f"{reference} {reference}", text) <= 0.10, text
    assert "country" in text.split()[-1].lower(), text
    assert {r.session_id for r in client.transcript.received} >= {first}


async def test_client_reconnects_when_the_network_drops(idle_server, proxy, client_factory,
                                                        jfk) -> None:
    client = client_factory(proxied(proxy), reconnect=POLICY)
    await client.connect()
    first = client.session_id
    await client.send_audio(jfk[:16000])
    await asyncio.to_thread(proxy.down)
    await client.wait_for_state(S.DISCONNECTED, timeout=5)
    reconnecting = asyncio.create_task(client.connect())
    await eventually_async(
        lambda: sum(t.new is S.CONNECTING for t in client.history),
        lambda n: n >= 3, description="refused reconnection attempts",
    )
    await asyncio.to_thread(proxy.up)
    await asyncio.wait_for(reconnecting, 25)
    assert client.state is S.READY and client.session_id != first
    await client.stream(jfk[:48000], realtime=False)
    assert await client.finish()
    await wait_for_sessions_async(idle_server, 0, uids={first, client.session_id})


async def test_finish_interrupted_by_a_lost_connection_completes(idle_server, proxy,
                                                                 client_factory, manifest,
                                                                 jfk) -> None:
    """The network goes down after END_OF_AUDIO and before the transcript: finish()
    reconnects, sends the unconfirmed audio again and completes the transcript."""
    client = client_factory(proxied(proxy), reconnect=POLICY)
    await client.connect()
    first = client.session_id
    await client.stream(jfk, realtime=False)
    proxy.add(Blackhole(), "downstream")  # nothing of the transcript comes back
    finishing = asyncio.create_task(client.finish(timeout=60))
    await eventually_async(lambda: client.end_of_audio_at, timeout=10,
                           description="END_OF_AUDIO sent")
    await asyncio.to_thread(proxy.down)
    proxy.clear()
    await asyncio.to_thread(proxy.up)
    assert_whole(manifest, await asyncio.wait_for(finishing, 70))
    assert client.session_id != first


async def test_blackhole_gives_a_clear_timeout_not_a_hang(idle_server, proxy,
                                                          client_factory) -> None:
    limits = budget([])
    proxy.add(Blackhole(), "both")
    client = client_factory(proxied(proxy), open_timeout=limits.connect_s)
    started = time.monotonic()
    with pytest.raises(ConnectError, match=r"cannot connect|no SERVER_READY"):
        await client.connect()
    assert time.monotonic() - started <= limits.connect_s + limits.close_s
    assert client.state is S.DISCONNECTED


async def test_blackhole_after_end_of_audio_times_out_with_what_was_seen(
    idle_server, proxy, client_factory, jfk
) -> None:
    limits = budget([])
    client = client_factory(proxied(proxy))
    await client.connect()
    await client.stream(jfk[:32000], realtime=False)
    proxy.add(Blackhole(), "downstream")
    started = time.monotonic()
    with pytest.raises(TranscriptTimeout, match="no final transcript within"):
        await client.finish(timeout=limits.final_s())
    assert time.monotonic() - started <= limits.final_s() + limits.close_s
    closing = time.monotonic()  # no closing handshake can cross: close() aborts, bounded
    await client.close()
    assert client.state is S.DISCONNECTED
    assert time.monotonic() - closing <= client.close_timeout + limits.close_s
