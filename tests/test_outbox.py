"""The per-session outbox: order kept, unsent segments updates coalesced."""

from __future__ import annotations

import asyncio

from earshot.server.outbox import Outbox


class SlowSocket:
    """Records what was sent; each send waits until the test lets it through."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.gate = asyncio.Event()

    async def send(self, text: str) -> None:
        await self.gate.wait()
        self.sent.append(text)


async def test_unsent_segment_updates_coalesce_and_order_is_kept() -> None:
    outbox, ws = Outbox(), SlowSocket()
    sender = asyncio.create_task(outbox.run(ws))  # type: ignore[arg-type]
    try:
        outbox.put("language")
        outbox.put("seg-1", "segments")
        outbox.put("seg-2", "segments")  # replaces seg-1: neither has left yet
        outbox.put("end")
        ws.gate.set()
        await asyncio.wait_for(outbox.flushed(), 5)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    assert ws.sent == ["language", "seg-2", "end"]


async def test_flushed_waits_for_the_last_send() -> None:
    outbox, ws = Outbox(), SlowSocket()
    sender = asyncio.create_task(outbox.run(ws))  # type: ignore[arg-type]
    try:
        outbox.put("a")
        flushed = asyncio.create_task(outbox.flushed())
        await asyncio.wait([flushed], timeout=0.05)
        assert not flushed.done() and ws.sent == []
        ws.gate.set()
        await asyncio.wait_for(flushed, 5)
        assert ws.sent == ["a"]
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
