"""The latency proxy against a plain echo server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import socket
import threading
import time
from collections.abc import AsyncIterator

import pytest

from earshot.testing.budgets import budget
from earshot.testing.proxy import (
    Bandwidth,
    Blackhole,
    Chain,
    Chunk,
    Cut,
    Latency,
    Proxy,
    ResetPeer,
    Slicer,
    Timeout,
    Toxic,
)
from earshot.testing.waiting import eventually_async

PAYLOAD = b"x" * 100
STREAM_CHUNK = 64 * 1024
# A proxy that pushes back lets the sender fill only the socket buffers (a few
# MiB on loopback) and its own bounded ones; one that buffers without bound
# takes everything, so a sender that got this far was never pushed back.
PUSH_CAP = 64 * 1024 * 1024
STALL_LIMIT = 16 * 1024 * 1024
# No drain() progress for this long, on loopback, is a stall, not a slow turn.
STALL_SECONDS = 1.0


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


class Sink:
    """A target that keeps all it reads: what the proxy delivered, in order."""

    def __init__(self) -> None:
        self.port = 0
        self.data = bytearray()
        self.ended = asyncio.Event()  # the proxy passed on the end of the stream
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while data := await reader.read(65536):
                self.data += data
        except ConnectionError:
            pass
        finally:
            self.ended.set()
            writer.close()


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    sink = Sink()
    server = await asyncio.start_server(sink.handle, "127.0.0.1", 0)
    sink.port = server.sockets[0].getsockname()[1]
    try:
        yield sink
    finally:
        for writer in sink.writers:
            writer.close()
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def running_proxy(port: int) -> AsyncIterator[Proxy]:
    p = Proxy("127.0.0.1", port)
    await asyncio.to_thread(p.start)
    try:
        yield p
    finally:
        await asyncio.to_thread(p.stop)


@pytest.fixture
async def proxy(echo_port: int) -> AsyncIterator[Proxy]:
    async with running_proxy(echo_port) as p:
        yield p


class Pusher:
    """Writes a numbered stream into a connection as fast as drain() lets it."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.sent: list[bytes] = []
        self.accepted = 0  # bytes whose drain() returned: the sender got rid of them

    def _write_next(self) -> None:
        chunk = len(self.sent).to_bytes(4, "big") * (STREAM_CHUNK // 4)  # loss or reordering shows
        self.sent.append(chunk)
        self.writer.write(chunk)

    async def until_stalled(self) -> None:
        """Until one drain() makes no progress for STALL_SECONDS (or PUSH_CAP went through)."""
        while self.accepted < PUSH_CAP:
            self._write_next()
            try:
                await asyncio.wait_for(self.writer.drain(), STALL_SECONDS)
            except TimeoutError:
                return
            self.accepted += STREAM_CHUNK

    async def until(self, stop: asyncio.Event) -> None:
        while not stop.is_set() and self.accepted < PUSH_CAP:
            self._write_next()
            await self.writer.drain()
            self.accepted += STREAM_CHUNK

    async def finish(self, sink: Sink) -> None:
        """Flush what is left, end the stream, and wait for the sink to see its end."""
        await asyncio.wait_for(self.writer.drain(), 10)
        self.writer.write_eof()
        await asyncio.wait_for(sink.ended.wait(), 10)

    @property
    def stream(self) -> bytes:
        return b"".join(self.sent)


async def open_via(proxy: Proxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def round_trip(reader, writer, payload: bytes = PAYLOAD, timeout: float = 5) -> float:
    started = time.monotonic()
    writer.write(payload)
    await writer.drain()
    await asyncio.wait_for(reader.readexactly(len(payload)), timeout)
    return time.monotonic() - started


async def assert_cut(reader: asyncio.StreamReader, timeout: float = 5) -> None:
    """The connection ends (EOF or reset) within ``timeout``, with no data."""
    try:
        data = await asyncio.wait_for(reader.read(10), timeout)
    except ConnectionResetError:
        data = b""
    assert data == b""


async def fastest_rtt(reader, writer, n: int = 7) -> float:
    """The least of ``n`` round trips: CPU load only ever adds to a round trip, so
    the least is what the link itself takes, on an idle or a loaded machine."""
    return min([await round_trip(reader, writer) for _ in range(n)])


# A toxic's delay is never shorter than asked (timers may fire a millisecond
# early); a loaded machine may add to it, up to this much on 2 cores.
EARLY_S = 0.002
LOAD_SLACK_S = 0.040


async def test_latency_added_and_removed_while_traffic_flows(proxy) -> None:
    reader, writer = await open_via(proxy)
    try:
        base = await fastest_rtt(reader, writer)
        with proxy.toxic(Latency(100), "downstream"):
            delayed = await fastest_rtt(reader, writer)
        restored = await fastest_rtt(reader, writer)
    finally:
        writer.close()
    added = delayed - base
    assert 0.100 - EARLY_S <= added <= 0.100 + LOAD_SLACK_S, (
        f"asked 100 ms, added {added * 1000:.0f} ms")
    assert restored < base + LOAD_SLACK_S


@pytest.mark.parametrize("stack", ["two toxics", "a chain"])
async def test_stacked_latencies_add_up(proxy, stack) -> None:
    reader, writer = await open_via(proxy)
    try:
        if stack == "two toxics":
            proxy.add(Latency(100), "downstream")
            proxy.add(Latency(50), "downstream")
        else:
            proxy.add(Latency(100) | Latency(50), "downstream")
        delayed = await fastest_rtt(reader, writer)
    finally:
        writer.close()
    # A lower bound only: no chunk can come back before both delays passed, however
    # loaded the machine (one latency alone, or the larger of the two, stays near 100 ms).
    assert delayed >= 0.150 - EARLY_S, f"asked 100 + 50 ms, got {delayed * 1000:.0f} ms"


async def test_latency_in_both_directions_adds_up(proxy) -> None:
    reader, writer = await open_via(proxy)
    try:
        base = await fastest_rtt(reader, writer)
        with proxy.toxic(Latency(50), "both"):
            added = await fastest_rtt(reader, writer) - base
    finally:
        writer.close()
    assert 0.100 - EARLY_S <= added <= 0.100 + LOAD_SLACK_S, f"added {added * 1000:.0f} ms"


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


async def test_blackhole_holds_data_until_removed(proxy) -> None:
    reader, writer = await open_via(proxy)
    try:
        with proxy.toxic(Blackhole(), "upstream"):
            writer.write(b"held")
            await writer.drain()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.readexactly(4), 0.3)
        # As after a dead route comes back: what waited arrives, then the rest.
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"held"
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
        base = await fastest_rtt(reader, writer)
        toxics = proxy.apply_profile("wifi")
        added = await fastest_rtt(reader, writer, n=9) - base
    finally:
        writer.close()
    assert toxics == [Latency(20, jitter_ms=10)]
    # 20 +- 10 ms each way: at least 2 x 10 ms, at most 2 x 30 ms and the load
    assert 0.020 - EARLY_S <= added <= 0.060 + LOAD_SLACK_S, f"added {added * 1000:.0f} ms"
    assert "Latency(latency_ms=20" in proxy.describe()
    with pytest.raises(ValueError, match="unknown profile"):
        proxy.apply_profile("dialup")


@pytest.mark.parametrize("toxic", [Blackhole(), Timeout(timeout_ms=0)],
                         ids=["blackhole", "timeout-0"])
async def test_a_held_link_stalls_the_sender_then_delivers_everything(sink, toxic) -> None:
    async with running_proxy(sink.port) as proxy:
        _, writer = await open_via(proxy)
        pusher = Pusher(writer)
        try:
            proxy.add(toxic, "upstream")
            await asyncio.wait_for(pusher.until_stalled(), 30)
            assert pusher.accepted < STALL_LIMIT, (
                f"the sender got rid of {pusher.accepted} bytes into a held link")
            assert not sink.data  # held: nothing got through
            proxy.remove(toxic)
            await pusher.finish(sink)
        finally:
            writer.close()
    assert sink.data == pusher.stream  # nothing lost, nothing reordered


async def test_bandwidth_pushes_back_on_the_sender(sink) -> None:
    rate = 200_000  # bytes per second
    stop = asyncio.Event()
    async with running_proxy(sink.port) as proxy:
        _, writer = await open_via(proxy)
        pusher = Pusher(writer)
        pushing = asyncio.create_task(pusher.until(stop))
        try:
            with proxy.toxic(Bandwidth(rate_kbps=rate / 1000), "upstream"):
                started = time.monotonic()
                await eventually_async(lambda: len(sink.data), lambda n: n >= rate // 2,
                                       timeout=10, description="half a second's worth")
                elapsed = time.monotonic() - started
                accepted = pusher.accepted
                stop.set()
            await asyncio.wait_for(pushing, 10)
            await pusher.finish(sink)
        finally:
            pushing.cancel()
            await asyncio.gather(pushing, return_exceptions=True)
            writer.close()
    assert accepted <= rate * elapsed + STALL_LIMIT, (
        f"the sender got rid of {accepted} bytes in {elapsed:.2f} s at {rate} B/s")
    assert sink.data == pusher.stream


def test_a_failed_start_releases_its_thread_and_loop() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        before = set(threading.enumerate())
        proxy = Proxy("127.0.0.1", port, listen_port=port)
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            proxy.start()
        assert set(threading.enumerate()) == before  # joined before start() raised
        proxy.stop()  # nothing left to stop: a no-op


async def test_down_cuts_connections_it_has_only_just_accepted(proxy) -> None:
    for _ in range(200):  # each takes about a millisecond; the race is rare
        reader, writer = await open_via(proxy)  # no round trip: the proxy may be mid-accept
        try:
            await asyncio.to_thread(proxy.down)
            await assert_cut(reader)
        finally:
            writer.close()
        await asyncio.to_thread(proxy.up)


async def test_down_cuts_a_connection_still_connecting_to_its_target() -> None:
    # A target whose accept queue is full: the kernel drops further SYNs, so the
    # proxy's connect to it stays in progress (for the length of SYN retries).
    with socket.create_server(("127.0.0.1", 0), backlog=0) as target, \
            socket.create_connection(target.getsockname()):
        async with running_proxy(target.getsockname()[1]) as proxy:
            reader, writer = await open_via(proxy)
            try:
                await eventually_async(lambda: proxy.connections_total, lambda n: n == 1,
                                       timeout=5, description="the proxy to accept")
                await asyncio.to_thread(proxy.down)
                await asyncio.to_thread(proxy.up)  # a new listener must not revive it
                await assert_cut(reader)
            finally:
                writer.close()


# -- each toxic on its own, without a proxy ------------------------------------------


class FakeLink:
    """A direction for a toxic on its own: seeded, and a removal the test decides."""

    def __init__(self) -> None:
        self.random = random.Random(1)
        self.removed = asyncio.Event()
        self.holding = asyncio.Event()  # a toxic waits for its removal

    async def until_removed(self, toxic: Toxic) -> None:
        self.holding.set()
        await self.removed.wait()


async def through(toxic: Toxic, chunk: Chunk, link: FakeLink | None = None) -> list[Chunk]:
    """What ``toxic`` passes on of ``chunk``, in order."""
    out: list[Chunk] = []

    async def collect(passed: Chunk) -> None:
        out.append(passed)

    await asyncio.wait_for(toxic.pass_on(chunk, link or FakeLink(), collect), 5)
    return out


def long_ago(data: bytes = PAYLOAD) -> Chunk:
    """A chunk read long before: every delay measured from it has already passed."""
    return Chunk(data, due=time.monotonic() - 60)


async def test_latency_moves_the_chunk_later_and_stacked_latencies_add() -> None:
    chunk = long_ago()
    [once] = await through(Latency(100), chunk)
    [twice] = await through(Latency(100) | Latency(50), chunk)
    assert once == Chunk(PAYLOAD, due=pytest.approx(chunk.due + 0.100))
    assert twice == Chunk(PAYLOAD, due=pytest.approx(chunk.due + 0.150))


async def test_latency_jitter_stays_within_its_bounds() -> None:
    chunk, link = long_ago(), FakeLink()
    added = [(await through(Latency(60, jitter_ms=40), chunk, link))[0].due - chunk.due
             for _ in range(50)]
    assert all(0.020 - 1e-9 <= a <= 0.100 + 1e-9 for a in added)
    assert max(added) - min(added) > 0.010  # not a constant delay


async def test_latency_holds_a_fresh_chunk_for_its_delay() -> None:
    started = time.monotonic()
    await through(Latency(30), Chunk(PAYLOAD, due=started))
    assert time.monotonic() - started >= 0.030 - EARLY_S


async def test_bandwidth_takes_the_time_the_size_needs_and_passes_data_as_is() -> None:
    chunk = long_ago(b"z" * 2000)
    started = time.monotonic()
    out = await through(Bandwidth(rate_kbps=100), chunk)  # 2000 B at 100 kB/s: 20 ms
    assert time.monotonic() - started >= 0.020 - EARLY_S
    assert out == [chunk]  # nothing cut, and no later: a Latency after it counts as before


async def test_slicer_cuts_into_pieces_in_order_and_spaces_them() -> None:
    chunk = long_ago(bytes(range(100)))
    started = time.monotonic()
    out = await through(Slicer(average_size=10, size_variation=3, delay_ms=2), chunk)
    assert b"".join(p.data for p in out) == chunk.data
    assert all(7 <= len(p.data) <= 13 for p in out[:-1]) and 1 <= len(out[-1].data) <= 13
    assert all(p.due == chunk.due for p in out)
    assert time.monotonic() - started >= (len(out) - 1) * 0.002 - EARLY_S


@pytest.mark.parametrize("toxic", [Blackhole(), Timeout(0), Timeout(300)],
                         ids=["blackhole", "timeout-0", "timeout-300"])
async def test_a_holding_toxic_passes_nothing_until_removed(toxic) -> None:
    chunk, link = long_ago(), FakeLink()
    out: list[Chunk] = []

    async def collect(passed: Chunk) -> None:
        out.append(passed)

    holding = asyncio.create_task(toxic.pass_on(chunk, link, collect))
    try:
        await asyncio.wait_for(link.holding.wait(), 5)  # it reached its hold, chunk in hand
        assert not out and not holding.done()
        link.removed.set()
        await asyncio.wait_for(holding, 5)
    finally:
        holding.cancel()
        await asyncio.gather(holding, return_exceptions=True)
    assert out == [chunk]


@pytest.mark.parametrize(("toxic", "cut"), [
    (Latency(10), None),
    (Bandwidth(10), None),
    (Slicer(10), None),
    (Blackhole(), None),
    (Timeout(0), None),  # holds for ever, never closes
    (Timeout(300), Cut(0.3, reset=False)),
    (ResetPeer(), Cut(0.0, reset=True)),
    (ResetPeer(20), Cut(0.02, reset=True)),
], ids=lambda v: v.describe() if isinstance(v, Toxic) else str(v))
def test_which_toxics_cut_the_connection(toxic, cut) -> None:
    assert toxic.cut() == cut


async def test_reset_peer_lets_data_through_until_it_cuts() -> None:
    chunk = long_ago()
    assert await through(ResetPeer(1000), chunk) == [chunk]


async def test_a_chain_applies_its_toxics_in_order_and_flattens() -> None:
    slicer, latency, reset = Slicer(average_size=2), Latency(100), ResetPeer(5)
    chain = slicer | latency | (Bandwidth(1000) | reset)
    assert chain == Chain(slicer, latency, Bandwidth(1000), reset)
    assert chain.parts() == (slicer, latency, Bandwidth(1000), reset)
    assert chain.cut() == Cut(0.005, reset=True)  # its first member's that cuts
    assert chain.describe().startswith("Slicer(average_size=2, ") and " | Latency(" in (
        chain.describe())
    chunk = long_ago(b"abcdef")
    out = await through(chain, chunk)
    assert [p.data for p in out] == [b"ab", b"cd", b"ef"]  # sliced, then each one delayed
    assert all(p.due == pytest.approx(chunk.due + 0.100) for p in out)
    assert Chain().describe() == "none" and await through(Chain(), chunk) == [chunk]


def test_the_budget_of_a_chain_adds_its_latencies() -> None:
    limits = budget(Latency(100, jitter_ms=10) | Latency(50) | Bandwidth(125))
    assert limits.one_way_min_s == pytest.approx(0.140)
    assert limits.one_way_max_s == pytest.approx(0.160)
    assert limits.rate_bytes_per_s == 125_000


async def test_a_chain_is_added_and_removed_member_by_member(proxy) -> None:
    latency, bandwidth = Latency(10), Bandwidth(1000)
    chain = latency | bandwidth
    proxy.add(chain, "both")
    assert proxy.toxics("upstream") == proxy.toxics("downstream") == [latency, bandwidth]
    assert "downstream: Latency(latency_ms=10, jitter_ms=0.0) | Bandwidth(" in proxy.describe()
    proxy.remove(chain)
    assert proxy.toxics("upstream") == proxy.toxics("downstream") == []
    assert proxy.apply_profile("cellular") == proxy.toxics("upstream")


async def test_latency_adds_exactly_its_delay_to_when_a_chunk_is_due() -> None:
    chunk = long_ago()
    [once] = await through(Latency(100), chunk)
    [twice] = await through(Latency(100) | Latency(50), chunk)
    assert once.due - chunk.due == pytest.approx(0.100, abs=1e-9)
    assert twice.due - chunk.due == pytest.approx(0.150, abs=1e-9)
    assert once.data == twice.data == chunk.data


async def test_latency_jitter_reaches_below_and_above_the_latency() -> None:
    chunk, link = long_ago(), FakeLink()
    added = [(await through(Latency(60, jitter_ms=40), chunk, link))[0].due - chunk.due
             for _ in range(50)]
    assert min(added) < 0.060 < max(added)


async def test_jitter_larger_than_the_latency_never_makes_a_chunk_due_earlier() -> None:
    chunk, link = long_ago(), FakeLink()
    added = [(await through(Latency(5, jitter_ms=50), chunk, link))[0].due - chunk.due
             for _ in range(50)]
    assert min(added) == 0.0 and max(added) > 0.005


async def test_latency_forwards_at_once_what_is_due_already() -> None:
    started = time.monotonic()
    await through(Latency(100) | Latency(100), Chunk(PAYLOAD, due=started - 1.0))
    assert time.monotonic() - started < 0.5  # due at -0.8 s: nothing to wait for


def test_slicer_pieces_are_never_empty() -> None:
    rng = random.Random(1)
    assert Slicer(average_size=1).slice(b"abc", rng) == [b"a", b"b", b"c"]
    assert Slicer(average_size=0).slice(b"ab", rng) == [b"a", b"b"]
    pieces = Slicer(average_size=2, size_variation=4).slice(bytes(range(200)), rng)
    assert all(pieces) and b"".join(pieces) == bytes(range(200))


def test_slicer_sizes_vary_both_ways_around_the_average() -> None:
    pieces = Slicer(average_size=10, size_variation=3).slice(bytes(3000), random.Random(1))
    sizes = [len(p) for p in pieces[:-1]]
    assert all(7 <= s <= 13 for s in sizes) and min(sizes) < 10 < max(sizes)
    assert {len(p) for p in Slicer(average_size=10).slice(bytes(100), random.Random(1))} == {10}


async def test_slicer_passes_the_first_piece_on_at_once() -> None:
    started = time.monotonic()
    out = await through(Slicer(average_size=100, delay_ms=500), long_ago())
    assert len(out) == 1 and time.monotonic() - started < 0.5


@dataclasses.dataclass(frozen=True)
class Stamp(Toxic):
    """A toxic of a user's own, as the README shows: a subclass of ``Toxic`` that
    overrides ``pass_on``. It appends its mark to every chunk it passes on."""

    mark: bytes

    async def pass_on(self, chunk: Chunk, link, forward) -> None:
        await forward(Chunk(chunk.data + self.mark, chunk.due))


async def test_a_toxic_of_ones_own_runs_and_toxics_added_one_by_one_apply_in_that_order(
        proxy) -> None:
    first, second = Stamp(b"1"), Stamp(b"2")
    proxy.add(first, "upstream")
    proxy.add(second, "upstream")
    assert proxy.toxics("upstream") == [first, second] and proxy.toxics("downstream") == []
    assert "Stamp(mark=b'1') | Stamp(mark=b'2')" in proxy.describe()
    reader, writer = await open_via(proxy)
    try:
        writer.write(b"x")
        await writer.drain()
        # The echo server sends back what reached it: stamped by the first, then the second.
        assert await asyncio.wait_for(reader.readexactly(3), 5) == b"x12"
        proxy.remove(first)
        writer.write(b"y")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"y2"
    finally:
        writer.close()
