"""How the server serves one WebSocket connection, from its config to its close.

The config is read (within the handshake timeout) and admitted or turned
away; an admitted connection becomes a :class:`Session`. Then two tasks move
frames: the outbox's sender, and a reader that feeds the client's frames to
the session until END_OF_AUDIO (after which it only watches for the client
going away). Everything that can end the session calls ``session.end``; this
module waits for that one outcome, sends its last frames and closes with its
code. What may come when is decided by the protocol's ``ServerConnection``;
nothing here re-states it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection as WebSocket
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from earshot.aio import until_either
from earshot.protocol import Ending, Outcome, ProtocolError, ServerConnection
from earshot.server.session import Session

if TYPE_CHECKING:
    from earshot.server.app import Server

log = logging.getLogger("earshot.server")


def peer(ws: WebSocket) -> str:
    """host:port of the other end, for logs."""
    return "{}:{}".format(*ws.remote_address[:2])


async def serve(server: Server, ws: WebSocket) -> None:
    """The whole life of one connection."""
    remote = peer(ws)
    connection = ServerConnection(server.config.max_frame_bytes)
    if not await _receive_config(server, ws, connection, remote):
        return
    await server.loaded()
    assert server.transcriber is not None and connection.config is not None
    config = connection.config
    if problem := server.transcriber.language_problem(config.language):
        connection.reject(ProtocolError(problem))
        await _turn_away(server, ws, connection, remote)
        return
    if server.full or server.draining:
        minutes = server.minutes_until_free()
        log.info("server full: WAIT", extra={"fields": {
            "uid": config.uid, "peer": remote, "wait_minutes": round(minutes, 2)}})
        server.metrics.connections.labels(Ending.FULL.value).inc()
        connection.end(Ending.FULL, wait_minutes=minutes)
        await _turn_away(server, ws, connection, remote)
        return
    session = server.open_session(connection, remote)
    outcome: Outcome | None = None
    try:
        outcome = await _run(server, ws, session)
    finally:
        server.close_session(session, outcome, ws.close_code)


async def _receive_config(server: Server, ws: WebSocket, connection: ServerConnection,
                          remote: str) -> bool:
    """Read and check the config; False when the connection was turned away or lost."""
    timeout = server.config.handshake_timeout
    try:
        async with asyncio.timeout(timeout):
            frame = await ws.recv()
    except TimeoutError:
        connection.reject(ProtocolError(f"no config received within {timeout:g} s"))
        await _turn_away(server, ws, connection, remote)
        return False
    except ConnectionClosed:
        return False
    try:
        connection.receive(frame)
    except ProtocolError as exc:
        connection.reject(exc)
        await _turn_away(server, ws, connection, remote)
        return False
    return True


async def _turn_away(server: Server, ws: WebSocket, connection: ServerConnection,
                     remote: str) -> None:
    """Send an ended connection's last frames directly (no session, no outbox), then close."""
    outcome = connection.outcome
    assert outcome is not None and outcome.close_code is not None
    _count_error(server, outcome, {"uid": connection.uid or None, "peer": remote})
    with contextlib.suppress(ConnectionClosed):
        for frame in outcome.frames:
            await ws.send(frame)
        await ws.close(outcome.close_code, outcome.reason)


def _count_error(server: Server, outcome: Outcome, fields: dict[str, Any]) -> None:
    if outcome.ending in (Ending.CLIENT_ERROR, Ending.SERVER_ERROR):
        log.warning(f"{outcome.ending.value}: {outcome.message}", extra={"fields": {
            **fields, "close_code": outcome.close_code}})
        server.metrics.errors.labels(str(outcome.close_code)).inc()


async def _run(server: Server, ws: WebSocket, session: Session) -> Outcome:
    """Stream until the session ends; then its last frames and the close."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + server.config.max_connection_time - session.age
    timer = loop.call_at(deadline, _time_up, session)
    sender = asyncio.create_task(session.outbox.run(ws))
    reader = asyncio.create_task(_read(ws, session, server.config.max_backlog_seconds))
    try:
        outcome = await session.ended()
        reader.cancel()  # it may be waiting in recv(): nothing more is wanted
        if outcome.close_code is not None:
            _count_error(server, outcome, session.fields)
            # DISCONNECT goes out promptly or not at all; a final transcript or an
            # error may take the rest of the session's time to reach a slow client.
            going = outcome.ending in (Ending.SHUTDOWN, Ending.MAX_CONNECTION_TIME)
            bound = server.config.drain_timeout / 2
            if not going:
                bound = max(bound, deadline - loop.time())
            # until the outbox is empty, the sender has died (the socket closed) or the bound
            await until_either(session.outbox.flushed(), sender, bound)
            with contextlib.suppress(ConnectionClosed):
                await ws.close(outcome.close_code, outcome.reason)
        return outcome
    finally:
        timer.cancel()
        for task in (reader, sender):
            task.cancel()
        await asyncio.gather(reader, sender, return_exceptions=True)


def _time_up(session: Session) -> None:
    if not session.closed:
        log.info("max connection time reached", extra={"fields": session.fields})
    session.end(Ending.MAX_CONNECTION_TIME)


async def _read(ws: WebSocket, session: Session, max_backlog_seconds: float) -> None:
    """Feed the client's frames to the session until it wants no more, then watch
    for the client going away before the transcript is final."""
    try:
        while not session.closed:
            await _room_for_audio(ws, session, max_backlog_seconds)
            if session.closed or not session.receive(await ws.recv()):
                break
        if not session.closed:  # END_OF_AUDIO: the final transcript is being made
            await ws.wait_closed()
            session.end(Ending.LOST, "the client went away before the final transcript")
    except ConnectionClosedOK:
        session.end(Ending.CLOSED_BY_CLIENT)
    except ConnectionClosed:
        session.end(Ending.LOST)
    except Exception:  # the server's own bug: end the session now rather than hang it
        log.exception("reading the client's frames failed", extra={"fields": session.fields})
        session.end(Ending.SERVER_ERROR, "the server failed")


async def _room_for_audio(ws: WebSocket, session: Session, max_backlog_seconds: float) -> None:
    """Read no more while the session's backlog is over the limit (TCP back-pressure).

    The client's pongs queue behind the audio left unread meanwhile, so the
    keepalive pauses too (it would cut a client that is plainly there: it is
    sending), and starts again once reading goes on.
    """
    if session.stream.backlog_seconds <= max_backlog_seconds:
        return
    keepalive = ws.keepalive_task
    if keepalive is not None:
        keepalive.cancel()
    try:
        await session.room_for_audio(max_backlog_seconds)
    finally:
        if keepalive is not None and not session.closed:
            ws.start_keepalive()
