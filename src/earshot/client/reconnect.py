"""When and how often to try again: a tenacity policy.

Exponential backoff with jitter, bounded by a number of attempts and a
deadline, retrying only what another attempt can fix: a connection that
failed or was lost, and a server that answered WAIT.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from earshot.client.errors import ConnectError, ConnectionLost, ServerBusy

RETRYABLE = (ConnectError, ConnectionLost, ServerBusy)


@dataclass(frozen=True)
class ReconnectPolicy:
    attempts: int = 6
    deadline: float = 30.0  # seconds, over all attempts
    initial: float = 0.2  # first backoff
    maximum: float = 5.0  # backoff cap
    jitter: float = 0.2  # up to this many seconds added at random

    def retrying(self, sleep: Callable[[float], Awaitable[None]] | None = None
                 ) -> AsyncRetrying:
        """The policy as tenacity's retrying; ``sleep`` waits out each backoff
        (the client's own, so that close() cuts a backoff short)."""
        return AsyncRetrying(
            stop=stop_after_attempt(self.attempts) | stop_after_delay(self.deadline),
            wait=wait_exponential_jitter(
                multiplier=self.initial, max=self.maximum, jitter=self.jitter
            ),
            retry=retry_if_exception_type(RETRYABLE),
            reraise=True,
            **({"sleep": sleep} if sleep is not None else {}),
        )
