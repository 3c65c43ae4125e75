"""Wait for a condition with a deadline, never for a fixed time.

``eventually`` polls a probe with tenacity (exponential backoff with a small
cap) until a predicate holds, and on timeout says what was awaited, for how
long, how many polls it took, and the last value seen.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not hold in time; the text says what and what was last seen."""


class _NotYet(Exception):
    def __init__(self, value: Any) -> None:
        super().__init__(repr(value))
        self.value = value


def _policy(timeout: float, max_interval: float) -> dict[str, Any]:
    backoff = wait_exponential(multiplier=0.01, max=max_interval)

    def wait(state: RetryCallState) -> float:
        # Never sleep past the deadline: the last poll happens right at it.
        remaining = timeout - (state.seconds_since_start or 0.0)
        return max(0.0, min(backoff(state), remaining))

    return {
        "stop": stop_after_delay(timeout),
        "wait": wait,
        "retry": retry_if_exception_type((_NotYet, AssertionError)),
    }


class _Tracker:
    """Counts polls and keeps the last value (or AssertionError) a probe gave."""

    def __init__(self, predicate: Callable[[Any], bool]) -> None:
        self.predicate = predicate
        self.started = time.monotonic()
        self.polls = 0
        self.last: Any = None

    def judge(self, value: Any) -> None:
        self.last = value
        if not self.predicate(value):
            raise _NotYet(value)

    def __enter__(self) -> _Tracker:
        self.polls += 1
        return self

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, AssertionError):  # the probe's own "not yet"
            self.last = exc

    def failure(self, description: str, timeout: float) -> WaitTimeout:
        return WaitTimeout(
            f"timed out after {time.monotonic() - self.started:.2f} s (limit {timeout:g} s, "
            f"{self.polls} polls) waiting for {description}; last seen: {self.last!r}"
        )


def eventually(
    probe: Callable[[], T],
    predicate: Callable[[T], bool] = bool,
    *,
    timeout: float = 10.0,
    description: str = "a condition",
    max_interval: float = 0.25,
) -> T:
    """Poll ``probe()`` until ``predicate(value)`` holds; return that value.

    A probe that raises AssertionError counts as 'not yet'; other exceptions
    propagate at once.
    """
    tracker = _Tracker(predicate)
    try:
        for attempt in Retrying(**_policy(timeout, max_interval)):
            with attempt, tracker:
                tracker.judge(probe())
    except RetryError:
        raise tracker.failure(description, timeout) from None
    return tracker.last  # type: ignore[return-value]


async def eventually_async(
    probe: Callable[[], Awaitable[T] | T],
    predicate: Callable[[T], bool] = bool,
    *,
    timeout: float = 10.0,
    description: str = "a condition",
    max_interval: float = 0.25,
) -> T:
    """``eventually`` inside an event loop: polls without blocking it.

    ``probe`` may be a coroutine function or a plain function.
    """
    tracker = _Tracker(predicate)
    try:
        async for attempt in AsyncRetrying(**_policy(timeout, max_interval), sleep=asyncio.sleep):
            with attempt, tracker:
                value = probe()
                tracker.judge(await value if inspect.isawaitable(value) else value)
    except RetryError:
        raise tracker.failure(description, timeout) from None
    return tracker.last  # type: ignore[return-value]



# -- named waits -------------------------------------------------------------------
# Each has an async twin (``..._async``) for async tests: a sync wait there would
# block the event loop, and with it the very clients whose progress it awaits.


def _sessions_match(server: Any, count: int,
                    uids: set[str] | None) -> Callable[[dict[str, Any]], bool]:
    def check(status: dict[str, Any]) -> bool:
        if uids is None:
            return len(server.own_sessions(status)) == count
        return len([s for s in status["sessions"] if s["uid"] in uids]) == count

    return check


def _sessions_what(server: Any, count: int, uids: set[str] | None) -> str:
    if uids is not None:
        among = f" among uids {sorted(uids)}"
    else:
        among = " of this run's own" if getattr(server, "shared", False) else ""
    return f"{count} session(s){among} in the server's /status"


def wait_for_sessions(
    server: Any, count: int, timeout: float = 10.0, headers: Mapping[str, str] | None = None,
    *, uids: set[str] | None = None,
) -> dict[str, Any]:
    """Until the server's /status lists exactly ``count`` sessions: of ``uids`` if
    given, else of this run's own on a shared server (a deployment), else all."""
    return eventually(lambda: server.server_status(headers), _sessions_match(server, count, uids),
                      timeout=timeout, description=_sessions_what(server, count, uids))


async def wait_for_sessions_async(
    server: Any, count: int, timeout: float = 10.0, headers: Mapping[str, str] | None = None,
    *, uids: set[str] | None = None,
) -> dict[str, Any]:
    """``wait_for_sessions`` inside an event loop (each /status call on a thread)."""
    return await eventually_async(lambda: asyncio.to_thread(server.server_status, headers),
                                  _sessions_match(server, count, uids), timeout=timeout,
                                  description=_sessions_what(server, count, uids))


def wait_for_state(client: Any, state: Any, timeout: float = 10.0) -> Any:
    """Until ``client.state`` is ``state`` (either client; the sync one from any thread)."""
    return eventually(lambda: client.state, lambda seen: seen is state, timeout=timeout,
                      description=f"client {client.client_id[:12]} to reach {state.name}")


async def wait_for_state_async(client: Any, state: Any, timeout: float = 10.0) -> Any:
    """``wait_for_state`` inside an event loop."""
    return await eventually_async(lambda: client.state, lambda seen: seen is state,
                                  timeout=timeout,
                                  description=f"client {client.client_id[:12]} to reach "
                                              f"{state.name}")


def transcript_text(client: Any) -> str:
    """Completed segments plus the current partial, as one string."""
    completed = client.transcript
    segments = completed.completed if hasattr(completed, "completed") else completed
    parts = [s.text.strip() for s in segments]
    if client.partial is not None:
        parts.append(client.partial.text.strip())
    return " ".join(parts)


def _has(contains: str | None, min_words: int | None) -> Callable[[str], bool]:
    def check(text: str) -> bool:
        if contains is not None and contains.lower() not in text.lower():
            return False
        return min_words is None or len(text.split()) >= min_words

    return check


def _what(contains: str | None, min_words: int | None) -> str:
    wanted = [f"{contains!r}" if contains else "", f"{min_words}+ words" if min_words else ""]
    return "a transcript with " + " and ".join(w for w in wanted if w)


def wait_for_transcript(client: Any, *, contains: str | None = None,
                        min_words: int | None = None, timeout: float = 30.0) -> str:
    """Until the client's text (completed and partial) has ``contains`` / ``min_words``."""
    return eventually(lambda: transcript_text(client), _has(contains, min_words),
                      timeout=timeout, description=_what(contains, min_words))


async def wait_for_transcript_async(client: Any, *, contains: str | None = None,
                                    min_words: int | None = None,
                                    timeout: float = 30.0) -> str:
    """``wait_for_transcript`` inside an event loop (the async client)."""
    return await eventually_async(lambda: transcript_text(client), _has(contains, min_words),
                                  timeout=timeout, description=_what(contains, min_words))


def wait_for_container_status(container: Any, status: str, timeout: float = 15.0) -> str:
    """Until Docker reports the container ``status`` (running, paused, exited, ...)."""

    def probe() -> str:
        wrapped = container.get_wrapped_container()
        wrapped.reload()
        return wrapped.status

    return eventually(probe, lambda seen: seen == status, timeout=timeout,
                      description=f"container status {status!r}")


async def wait_for_container_status_async(container: Any, status: str,
                                          timeout: float = 15.0) -> str:
    """``wait_for_container_status`` inside an event loop."""
    return await asyncio.to_thread(wait_for_container_status, container, status, timeout)
