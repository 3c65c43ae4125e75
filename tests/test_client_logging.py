"""A malformed server message is logged (with what was wrong) and counted, never fatal.

The server is a stand-in, named as such: the real one never sends garbage, so
this one does, between SERVER_READY and a normal final transcript.
"""

from __future__ import annotations

import json
import logging

import pytest
from websockets.asyncio.server import ServerConnection, serve

from earshot.client import AsyncTranscriptionClient

# what each bad message is, as the client's log line must say it
JUNK = {
    "not json": "not valid JSON",
    json.dumps({"uid": "{uid}", "segments": 5}): "'segments' is not a list",
    "[" * 100_000 + "]" * 100_000: "nested too deeply",
}


async def test_each_malformed_server_message_is_logged_with_what_was_wrong(
        caplog: pytest.LogCaptureFixture) -> None:
    async def handler(ws: ServerConnection) -> None:
        uid = json.loads(await ws.recv())["uid"]
        await ws.send(json.dumps({"uid": uid, "message": "SERVER_READY", "backend": "x"}))
        for junk in JUNK:
            await ws.send(junk.replace("{uid}", uid))
        await ws.recv()  # END_OF_AUDIO
        segment = {"start": "0.000", "end": "1.000", "text": "hi", "completed": True}
        await ws.send(json.dumps({"uid": uid, "segments": [segment]}))
        await ws.send(json.dumps({"uid": uid, "message": "END_OF_TRANSCRIPT"}))
        await ws.close()

    caplog.set_level(logging.WARNING, logger="earshot.client")
    async with serve(handler, "127.0.0.1", 0) as fake:
        url = f"ws://127.0.0.1:{fake.sockets[0].getsockname()[1]}"
        async with AsyncTranscriptionClient(url) as client:
            segments = await client.finish(timeout=5)
    assert [s.text for s in segments] == ["hi"]  # not fatal
    assert client.malformed_messages == len(JUNK)  # counted
    logged = [r for r in caplog.records if r.name == "earshot.client"]
    assert [r.levelno for r in logged] == [logging.WARNING] * len(JUNK), logged
    for record, says in zip(logged, JUNK.values(), strict=True):
        assert "malformed server message" in record.getMessage()
        assert says in record.getMessage(), record.getMessage()
