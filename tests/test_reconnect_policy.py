"""ReconnectPolicy as tenacity runs it: what is retried, how often, how long apart.

The backoffs go to a recorded ``sleep`` (the client passes its own), so no test
here waits out a backoff; one test runs the default sleep with millisecond
backoffs to show the policy also works without one.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from earshot.client import (
    ClientClosed,
    ConnectError,
    ConnectionLost,
    ReconnectPolicy,
    ServerBusy,
    ServerRejected,
)

GUARD = 20  # an attempt function gives up after this many calls: a policy must stop first


class Attempts:
    """An operation that fails with ``error()`` until ``succeed_on`` (if ever)."""

    def __init__(self, error: Callable[[], Exception], succeed_on: int | None = None) -> None:
        self.error, self.succeed_on, self.calls = error, succeed_on, 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls == self.succeed_on:
            return "open"
        if self.calls >= GUARD:
            raise AssertionError(f"still retrying after {self.calls} attempts")
        raise self.error()


async def run(policy: ReconnectPolicy, operation: Attempts, sleeps: list[float]) -> str:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async for attempt in policy.retrying(sleep=sleep):
        with attempt:
            return await operation()
    raise AssertionError("tenacity ended without an outcome")


@pytest.mark.parametrize("error", [
    lambda: ConnectError("refused"),
    lambda: ConnectionLost("the server went away", 1006),
    lambda: ServerBusy(1.5),
], ids=["connect error", "connection lost", "server busy"])
async def test_what_another_attempt_can_fix_is_retried_until_it_works(
        error: Callable[[], Exception]) -> None:
    operation, sleeps = Attempts(error, succeed_on=3), []
    assert await run(ReconnectPolicy(attempts=5, jitter=0), operation, sleeps) == "open"
    assert operation.calls == 3 and len(sleeps) == 2


async def test_after_its_last_attempt_the_policy_raises_the_last_error_itself() -> None:
    operation, sleeps = Attempts(lambda: ConnectError("refused")), []
    with pytest.raises(ConnectError, match="refused"):  # not tenacity's RetryError
        await run(ReconnectPolicy(attempts=4, deadline=60), operation, sleeps)
    assert operation.calls == 4 and len(sleeps) == 3


@pytest.mark.parametrize("error", [
    lambda: ClientClosed(),  # the owner asked for the end
    lambda: ServerRejected("bad config", 1008),
    lambda: ValueError("a bug"),
], ids=["client closed", "server rejected", "a bug"])
async def test_what_another_attempt_cannot_fix_is_raised_at_once(
        error: Callable[[], Exception]) -> None:
    operation, sleeps = Attempts(error), []
    expected = type(error())
    with pytest.raises(expected):
        await run(ReconnectPolicy(attempts=5), operation, sleeps)
    assert operation.calls == 1 and sleeps == []


async def test_the_deadline_ends_the_retries_before_the_attempts_run_out() -> None:
    operation, sleeps = Attempts(lambda: ConnectError("refused")), []
    with pytest.raises(ConnectError):
        await run(ReconnectPolicy(attempts=10, deadline=0), operation, sleeps)
    assert operation.calls == 1  # the deadline had passed when the first attempt failed


async def test_backoff_doubles_from_its_first_value_up_to_its_cap() -> None:
    operation, sleeps = Attempts(lambda: ConnectError("refused")), []
    policy = ReconnectPolicy(attempts=7, deadline=60, initial=0.1, maximum=0.5, jitter=0)
    with pytest.raises(ConnectError):
        await run(policy, operation, sleeps)
    assert sleeps == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5, 0.5])


async def test_jitter_adds_up_to_its_amount_and_never_passes_the_cap() -> None:
    policy = ReconnectPolicy(attempts=6, deadline=60, initial=0.1, maximum=1.0, jitter=0.05)
    extra = []
    for _ in range(10):
        operation, sleeps = Attempts(lambda: ConnectError("refused")), []
        with pytest.raises(ConnectError):
            await run(policy, operation, sleeps)
        bases = [0.1, 0.2, 0.4, 0.8, 1.0]
        assert all(s <= 1.0 for s in sleeps)
        extra += [s - base for s, base in zip(sleeps[:4], bases, strict=False)]
    assert all(0 <= e <= 0.05 for e in extra)
    assert max(extra) > 0  # there is jitter: 40 draws are not all zero


async def test_without_a_sleep_of_its_own_the_policy_waits_with_asyncio() -> None:
    operation = Attempts(lambda: ConnectError("refused"), succeed_on=3)
    policy = ReconnectPolicy(attempts=3, initial=0.001, maximum=0.001, jitter=0)
    async for attempt in policy.retrying():
        with attempt:
            result = await operation()
    assert result == "open" and operation.calls == 3
