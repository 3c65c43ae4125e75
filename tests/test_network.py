"""The real server behind the latency proxy: real latency, real outages."""

from __future__ import annotations

import asyncio

from earshot.client import AsyncTranscriptionClient, ConnectionState, ReconnectPolicy
from earshot.testing import wire
from earshot.testing.waiting import eventually_async, wait_for_sessions
from earshot.testing.wer import wer


async def test_stream_across_an_ocean(idle_server, proxy, manifest, jfk) -> None:
    proxy.apply_profile("intercontinental")  # 300 ms +- 30 each way
    url = f"ws://127.0.0.1:{proxy.port}"
    transcript = await wire.stream(url, jfk, speed=1.0)
    assert transcript.final and transcript.close_code == 1000
    assert wer(manifest["jfk.flac"].reference, transcript.text) <= 0.10, transcript.text
    # The handshake and the config each cross the ocean twice before SERVER_READY.
    started = transcript.messages[0][0]
    assert transcript.first_audio_at is not None and transcript.first_audio_at - started < 0.1
    final_latency = transcript.first_time("end") - transcript.end_of_audio_at
    assert final_latency >= 0.5  # END_OF_AUDIO over, the transcript back: >= 2 x 270 ms


async def test_client_reconnects_when_the_network_drops(idle_server, proxy, jfk) -> None:
    client = AsyncTranscriptionClient(
        f"ws://127.0.0.1:{proxy.port}",
        reconnect=ReconnectPolicy(attempts=50, deadline=20, initial=0.05, maximum=0.3),
    )
    try:
        await client.connect()
        first = client.session_id
        await client.send_audio(jfk[:16000])
        await asyncio.to_thread(proxy.down)
        await client.wait_for_state(ConnectionState.DISCONNECTED, timeout=5)
        reconnecting = asyncio.create_task(client.connect())
        await eventually_async(
            lambda: sum(t.new is ConnectionState.CONNECTING for t in client.history),
            lambda n: n >= 3, description="a refused reconnection attempt",
        )
        await asyncio.to_thread(proxy.up)
        await asyncio.wait_for(reconnecting, 25)
        assert client.state is ConnectionState.READY and client.session_id != first
        await client.stream(jfk[:48000], realtime=False)
        assert await client.finish()
    finally:
        await client.close()
    wait_for_sessions(idle_server, 0)
