"""The client's connection state machine: explicit states, an explicit table.

DISCONNECTED -> CONNECTING -> CONNECTED -> READY -> CLOSING -> DISCONNECTED,
plus the ways out of each state when something fails. A transition that is
not in the table is a bug and raises. Every transition is recorded with its
time; changes can be awaited and observed through callbacks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

log = logging.getLogger("earshot.client")


class ConnectionState(Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"  # opening the socket and the WebSocket handshake
    CONNECTED = "connected"  # socket open, config sent, waiting for SERVER_READY
    READY = "ready"  # the server accepted the config: audio may flow
    CLOSING = "closing"  # closing handshake under way


S = ConnectionState
TRANSITIONS: dict[ConnectionState, frozenset[ConnectionState]] = {
    S.DISCONNECTED: frozenset({S.CONNECTING}),
    # failed to open / refused, or close() while opening
    S.CONNECTING: frozenset({S.CONNECTED, S.DISCONNECTED, S.CLOSING}),
    # SERVER_READY, or WAIT/ERROR/close() before it, or the socket died
    S.CONNECTED: frozenset({S.READY, S.CLOSING, S.DISCONNECTED}),
    # close() or the server closing, or the socket died
    S.READY: frozenset({S.CLOSING, S.DISCONNECTED}),
    S.CLOSING: frozenset({S.DISCONNECTED}),
}


class IllegalTransition(RuntimeError):
    """A transition the table does not allow: a bug in the caller."""


@dataclass(frozen=True)
class Transition:
    old: ConnectionState
    new: ConnectionState
    at: float  # time.monotonic()
    reason: str = ""


Listener = Callable[[Transition], object]


class StateMachine:
    """Current state, history, awaitable changes and listeners. Loop-bound."""

    def __init__(self) -> None:
        self.state = S.DISCONNECTED
        self.history: list[Transition] = []
        self._listeners: list[Listener] = []
        self._changed = asyncio.Event()  # set, then replaced, at every transition

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def move(self, new: ConnectionState, reason: str = "") -> Transition:
        if new not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"{self.state.name} -> {new.name} is not allowed ({reason})")
        transition = Transition(self.state, new, time.monotonic(), reason)
        self.state = new
        self.history.append(transition)
        for listener in list(self._listeners):
            try:
                listener(transition)
            except Exception:  # a listener's bug must not break the client
                log.exception("state listener failed on %s", transition)
        self._changed.set()
        self._changed = asyncio.Event()
        return transition

    async def wait_for(self, state: ConnectionState, timeout: float) -> None:
        """Until the state is ``state``; TimeoutError names what was seen."""
        try:
            async with asyncio.timeout(timeout):
                while self.state is not state:
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(
                f"state {state.name} not reached within {timeout:g} s; "
                f"still {self.state.name}"
            ) from None
