"""Which clients of a class are alive: weak references under a lock.

The registry never keeps a client alive (weak references), and is safe to read
from any thread (a lock), so a fixture can ask what is still open and close it.
"""

from __future__ import annotations

import threading
import weakref
from typing import Generic, Protocol, TypeVar


class Closable(Protocol):
    @property
    def closed(self) -> bool: ...


C = TypeVar("C", bound=Closable)


class Registry(Generic[C]):
    def __init__(self) -> None:
        self._members: weakref.WeakSet[C] = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, client: C) -> None:
        with self._lock:
            self._members.add(client)

    def discard(self, client: C) -> None:
        with self._lock:
            self._members.discard(client)

    def open(self) -> list[C]:
        """The members not yet closed."""
        with self._lock:
            return [c for c in self._members if not c.closed]
