"""One connection of a client: its socket, its receive task, the protocol's side of it.

The client opens a :class:`Link` per session. The link owns the socket and the
task that receives from it, and releases both in :meth:`Link.close`, each step
bounded. Every frame goes through the session's ``ClientConnection``: what the
client sends is made by it (so nothing leaves out of order), and what the
server sends is checked and folded by it before the client's handler hears
what it meant. The client keeps its state machine; the link only reports.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection as WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from earshot.aio import until_either
from earshot.client.errors import ClientError, ConnectError, ConnectionLost, ended_error
from earshot.protocol import (
    ClientConfig,
    ClientConnection,
    InvalidState,
    ProtocolError,
    ServerEvent,
)

Handler = Callable[["Link", ServerEvent], Awaitable[None]]
log = logging.getLogger("earshot.client")


class Link:
    def __init__(
        self,
        ws: WebSocket,
        protocol: ClientConnection,
        handle: Handler,
        on_malformed: Callable[[Exception], None],
        on_gone: Callable[[Link], None],
    ) -> None:
        """Start receiving: ``handle`` hears each server frame's meaning,
        ``on_malformed`` each frame the protocol refused, ``on_gone`` the end."""
        self.ws = ws
        self.protocol = protocol
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._final = asyncio.Event()  # END_OF_TRANSCRIPT came
        self._handle = handle
        self._on_malformed = on_malformed
        self._on_gone = on_gone
        self.receiver = asyncio.create_task(self._receive(), name=f"earshot-rx-{protocol.uid}")

    @classmethod
    async def open(cls, url: str, protocol: ClientConnection, *, headers: dict[str, str],
                   open_timeout: float, close_timeout: float, **callbacks: Any) -> Link:
        """Open the socket (the WebSocket handshake) and start receiving."""
        try:
            ws = await connect(url, additional_headers=headers, open_timeout=open_timeout,
                               close_timeout=close_timeout, max_size=None)
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise ConnectError(f"cannot connect to {url}: {exc}") from exc
        return cls(ws, protocol, **callbacks)

    # -- receiving ----------------------------------------------------------

    async def _receive(self) -> None:
        """Handle every server frame until the socket closes."""
        try:
            async for frame in self.ws:
                try:  # the protocol turns anything a server may send into ProtocolError
                    event = self.protocol.receive(frame)
                except ProtocolError as exc:
                    self._on_malformed(exc)
                    continue
                if self.protocol.final:
                    self._final.set()
                try:
                    await self._handle(self, event)
                except Exception:  # the client's own bug: logged, the session goes on
                    log.exception("handling a server message failed")
        except ConnectionClosed:
            pass
        finally:
            self.protocol.closed(self.ws.close_code, self.ws.close_reason or "")
            if not self.ready.done():
                self.ready.set_exception(self.error() or ConnectionLost("connection closed"))
                self.ready.exception()  # retrieved here; start() re-raises it
            self._on_gone(self)

    def error(self) -> ClientError | None:
        """Why the session takes nothing more: what the server said, or its close."""
        if self.protocol.refusal is None and self.ws.close_code is None:
            return None
        return ended_error(self.protocol, self.ws.close_code)

    @property
    def final(self) -> bool:
        return self._final.is_set()

    async def final_or_gone(self, timeout: float) -> bool:
        """Until the final transcript or the end of the connection (TimeoutError
        after ``timeout``); True for the final transcript."""
        await until_either(self._final.wait(), self.receiver, timeout)
        if not self.final and not self.receiver.done():
            raise TimeoutError(f"neither the final transcript nor the close within {timeout:g} s")
        return self.final

    # -- sending ------------------------------------------------------------

    async def start(self, config: ClientConfig, timeout: float, url: str) -> None:
        """Send the config; wait for SERVER_READY (``ready``, set by the handler)."""
        await self._send(self.protocol.send_config(config), "while sending the config")
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self.ready)
        except TimeoutError:
            raise ConnectError(f"no SERVER_READY within {timeout:g} s from {url}") from None

    async def send_audio(self, samples: np.ndarray) -> None:
        frame = await self._frame(lambda: self.protocol.send_audio(samples))
        await self._send(frame, "while sending")

    async def send_end_of_audio(self) -> None:
        await self._send(await self._frame(self.protocol.send_end_of_audio),
                         "before END_OF_AUDIO")

    async def _frame(self, make: Callable[[], bytes]) -> bytes:
        """The frame the protocol makes; once the server ended the session, what it
        said instead of the protocol's InvalidState, with the close that follows
        (awaited within the close timeout: a send can fall between the two)."""
        try:
            return make()
        except InvalidState:
            if self.protocol.refusal is None:
                raise
            if self.ws.close_code is None:
                await asyncio.wait([self.receiver], timeout=self.ws.close_timeout)
            raise ended_error(self.protocol, self.ws.close_code) from None

    async def _send(self, frame: str | bytes, when: str) -> None:
        try:
            await self.ws.send(frame)
        except ConnectionClosed:  # typed, so that a reconnect policy retries it
            raise self.error() or ConnectionLost(f"connection closed {when}") from None

    # -- closing ------------------------------------------------------------

    async def close(self, timeout: float) -> None:
        """Close the socket and end the receive task, each step within ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                await self.ws.close()
        except TimeoutError:
            self.ws.transport.abort()  # type: ignore[attr-defined]
        if self.receiver is not asyncio.current_task():
            done, _ = await asyncio.wait([self.receiver], timeout=timeout)
            if not done:
                self.receiver.cancel()
                await asyncio.wait([self.receiver], timeout=timeout)
        if not self.ready.done():
            self.ready.cancel()
