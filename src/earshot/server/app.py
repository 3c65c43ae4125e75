"""The server: one asyncio event loop, WebSocket sessions and plain HTTP on one port.

:class:`Server` owns the listening socket, the model, the scheduler and the
registry of sessions: it starts (listen, then load the model), reports its
status and drains. What one connection goes through is :mod:`.handler`; the
plain-HTTP endpoints are :mod:`.http`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from typing import Any

from websockets.asyncio.server import Server as WsServer
from websockets.asyncio.server import ServerConnection as WebSocket
from websockets.asyncio.server import serve

from earshot import __version__
from earshot.protocol import Ending, Outcome, ServerConnection
from earshot.server import handler
from earshot.server.config import ServerConfig
from earshot.server.engine import Transcriber
from earshot.server.http import Endpoints
from earshot.server.metrics import Metrics
from earshot.server.scheduler import FairScheduler
from earshot.server.session import Session

log = logging.getLogger("earshot.server")

CLOSE_TIMEOUT = 2.0  # seconds to wait for a client's closing handshake
# Frames up to this many times max_frame_bytes are read and answered with an
# ERROR; larger ones are refused by websockets itself (close 1009, no ERROR).
FRAME_READ_FACTOR = 4


class StartupError(RuntimeError):
    """The server cannot start (port in use, model missing); the text says why."""


class Server:
    def __init__(self, config: ServerConfig, transcriber: Transcriber | None = None) -> None:
        self.config = config
        self.transcriber = transcriber
        self.metrics = Metrics()
        self.scheduler = FairScheduler(config.workers)
        self.sessions: dict[str, Session] = {}
        self.port: int | None = None
        self.draining = False
        self._loaded = asyncio.Event()
        self._ws_server: WsServer | None = None

    @property
    def ready(self) -> bool:
        return self._loaded.is_set() and not self.draining

    @property
    def full(self) -> bool:
        return len(self.sessions) >= self.config.max_clients

    async def loaded(self) -> None:
        """Until the model is loaded."""
        await self._loaded.wait()

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Listen, then load the model; ready once loaded."""
        endpoints = Endpoints(self.config.api_key, self.metrics, self._not_ready, self.status)
        try:
            self._ws_server = await serve(
                self._handle,
                self.config.host,
                self.config.port,
                process_request=endpoints,
                max_size=self.config.max_frame_bytes * FRAME_READ_FACTOR,
                ping_interval=self.config.ping_interval,
                ping_timeout=self.config.ping_timeout,
                close_timeout=CLOSE_TIMEOUT,
                compression=None,
                logger=logging.getLogger("earshot.websockets"),
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"port {self.config.port} on {self.config.host} is already in use; "
                    "stop the other server or choose --port"
                ) from None
            raise StartupError(
                f"cannot listen on {self.config.host}:{self.config.port}: {exc}"
            ) from exc
        self.port = self._ws_server.sockets[0].getsockname()[1]
        log.info("listening", extra={"fields": {"url": f"ws://{self.config.host}:{self.port}"}})
        try:
            if self.transcriber is None:
                self.transcriber = await asyncio.to_thread(self._load_model)
        except BaseException:
            await self._stop_listening()
            raise
        self.scheduler.start()
        self._loaded.set()
        t = self.transcriber
        log.info(
            "ready",
            extra={"fields": {"model": t.model_name, "device": t.device,
                              "compute_type": t.compute_type, "workers": self.config.workers}},
        )

    def _load_model(self) -> Transcriber:
        c = self.config
        return Transcriber(
            c.model, c.device, c.compute_type, c.cpu_threads, c.workers, c.beam_size,
            c.partial_beam_size,
        )

    async def drain(self) -> None:
        """Stop accepting, end every session (DISCONNECT, close 1001), then stop; all
        within ``drain_timeout``, after which what is still open is cut."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.drain_timeout
        self.draining = True
        log.info("draining", extra={"fields": {"sessions": len(self.sessions)}})
        if self._ws_server is not None:
            self._ws_server.close(close_connections=False)
        sessions = list(self.sessions.values())
        for session in sessions:
            session.end(Ending.SHUTDOWN)
        gone = [asyncio.ensure_future(s.gone.wait()) for s in sessions]
        if gone:
            await asyncio.wait(gone, timeout=self.config.drain_timeout)
            for waiter in gone:
                waiter.cancel()
            await asyncio.gather(*gone, return_exceptions=True)
        await self._stop_listening(max(0.0, deadline - loop.time()))
        await self.scheduler.close()
        log.info("stopped")

    async def _stop_listening(self, timeout: float) -> None:
        """Until every connection's handler has ended, at most ``timeout``; then cut
        the connections still open (a client that never answers the close)."""
        if self._ws_server is None:
            return
        try:
            await asyncio.wait_for(self._ws_server.wait_closed(), timeout)
        except TimeoutError:
            # all_connections: also those whose closing handshake is under way
            # (``connections`` lists only the open ones)
            left = list(self._ws_server.all_connections)
            log.warning("connections still open at the drain timeout: cut",
                        extra={"fields": {"connections": len(left)}})
            for ws in left:
                ws.transport.abort()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ws_server.wait_closed(), CLOSE_TIMEOUT)

    # -- sessions ----------------------------------------------------------

    async def _handle(self, ws: WebSocket) -> None:
        await handler.serve(self, ws)

    def open_session(self, connection: ServerConnection, remote: str) -> Session:
        """Admit a connection whose config was accepted: a new session, registered."""
        assert self.transcriber is not None and connection.config is not None
        config = connection.config
        session = Session(connection, remote, self.transcriber, self.scheduler, self.metrics,
                          self.config.stream_settings())
        self.sessions[session.session_id] = session
        self.metrics.sessions.set(len(self.sessions))
        log.info("session started", extra={"fields": {
            **session.fields, "language": config.language, "task": config.task,
            "use_vad": config.use_vad, "audio_format": config.audio_format.value}})
        return session

    def close_session(self, session: Session, outcome: Outcome | None,
                      close_code: int | None) -> None:
        """Forget a session whose connection is closed; count and log how it ended."""
        if outcome is None:  # the handler was cancelled (the server is stopping)
            session.end(Ending.SHUTDOWN if self.draining else Ending.LOST)
            outcome = session.protocol.outcome
        assert outcome is not None
        del self.sessions[session.session_id]
        session.gone.set()
        self.metrics.sessions.set(len(self.sessions))
        self.metrics.connections.labels(outcome.label).inc()
        log.info("session ended", extra={"fields": {
            **session.fields, "outcome": outcome.label,
            "audio_seconds": round(session.stream.received_seconds, 3),
            "segments": session.stream.completed_count,
            "close_code": close_code}})

    def minutes_until_free(self) -> float:
        """WAIT's estimate: until the oldest session reaches max_connection_time."""
        ages = [s.age for s in self.sessions.values()]
        remaining = min((self.config.max_connection_time - a for a in ages), default=0.0)
        return max(0.0, remaining) / 60

    # -- status --------------------------------------------------------------

    def _not_ready(self) -> str | None:
        if self.ready:
            return None
        return "draining" if self.draining else "loading model"

    def status(self) -> dict[str, Any]:
        t = self.transcriber
        return {
            "version": __version__,
            "ready": self.ready,
            "draining": self.draining,
            "model": t.model_name if t else self.config.model,
            "device": t.device if t else None,
            "compute_type": t.compute_type if t else None,
            "capacity": {
                "max_clients": self.config.max_clients,
                "active": len(self.sessions),
                "available": max(0, self.config.max_clients - len(self.sessions)),
                "max_connection_time": self.config.max_connection_time,
            },
            "inference": {
                "workers": self.config.workers,
                "busy": self.scheduler.busy,
                "queued": self.scheduler.queued,
            },
            "sessions": [s.status() for s in self.sessions.values()],
        }
