"""The server: one asyncio event loop, WebSocket sessions and plain HTTP on one port.

Connections are served by websockets' asyncio server. Plain HTTP requests to
the same port are answered before any upgrade: /healthz (alive), /readyz
(model loaded and accepting), /status (JSON: sessions, capacity, model) and
/metrics (Prometheus). With an API key set, /status, /metrics and every
WebSocket upgrade need it; the health endpoints stay open for probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import json
import logging
from typing import Any
from urllib.parse import parse_qs

from websockets.asyncio.server import Server as WsServer
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
from websockets.http11 import Request, Response

from earshot import __version__, protocol
from earshot.protocol import ClientConfig, CloseCode, ProtocolError
from earshot.server.config import ServerConfig
from earshot.server.engine import Transcriber
from earshot.server.metrics import Metrics
from earshot.server.scheduler import FairScheduler
from earshot.server.session import Session, peer

log = logging.getLogger("earshot.server")

CLOSE_TIMEOUT = 2.0  # seconds to wait for a client's closing handshake
MAX_REASON_BYTES = 123  # RFC 6455: a close reason fits in a control frame
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

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Listen, then load the model; ready once loaded."""
        try:
            self._ws_server = await serve(
                self._handle,
                self.config.host,
                self.config.port,
                process_request=self._process_request,
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
        """Stop accepting, tell every session (DISCONNECT, close 1001), then stop."""
        self.draining = True
        log.info("draining", extra={"fields": {"sessions": len(self.sessions)}})
        if self._ws_server is not None:
            self._ws_server.close(close_connections=False)
        await asyncio.gather(*(self._disconnect(s, "server shutting down")
                               for s in list(self.sessions.values())))
        await self._stop_listening()
        await self.scheduler.close()
        log.info("stopped")

    async def _stop_listening(self) -> None:
        if self._ws_server is None:
            return
        self._ws_server.close(close_connections=True)
        try:
            await asyncio.wait_for(self._ws_server.wait_closed(), self.config.drain_timeout)
        except TimeoutError:
            log.warning("connections still open after the drain timeout")

    async def _disconnect(self, session: Session, reason: str) -> None:
        session.close()
        session.outbox.put(protocol.disconnect(session.uid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(session.outbox.flushed(), self.config.drain_timeout / 2)
        await session.connection.close(CloseCode.GOING_AWAY, reason)

    # -- HTTP --------------------------------------------------------------

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path, _, query = request.path.partition("?")
        if path == "/healthz":
            return conn.respond(200, "ok\n")
        if path == "/readyz":
            if self.ready:
                return conn.respond(200, "ready\n")
            return conn.respond(503, "draining\n" if self.draining else "loading model\n")
        if not self._authorized(request.headers, query):
            self.metrics.connections.labels("unauthorized").inc()
            response = conn.respond(401, "missing or wrong API key (Bearer header or ?token=)\n")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        if path == "/status":
            return _json_response(conn, self.status())
        if path == "/metrics":
            response = conn.respond(200, "")
            response.body = self.metrics.render()
            _set_header(response.headers, "Content-Type", "text/plain; version=0.0.4")
            _set_header(response.headers, "Content-Length", str(len(response.body)))
            return response
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return conn.respond(
                404, "not found: use /healthz, /readyz, /status, /metrics or a WebSocket\n"
            )
        return None

    def _authorized(self, headers: Headers, query: str) -> bool:
        key = self.config.api_key
        if not key:
            return True
        offered = parse_qs(query).get("token", [""])[0]
        auth = headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            offered = auth[7:].strip()
        return hmac.compare_digest(offered.encode(), key.encode())

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

    # -- WebSocket sessions -----------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        remote = peer(ws)
        config = await self._receive_config(ws, remote)
        if config is None:
            return
        await self._loaded.wait()
        assert self.transcriber is not None
        if problem := self.transcriber.language_problem(config.language):
            await self._reject(ws, config.uid, ProtocolError(problem), remote)
            return
        if len(self.sessions) >= self.config.max_clients or self.draining:
            await self._refuse_full(ws, config, remote)
            return
        session = Session(config, ws, self.transcriber, self.scheduler, self.metrics,
                          self.config.stream_settings())
        self.sessions[session.session_id] = session
        self.metrics.sessions.set(len(self.sessions))
        log.info("session started", extra={"fields": {
            **session.fields, "language": config.language, "task": config.task,
            "use_vad": config.use_vad, "audio_format": config.audio_format.value}})
        outcome = "connection lost"
        sender: asyncio.Task[None] | None = None
        try:
            await ws.send(protocol.server_ready(config.uid, session.session_id))
            sender = asyncio.create_task(session.outbox.run(ws))
            outcome = await self._serve(ws, session, sender)
        except ConnectionClosed:
            pass
        finally:
            session.close()
            if sender is not None:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
            del self.sessions[session.session_id]
            self.metrics.sessions.set(len(self.sessions))
            self.metrics.connections.labels(outcome).inc()
            log.info("session ended", extra={"fields": {
                **session.fields, "outcome": outcome,
                "audio_seconds": round(session.stream.received_seconds, 3),
                "segments": session.stream.completed_count,
                "close_code": ws.close_code}})

    async def _serve(
        self, ws: ServerConnection, session: Session, sender: asyncio.Task[None]
    ) -> str:
        """Stream until the transcript is final; returns how the session ended."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.max_connection_time - session.age
        try:
            async with asyncio.timeout_at(deadline):
                await self._receive_audio(ws, session)
                if not await _first(session.finished.wait(), ws.wait_closed()):
                    return "connection lost"
                if session.failed is not None:
                    raise ProtocolError("the server failed to transcribe", CloseCode.INTERNAL)
                await _first(session.outbox.flushed(), sender)
            await ws.close(CloseCode.NORMAL, "transcript complete")
            return "complete"
        except TimeoutError:
            if self.draining or session.closed:
                return "server shutting down"
            log.info("max connection time reached", extra={"fields": session.fields})
            await self._disconnect(session, "max_connection_time reached")
            return "max connection time"
        except ProtocolError as exc:
            if self.draining:
                return "server shutting down"
            sender.cancel()
            await self._reject(ws, session.uid, exc, session.remote)
            return "client error" if exc.close_code != CloseCode.INTERNAL else "server error"
        except ConnectionClosedOK:
            return "server shutting down" if self.draining else "closed by client"
        except ConnectionClosed:
            return "server shutting down" if self.draining else "connection lost"

    async def _receive_audio(self, ws: ServerConnection, session: Session) -> None:
        """Read audio frames until END_OF_AUDIO; pauses while the backlog is full."""
        fmt = session.config.audio_format
        limit = self.config.max_frame_bytes
        while True:
            await session.room_for_audio(self.config.max_backlog_seconds)
            frame = await ws.recv()
            if frame in (protocol.END_OF_AUDIO, protocol.END_OF_AUDIO.decode()):
                session.end_of_audio()
                return
            if isinstance(frame, str):
                raise ProtocolError(
                    f"unexpected text frame in mid-stream ({len(frame)} characters); "
                    "after the config only binary audio and END_OF_AUDIO are accepted"
                )
            if len(frame) > limit:
                raise ProtocolError(
                    f"audio frame of {len(frame)} bytes is over the {limit}-byte limit",
                    CloseCode.TOO_BIG,
                )
            session.add_audio(protocol.decode_audio(frame, fmt))

    async def _receive_config(self, ws: ServerConnection, remote: str) -> ClientConfig | None:
        timeout = self.config.handshake_timeout
        try:
            async with asyncio.timeout(timeout):
                frame = await ws.recv()
        except TimeoutError:
            await self._reject(
                ws, None, ProtocolError(f"no config received within {timeout:g} s"), remote
            )
            return None
        except ConnectionClosed:
            return None
        try:
            return protocol.parse_config(frame)
        except ProtocolError as exc:
            await self._reject(ws, _uid_of(frame), exc, remote)
            return None

    async def _refuse_full(self, ws: ServerConnection, config: ClientConfig, remote: str) -> None:
        ages = [s.age for s in self.sessions.values()]
        remaining = min((self.config.max_connection_time - a for a in ages), default=0.0)
        minutes = max(0.0, remaining) / 60
        log.info("server full: WAIT", extra={"fields": {
            "uid": config.uid, "peer": remote, "wait_minutes": round(minutes, 2)}})
        self.metrics.connections.labels("wait").inc()
        try:
            await ws.send(protocol.wait(config.uid, minutes))
            await ws.close(CloseCode.TRY_AGAIN_LATER, "server full, try again later")
        except ConnectionClosed:
            pass

    async def _reject(
        self, ws: ServerConnection, uid: str | None, exc: ProtocolError, remote: str
    ) -> None:
        """Tell the client what was wrong (ERROR) and close with the error's code."""
        log.warning("client error: " + exc.message, extra={"fields": {
            "uid": uid, "peer": remote, "close_code": int(exc.close_code)}})
        self.metrics.errors.labels(str(int(exc.close_code))).inc()
        try:
            await ws.send(protocol.error(uid or "", exc.message))
            await ws.close(exc.close_code, _reason(exc.message))
        except ConnectionClosed:
            pass


def _reason(text: str) -> str:
    data = text.encode()[:MAX_REASON_BYTES]
    return data.decode(errors="ignore")


def _uid_of(frame: str | bytes) -> str | None:
    """The uid of a config that failed validation, if it has one, to echo back."""
    try:
        data = json.loads(frame)
    except (ValueError, TypeError, RecursionError):
        return None
    uid = data.get("uid") if isinstance(data, dict) else None
    return uid[: protocol.MAX_UID_CHARS] if isinstance(uid, str) else None


async def _first(*awaitables: Any) -> bool:
    """Wait for the first of several awaitables; True if it was the first one.

    Coroutines are wrapped in tasks that are cancelled afterwards; tasks the
    caller passed in are the caller's and are left running.
    """
    tasks = [a if isinstance(a, asyncio.Future) else asyncio.ensure_future(a) for a in awaitables]
    owned = [t for t, a in zip(tasks, awaitables, strict=True) if t is not a]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        return tasks[0] in done
    finally:
        for task in owned:
            task.cancel()
        await asyncio.gather(*owned, return_exceptions=True)


def _json_response(conn: ServerConnection, data: dict[str, Any]) -> Response:
    response = conn.respond(200, json.dumps(data, indent=2) + "\n")
    _set_header(response.headers, "Content-Type", "application/json")
    return response


def _set_header(headers: Headers, name: str, value: str) -> None:
    del headers[name]
    headers[name] = value
