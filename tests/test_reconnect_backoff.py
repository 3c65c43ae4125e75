"""ReconnectPolicy: exponential backoff with jitter, up to its attempts.

Nothing listens on the port (bound, never listening), so every attempt is
refused at once and the time between attempts is the backoff alone.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator

import pytest

from earshot.client import AsyncTranscriptionClient, ConnectError, ConnectionState, ReconnectPolicy


@pytest.fixture
def refusing_url() -> Iterator[str]:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        yield f"ws://127.0.0.1:{unused.getsockname()[1]}"


async def backoffs(url: str, policy: ReconnectPolicy) -> list[float]:
    """The sleeps the policy asked for between a client's refused attempts."""
    asked: list[float] = []

    async def recorded(seconds: float) -> None:
        asked.append(seconds)

    client = AsyncTranscriptionClient(url)
    try:
        with pytest.raises(ConnectError):
            async for attempt in policy.retrying(sleep=recorded):
                with attempt:
                    await client.connect()  # one attempt: this client has no policy
    finally:
        await client.close()
    assert sum(t.new is ConnectionState.CONNECTING for t in client.history) == policy.attempts
    return asked


async def test_the_backoff_doubles_up_to_its_maximum(refusing_url: str) -> None:
    policy = ReconnectPolicy(attempts=6, deadline=60, initial=0.1, maximum=0.4, jitter=0)
    assert await backoffs(refusing_url, policy) == pytest.approx([0.1, 0.2, 0.4, 0.4, 0.4])


async def test_the_jitter_adds_up_to_its_amount_to_each_backoff(refusing_url: str) -> None:
    policy = ReconnectPolicy(attempts=11, deadline=60, initial=0.1, maximum=0.4, jitter=0.05)
    asked = await backoffs(refusing_url, policy)
    base = [0.1, 0.2] + [0.4] * 8
    extra = [a - b for a, b in zip(asked, base, strict=True)]
    assert all(-1e-9 <= e <= 0.05 + 1e-9 for e in extra), asked
    assert len({round(e, 9) for e in extra}) > 1, asked  # random, not one fixed amount


async def test_the_client_waits_out_each_backoff_between_attempts(refusing_url: str) -> None:
    policy = ReconnectPolicy(attempts=4, deadline=60, initial=0.2, maximum=0.8, jitter=0)
    client = AsyncTranscriptionClient(refusing_url, reconnect=policy)
    try:
        with pytest.raises(ConnectError):
            await client.connect()
    finally:
        await client.close()
    starts = [t.at for t in client.history if t.new is ConnectionState.CONNECTING]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(gaps) == 3
    for gap, backoff in zip(gaps, [0.2, 0.4, 0.8], strict=True):
        assert backoff - 0.02 <= gap < backoff + 0.3, gaps
