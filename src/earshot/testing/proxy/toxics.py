"""The toxics: small objects that each do one thing to the data of one direction.

Every toxic is a stage, as in Toxiproxy: ``pass_on(chunk, link, forward)`` takes
one chunk, does its thing (waits, cuts it up, holds it) and hands the result to
``forward``, the rest of the chain. Toxics combine with ``|`` into a
:class:`Chain`, the way tenacity's policies do (``stop_after_attempt(3) |
stop_after_delay(10)``); a direction's toxics are the chain of them in the
order they were added, and the proxy only ever calls the chain.

A chunk carries ``due``: the earliest time it may go on, first the instant the
proxy read it. Latency waits until ``due`` plus its delay and moves ``due``
there, so a later Latency counts from that point and stacked latencies add up
(100 ms and 50 ms give 150 ms, as in Toxiproxy). Waiting for a point in time
rather than for a duration keeps latency pipelined: a chunk read while the one
before it waited is not delayed twice. The other toxics take their time
without moving ``due``, as Toxiproxy's do.

Toxics hold no state of their own (profiles share their instances between
proxies and directions), so one instance may sit on any number of links.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Chunk:
    """Data on its way through one direction."""

    data: bytes
    due: float  # time.monotonic() before which it may not go on; Latency moves it


Forward = Callable[[Chunk], Awaitable[None]]


class Link(Protocol):
    """What a toxic may ask of the direction it acts on."""

    @property
    def random(self) -> random.Random: ...

    async def until_removed(self, toxic: Toxic) -> None:
        """Return once ``toxic`` (this very instance) is no longer on this direction."""
        ...


@dataclass(frozen=True)
class Cut:
    """A toxic's order to end every connection it is on, ``after_s`` after it meets it."""

    after_s: float
    reset: bool  # True: a TCP RST; False: an ordinary close


@dataclass(frozen=True)
class Toxic:
    """Base of all toxics. Left alone, a toxic forwards data as it is and cuts nothing."""

    async def pass_on(self, chunk: Chunk, link: Link, forward: Forward) -> None:
        """Do this toxic's thing to ``chunk`` and hand the outcome on to ``forward``."""
        await forward(chunk)

    def cut(self) -> Cut | None:
        """When and how this toxic ends the connections it is on; None: it does not."""
        return None

    def parts(self) -> tuple[Toxic, ...]:
        """The single toxics this one is made of (a chain's members; else itself)."""
        return (self,)

    def __or__(self, other: Toxic) -> Chain:
        """This toxic, then ``other``, on the same direction."""
        if not isinstance(other, Toxic):
            return NotImplemented
        return Chain(self, other)

    def describe(self) -> str:
        args = ", ".join(f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self))
        return f"{type(self).__name__}({args})"


@dataclass(frozen=True, init=False)
class Chain(Toxic):
    """Toxics one after another: each hands what it passes on to the next. Nested
    chains flatten, so ``a | b | c`` is ``Chain(a, b, c)``."""

    toxics: tuple[Toxic, ...]

    def __init__(self, *toxics: Toxic) -> None:
        object.__setattr__(self, "toxics", tuple(p for t in toxics for p in t.parts()))

    async def pass_on(self, chunk: Chunk, link: Link, forward: Forward) -> None:
        # Built from the end: each stage's forward is the stage after it.
        for toxic in reversed(self.toxics):
            forward = _stage(toxic, link, forward)
        await forward(chunk)

    def cut(self) -> Cut | None:
        """The first member's that cuts: one cut per connection is all it takes."""
        return next((c for t in self.toxics if (c := t.cut()) is not None), None)

    def parts(self) -> tuple[Toxic, ...]:
        return self.toxics

    def __iter__(self) -> Iterator[Toxic]:  # so budget(a | b) sees both
        return iter(self.toxics)

    def __len__(self) -> int:
        return len(self.toxics)

    def describe(self) -> str:
        return " | ".join(t.describe() for t in self.toxics) or "none"


def _stage(toxic: Toxic, link: Link, forward: Forward) -> Forward:
    async def stage(chunk: Chunk) -> None:
        await toxic.pass_on(chunk, link, forward)
    return stage


@dataclass(frozen=True)
class Latency(Toxic):
    """Delay every chunk by ``latency_ms`` plus or minus up to ``jitter_ms``; stacked
    latencies add up."""

    latency_ms: float
    jitter_ms: float = 0.0

    async def pass_on(self, chunk: Chunk, link: Link, forward: Forward) -> None:
        jitter = link.random.uniform(-self.jitter_ms, self.jitter_ms)
        due = chunk.due + max(0.0, self.latency_ms + jitter) / 1000
        await _sleep_until(due)
        await forward(dataclasses.replace(chunk, due=due))


@dataclass(frozen=True)
class Bandwidth(Toxic):
    """Limit the rate to ``rate_kbps`` kilobytes per second: each chunk takes the time
    its size needs at that rate before it goes on."""

    rate_kbps: float

    async def pass_on(self, chunk: Chunk, link: Link, forward: Forward) -> None:
        # The pump passes one chunk at a time, so the time taken here is the link's:
        # the next chunk starts when this one has gone.
        await asyncio.sleep(len(chunk.data) / (self.rate_kbps * 1000))  # the toxic's rate
        await forward(chunk)


@dataclass(frozen=True)
class Slicer(Toxic):
    """Cut chunks into pieces of about ``average_size`` bytes, ``delay_ms`` apart."""

    average_size: int
    size_variation: int = 0
    delay_ms: float = 0.0

    def slice(self, data: bytes, rng: random.Random) -> list[bytes]:
        """``data`` in pieces of ``average_size`` +- ``size_variation`` bytes (at least 1)."""
        pieces, start = [], 0
        while start < len(data):
            size = max(1, self.average_size + rng.randint(-self.size_variation,
                                                          self.size_variation))
            pieces.append(data[start:start + size])
            start += size
        return pieces

    async def pass_on(self, chunk: Chunk, link: Link, forward: Forward) -> None:
        for i, piece in enumerate(self.slice(chunk.data, link.random)):
            if i and self.delay_ms:
                await asyncio.sleep(self.delay_ms / 1000)  # the toxic's delay between pieces
            await forward(dataclasses.replace(chunk, data=piece))


@dataclass(frozen=True)
class Blackhole(Toxic):
    """Let nothing through, as a dead route does: the connection stays open, the
    sender stalls once the buffers are full, and removing the toxic delivers what
    waited, in order (TCP retransmits; it never loses bytes mid-stream)."""

    async def pass_on(self, chunk: Chunk, link: Link, forward: Forward) -> None:
        # The chunk in hand waits here; the pump takes no other, its buffer fills
        # behind it and the sender stalls.
        await link.until_removed(self)
        await forward(chunk)


@dataclass(frozen=True)
class Timeout(Blackhole):
    """Hold all data (the sender stalls once the buffers are full); close the connection
    after ``timeout_ms`` (0: never close, and removing the toxic delivers what waited)."""

    timeout_ms: float

    def cut(self) -> Cut | None:
        return Cut(self.timeout_ms / 1000, reset=False) if self.timeout_ms else None


@dataclass(frozen=True)
class ResetPeer(Toxic):
    """Reset the connection (TCP RST) ``timeout_ms`` after the toxic meets it: after
    it is added, or after the connection opens with it in place. Data passes until then."""

    timeout_ms: float = 0.0

    def cut(self) -> Cut | None:
        return Cut(self.timeout_ms / 1000, reset=True)


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)  # the toxic's delay: this is the injected latency


# Named conditions: one-way values, applied to each direction.
PROFILES: dict[str, list[Toxic]] = {
    "lan": [Latency(1, jitter_ms=0.5)],
    "wifi": [Latency(20, jitter_ms=10)],
    "cellular": [Latency(150, jitter_ms=50), Bandwidth(125)],  # 1 Mbit/s
    "intercontinental": [Latency(300, jitter_ms=30)],
}
