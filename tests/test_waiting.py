"""eventually(): bounded polling that says what it waited for and what it saw."""

from __future__ import annotations

import itertools
import time

import pytest

from earshot.testing.waiting import (
    WaitTimeout,
    eventually,
    eventually_async,
)


def test_returns_the_first_value_that_satisfies() -> None:
    counter = itertools.count()
    assert eventually(lambda: next(counter), lambda n: n >= 3, timeout=5) == 3


def test_an_assertion_in_the_probe_means_not_yet() -> None:
    counter = itertools.count()

    def probe() -> int:
        n = next(counter)
        assert n >= 2, "too small"
        return n

    assert eventually(probe, timeout=5) == 2


def test_timeout_says_what_how_long_how_often_and_what_was_seen() -> None:
    polled_at: list[float] = []

    def probe() -> str:
        polled_at.append(time.monotonic())
        return "still 41"

    started = time.monotonic()
    with pytest.raises(WaitTimeout) as caught:
        eventually(probe, lambda v: v == "42", timeout=1.0, description="the answer")
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert "waiting for the answer" in message and "limit 1 s" in message
    assert "last seen: 'still 41'" in message
    polls = int(message.split(" polls")[0].rsplit(", ", 1)[1])
    assert polls == len(polled_at) >= 3
    # Never gives up early; the last poll is right at the deadline (the backoff
    # is cut to what is left, never past it); and it gives up then. Only the
    # end's bound allows for a loaded machine's scheduling.
    assert elapsed >= 1.0
    assert polled_at[-1] - started >= 1.0 - 0.002
    assert elapsed <= 1.0 + 0.25, f"gave up {elapsed - 1.0:.3f} s after its deadline"


def test_other_exceptions_propagate_at_once() -> None:
    with pytest.raises(ZeroDivisionError):
        eventually(lambda: 1 / 0, timeout=5)


async def test_async_variant_takes_plain_and_async_probes() -> None:
    counter = itertools.count()

    async def async_probe() -> int:
        return next(counter)

    assert await eventually_async(async_probe, lambda n: n >= 2, timeout=5) == 2
    assert await eventually_async(lambda: "x", timeout=5) == "x"
    with pytest.raises(WaitTimeout, match="last seen: 0"):
        await eventually_async(lambda: 0, timeout=0.2, description="non-zero")
