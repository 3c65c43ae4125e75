"""The latency proxy against a plain echo server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from earshot.testing.proxy import (
    Bandwidth,
    Blackhole,
    Latency,
    Proxy,
    ResetPeer,
    Slicer,
    Timeout,
)

PAYLOAD = b"x" * 100


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    writers: list[asyncio.StreamWriter] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.fixture
async def proxy(echo_port: int) -> AsyncIterator[Proxy]:
    p = Proxy("127.0.0.1", echo_port)
    await asyncio.to_thread(p.start)
    try:
        yield p
    finally:
        await asyncio.to_thread(p.stop)


async def open_via(proxy: Proxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def round_trip(reader, writer, payload: bytes = PAYLOAD, timeout: float = 5) -> float:
    started = time.monotonic()
    writer.write(payload)
    await writer.drain()
    await asyncio.wait_for(reader.readexactly(len(payload)), timeout)
    return time.monotonic() - started


async def median_rtt(reader, writer, n: int = 5) -> float:
    times = sorted([await round_trip(reader, writer) for _ in range(n)])
    return times[n // 2]


async def test_latency_added_and_removed_while_traffic_flows(proxy) -> None:
    reader, writer = await open_via(proxy)
    try:
        base = await median_rtt(reader, writer)
        with proxy.toxic(Latency(100), "downstream"):
            delayed = await median_rtt(reader, writer)
        restored = await median_rtt(reader, writer)
    finally:
        writer.close()
    added = delayed - base
    assert 0.080 <= added <= 0.120, f"asked 100 ms, added {added * 1000:.0f} ms"
    assert restored < base + 0.02


async def test_latency_in_both_directions_adds_up(proxy) -> None:
    reader, writer = await open_via(proxy)
    try:
        base = await median_rtt(reader, writer)
        with proxy.toxic(Latency(50), "both"):
            added = await median_rtt(reader, writer) - base
    finally:
        writer.close()
    assert 0.080 <= added <= 0.120


async def test_jitter_spreads_delays_but_keeps_order(proxy) -> None:
    reader, writer = await open_via(proxy)
    proxy.add(Latency(60, jitter_ms=40), "downstream")
    try:
        times = [await round_trip(reader, writer, bytes([i]) * 10) for i in range(12)]
        writer.write(b"".join(bytes([i]) * 10 for i in range(20)))
        await writer.drain()
        echoed = await asyncio.wait_for(reader.readexactly(200), 5)
    finally:
        writer.close()
    assert min(times) >= 0.015 and max(times) <= 0.2
    assert max(times) - min(times) > 0.01  # not a constant delay
    assert echoed == b"".join(bytes([i]) * 10 for i in range(20))


async def test_bandwidth_limits_the_rate(proxy) -> None:
    reader, writer = await open_via(proxy)
    payload = b"y" * 200_000
    try:
        with proxy.toxic(Bandwidth(rate_kbps=200), "downstream"):
            seconds = await round_trip(reader, writer, payload, timeout=10)
    finally:
        writer.close()
    rate = len(payload) / seconds / 1000
    assert 160 <= rate <= 240, f"asked 200 kB/s, got {rate:.0f}"


async def test_slicer_delivers_everything_in_pieces(proxy) -> None:
    reader, writer = await open_via(proxy)
    try:
        with proxy.toxic(Slicer(average_size=10, size_variation=5, delay_ms=1), "downstream"):
            payload = bytes(range(256)) * 4
            writer.write(payload)
            await writer.drain()
            got = await asyncio.wait_for(reader.readexactly(len(payload)), 10)
    finally:
        writer.close()
    assert got == payload


async def test_reset_peer_resets_the_connection(proxy) -> None:
    reader, writer = await open_via(proxy)
    await round_trip(reader, writer)
    proxy.add(ResetPeer(timeout_ms=0), "downstream")
    with pytest.raises(ConnectionResetError):
        writer.write(PAYLOAD)
        await writer.drain()
        await asyncio.wait_for(reader.readexactly(len(PAYLOAD)), 5)
    writer.close()


async def test_blackhole_drops_data_until_removed(proxy) -> None:
    reader, writer = await open_via(proxy)
    try:
        with proxy.toxic(Blackhole(), "upstream"):
            writer.write(b"lost")
            await writer.drain()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.readexactly(4), 0.3)
        assert await round_trip(reader, writer) < 1.0  # the connection still works
    finally:
        writer.close()


async def test_timeout_holds_data_then_closes(proxy) -> None:
    reader, writer = await open_via(proxy)
    started = time.monotonic()
    proxy.add(Timeout(timeout_ms=300), "upstream")
    writer.write(b"held")
    await writer.drain()
    try:
        data = await asyncio.wait_for(reader.read(100), 5)
    except ConnectionResetError:
        data = b""
    elapsed = time.monotonic() - started
    writer.close()
    assert data == b""  # nothing came through; the connection ended
    assert 0.25 <= elapsed <= 1.0


async def test_down_refuses_and_up_serves_again_on_the_same_port(proxy) -> None:
    port = proxy.port
    reader, writer = await open_via(proxy)
    await round_trip(reader, writer)  # an established connection through the proxy
    await asyncio.to_thread(proxy.down)
    assert await asyncio.wait_for(reader.read(10), 5) == b""  # cut
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await open_via(proxy)
    await asyncio.to_thread(proxy.up)
    assert proxy.port == port
    reader, writer = await open_via(proxy)
    try:
        assert await round_trip(reader, writer) < 1.0
    finally:
        writer.close()


async def test_profiles(proxy) -> None:
    reader, writer = await open_via(proxy)
    try:
        base = await median_rtt(reader, writer)
        toxics = proxy.apply_profile("wifi")
        added = await median_rtt(reader, writer, n=9) - base
    finally:
        writer.close()
    assert toxics == [Latency(20, jitter_ms=10)]
    assert 0.020 <= added <= 0.080  # 20 +- 10 ms each way
    assert "Latency(latency_ms=20" in proxy.describe()
    with pytest.raises(ValueError, match="unknown profile"):
        proxy.apply_profile("dialup")
