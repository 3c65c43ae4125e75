"""wait_for_transcript's ``min_words=``: until the client's text has that many words;
on timeout it says what it waited for and what it saw. The real server in this
process with the real model, and the real client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from earshot.client import AsyncTranscriptionClient
from earshot.server.app import Server
from earshot.server.config import ServerConfig
from earshot.server.engine import Transcriber
from earshot.testing.waiting import WaitTimeout, transcript_text, wait_for_transcript_async


@pytest.fixture(scope="module")
def transcriber() -> Transcriber:
    return Transcriber(device="cpu", workers=1)


@pytest.fixture
async def server(transcriber: Transcriber) -> AsyncIterator[Server]:
    server = Server(ServerConfig(port=0, workers=1), transcriber)
    await server.start()
    try:
        yield server
    finally:
        await server.drain()


async def test_wait_for_transcript_min_words(server: Server, jfk: np.ndarray) -> None:
    async with AsyncTranscriptionClient(f"ws://127.0.0.1:{server.port}") as client:
        streaming = asyncio.create_task(client.stream(jfk, realtime=True))
        try:
            text = await wait_for_transcript_async(client, min_words=5, timeout=30)
            assert len(text.split()) >= 5, text
            assert not streaming.done()  # seen while the speech was still coming
        finally:
            await streaming
        await client.finish(timeout=30)
        words = len(transcript_text(client).split())
        with pytest.raises(WaitTimeout, match=rf"{words + 1}\+ words") as caught:
            await wait_for_transcript_async(client, min_words=words + 1, timeout=1)
        assert "ask not what your country" in str(caught.value).lower()  # what it saw
