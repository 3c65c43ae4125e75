"""A small asyncio helper that the server and the client share."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


async def until_either(awaited: Coroutine[Any, Any, Any], task: asyncio.Task[Any],
                       timeout: float | None) -> None:
    """Until ``awaited`` completes, ``task`` ends or ``timeout`` passes, whichever is
    first (no error on the timeout: the caller looks at what happened). ``awaited``
    is the helper's and is cancelled if unfinished; ``task`` is the caller's and is
    left running."""
    waiter = asyncio.ensure_future(awaited)
    try:
        await asyncio.wait([waiter, task], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
