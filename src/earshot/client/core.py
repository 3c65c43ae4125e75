"""The asynchronous streaming client, on websockets' asyncio client.

One instance is one client (a stable ``client_id``) that may open several
connections over its life, each a new session with a fresh ``session_id``
(sent as the protocol's ``uid``). Each connection is a :class:`~.link.Link`
(the socket, its receive task and the protocol's side of it), owned by the
client and closed by it. ``close()`` is idempotent, bounds every wait, and always
ends in DISCONNECTED, whatever state it starts from and whoever calls it
(a callback of this client included). Nothing is left to garbage collection.

    async with AsyncTranscriptionClient("ws://127.0.0.1:9090") as client:
        await client.stream_file("speech.wav", realtime=True)
        segments = await client.finish()
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from earshot import audio
from earshot.client.errors import (
    ClientClosed,
    ClientError,
    ConnectionLost,
    TranscriptTimeout,
)
from earshot.client.ids import new_id
from earshot.client.link import Link
from earshot.client.reconnect import ReconnectPolicy
from earshot.client.registry import Registry
from earshot.client.resume import ResumeBuffer
from earshot.client.state import ConnectionState, StateMachine, Transition
from earshot.client.throttle import Throttle
from earshot.protocol import (
    AudioFormat,
    ClientConfig,
    ClientConnection,
    Segment,
    ServerEvent,
    Transcript,
)

log = logging.getLogger("earshot.client")
S = ConnectionState


class AsyncTranscriptionClient:
    _registry: ClassVar[Registry[AsyncTranscriptionClient]] = Registry()

    def __init__(
        self,
        url: str,
        *,
        language: str | None = "en",
        task: str = "transcribe",
        use_vad: bool = False,
        audio_format: AudioFormat = AudioFormat.FLOAT32,
        initial_prompt: str | None = None,
        api_key: str | None = None,
        open_timeout: float = 10.0,
        close_timeout: float = 5.0,
        min_connect_interval: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        reconnect: ReconnectPolicy | None = None,
        resume: bool = True,
        on_state: Callable[[Transition], Any] | None = None,
        on_segments: Callable[[AsyncTranscriptionClient], Any] | None = None,
    ) -> None:
        self.url = url
        self.client_id = new_id()
        self.session_id: str | None = None  # ours, per connection attempt
        self.server_session_id: str | None = None  # the server's, from SERVER_READY
        self.language = language
        self.language_probability: float | None = None
        self.malformed_messages = 0
        self.transcript = Transcript()
        self._config = dict(language=language, task=task, use_vad=use_vad,
                            audio_format=audio_format, initial_prompt=initial_prompt)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self._throttle = Throttle(min_connect_interval, clock)
        self.reconnect = reconnect
        self.resume = resume
        self._on_segments = on_segments
        self._machine = StateMachine()
        if on_state is not None:
            self._machine.add_listener(on_state)
        self._link: Link | None = None  # the current session's connection
        self._connecting: asyncio.Task[Any] | None = None
        self._cancelled_by_close = False  # close() cancelled the connecting task
        self._resume = ResumeBuffer()  # audio not yet covered by completed segments
        self._closed = False
        self._closed_event = asyncio.Event()  # wakes backoffs and throttle delays at close()
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop it connected on
        # Monotonic times of the latest session, for latency measurements.
        self.end_of_audio_at: float | None = None
        self.final_at: float | None = None
        self._registry.add(self)

    # -- state --------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._machine.state

    @property
    def history(self) -> list[Transition]:
        return list(self._machine.history)

    def add_state_listener(self, listener: Callable[[Transition], Any]) -> None:
        self._machine.add_listener(listener)

    async def wait_for_state(self, state: ConnectionState, timeout: float = 10.0) -> None:
        await self._machine.wait_for(state, timeout)

    @property
    def audio_sent(self) -> float:
        """Seconds of stream audio sent so far (after a resume: counted from the replay)."""
        return self._resume.end

    @property
    def connect_timeout(self) -> float:
        """The longest connect() can take: an attempt's bounds (the throttle's interval,
        the socket's and SERVER_READY's open_timeout each), and with a reconnect policy
        its deadline plus the last backoff before the attempt that starts at it."""
        attempt = self._throttle.min_interval + 2 * self.open_timeout
        policy = self.reconnect
        if policy is None:
            return attempt
        return policy.deadline + policy.maximum + policy.jitter + attempt

    @property
    def closed(self) -> bool:
        """close() was called: the client cannot connect again."""
        return self._closed

    @property
    def partial(self) -> Segment | None:
        return self.transcript.partial.segment if self.transcript.partial else None

    # -- registry -----------------------------------------------------------

    @classmethod
    def active_instances(cls) -> list[AsyncTranscriptionClient]:
        """Clients created and not yet closed."""
        return cls._registry.open()

    @classmethod
    async def close_all(cls, timeout: float = 5.0) -> None:
        """Close every live client of this event loop, concurrently."""
        loop = asyncio.get_running_loop()
        clients = [c for c in cls.active_instances() if c._loop in (None, loop)]
        await asyncio.gather(*(c.close(timeout) for c in clients), return_exceptions=True)

    # -- connecting ---------------------------------------------------------

    async def __aenter__(self) -> AsyncTranscriptionClient:
        try:
            await self.connect()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open a session; with a reconnect policy, retry per the policy.

        close() stops it wherever it is (throttle delay, backoff, handshake):
        it then raises ClientClosed and never reaches READY afterwards.
        """
        if self._closed:
            raise ClientClosed("this client is closed; make a new one")
        if self.reconnect is None:
            await self._connect_once()
            return
        async for attempt in self.reconnect.retrying(sleep=self._pause):
            with attempt:
                await self._connect_once()

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` (a throttle delay or a backoff), cut short by close()."""
        if seconds > 0 and not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._closed_event.wait()
        if self._closed:
            raise ClientClosed("the client was closed before it could connect")

    async def _connect_once(self) -> None:
        if self.state is not S.DISCONNECTED:
            raise ClientError(f"connect() in state {self.state.name}; close() first")
        # The minimum interval between attempts; asyncio's timers may fire up to a
        # clock tick early, so wait again for what is left of the booked slot.
        delay = self._throttle.reserve()
        slot = self._throttle.clock() + delay
        await self._pause(delay)
        while (left := slot - self._throttle.clock()) > 0:
            await self._pause(left)
        self._throttle.started()
        self._loop = asyncio.get_running_loop()
        self.session_id = new_id()
        self._machine.move(S.CONNECTING, f"session {self.session_id}")
        self._connecting = asyncio.current_task()
        self._cancelled_by_close = False
        try:
            await self._open()
        except asyncio.CancelledError:
            await self._drop("connect cancelled")
            if self._cancelled_by_close and _uncancel():
                raise ClientClosed("close() ended the connection attempt") from None
            raise
        except BaseException:
            await self._drop("connect failed")
            raise
        finally:
            self._connecting = None

    async def _open(self) -> None:
        protocol = ClientConnection(self.session_id or "", self.transcript)
        self._link = link = await Link.open(
            self.url, protocol, headers=self._headers, open_timeout=self.open_timeout,
            close_timeout=self.close_timeout, handle=self._handle,
            on_malformed=self._malformed, on_gone=self._socket_gone,
        )
        self._machine.move(S.CONNECTED, "socket open")
        await link.start(ClientConfig(uid=protocol.uid, **self._config), self.open_timeout,
                         self.url)

    # -- receiving ----------------------------------------------------------

    async def _handle(self, link: Link, event: ServerEvent) -> None:
        """Act on what the protocol says a server message meant."""
        kind, data = event.kind, event.message.data
        if kind == "ready":
            if self.state is not S.CONNECTED:
                return  # close() won the race; the session is being torn down
            self.server_session_id = data.get("session_id")
            self._machine.move(S.READY, "SERVER_READY")
            if not link.ready.done():
                link.ready.set_result(None)
        elif kind == "language":
            self.language = data.get("language")
            self.language_probability = data.get("language_prob")
        elif event.changed:
            self._resume.confirm(self.transcript.confirmed_until)
            await self._call(self._on_segments)
        elif kind == "end":
            self.final_at = time.monotonic()

    def _malformed(self, exc: Exception) -> None:
        self.malformed_messages += 1
        log.warning("malformed server message ignored: %s", exc)

    async def _call(self, callback: Callable[[AsyncTranscriptionClient], Any] | None) -> None:
        if callback is None:
            return
        try:
            result = callback(self)
            if inspect.isawaitable(result):
                await result
        except Exception:  # a callback's bug must not kill the receive loop
            log.exception("on_segments callback failed")

    def _socket_gone(self, link: Link) -> None:
        """The receive loop ended: the socket is closed, by either side."""
        if self.state in (S.CONNECTED, S.READY):
            self._machine.move(S.DISCONNECTED, f"closed by server ({link.ws.close_code})")

    # -- sending ------------------------------------------------------------

    async def send_audio(self, samples: np.ndarray) -> None:
        """Send 16 kHz mono float32 samples; raises ConnectionLost if the session died."""
        link = self._link
        if self.state is not S.READY or link is None:
            raise self._lost_or(ClientError(f"cannot send audio in state {self.state.name}"))
        samples = np.asarray(samples, dtype=np.float32)
        await self._send(link, samples)
        self._resume.add(samples)

    async def _send(self, link: Link, samples: np.ndarray) -> None:
        try:
            await link.send_audio(samples)
        except ConnectionLost as exc:
            raise self._lost_or(exc) from None

    def _lost_or(self, default: ClientError) -> ClientError:
        """Why the session is unusable: what the server said, a close, or ``default``."""
        link = self._link
        if link is not None and link.ws.close_code is not None:
            return link.error() or default
        if self._closed:
            return ClientClosed("the client was closed during the session")
        return default

    async def stream(
        self, samples: np.ndarray, *, realtime: bool = True, speed: float = 1.0,
        chunk_ms: float = 100.0,
    ) -> None:
        """Send ``samples`` in chunks (paced at real time, or as fast as possible).

        ``speed`` scales the pacing (2.0: twice real time; ignored with
        ``realtime=False``): a stream that must be live while something happens
        to it, but whose words arriving at the speaker's pace are not what a
        test is about, costs half the wall time and half the server's passes.

        With a reconnect policy, a lost connection is reopened as a new session
        and, with ``resume``, the audio not yet covered by a completed segment
        is sent again before the stream goes on, so the transcript continues.
        """
        if not speed > 0:
            raise ValueError(f"speed must be above 0, not {speed!r}")
        pieces = audio.chunks(samples, chunk_ms)
        source = audio.paced(pieces, speed) if realtime else _aiter(pieces)
        async for piece in source:
            try:
                await self.send_audio(piece)
            except ConnectionLost as exc:
                await self._reconnect_or_raise(exc)
                await self.send_audio(piece)
        if self.state is not S.READY:  # lost after the last chunk: never return on a dead session
            await self._reconnect_or_raise(self._lost_or(ConnectionLost("the session ended")))

    async def stream_file(
        self, path: str | Path, *, realtime: bool = True, speed: float = 1.0,
        chunk_ms: float = 100.0,
    ) -> None:
        """Decode any audio file to 16 kHz mono float32 and stream it."""
        await self.stream(audio.load_audio(path), realtime=realtime, speed=speed,
                          chunk_ms=chunk_ms)

    async def _reconnect_or_raise(self, cause: ClientError) -> None:
        """Reopen a lost session when the policy allows; otherwise raise ``cause``."""
        if self.reconnect is None or self._closed or not isinstance(cause, ConnectionLost):
            raise cause
        await self._reconnect(cause)

    async def _reconnect(self, cause: ClientError) -> None:
        """A new session, with the unconfirmed audio sent again (``resume``). A session
        lost during that replay is followed by another, up to the policy's attempts."""
        assert self.reconnect is not None
        for _ in range(self.reconnect.attempts):
            log.info("session %s lost (%s); reconnecting", self.session_id, cause)
            await self._teardown("reconnecting")
            await self.connect()
            if not self.resume:  # the new session starts after everything already sent
                self._resume.drop()
            # ... or where the unconfirmed audio began, which is sent again
            self.transcript.offset = self._resume.start
            try:
                await self._replay()
                return
            except ConnectionLost as exc:
                if self._closed:
                    raise
                cause = exc
        raise cause

    async def _replay(self) -> None:
        """Send the kept audio to the new session; it stays kept until confirmed."""
        for piece in self._resume.pending():
            link = self._link
            if self.state is not S.READY or link is None:
                raise self._lost_or(ConnectionLost("the session ended during the replay"))
            await self._send(link, piece)

    # -- finishing ----------------------------------------------------------

    async def finish(self, timeout: float = 30.0) -> list[Segment]:
        """Send END_OF_AUDIO, wait for the final transcript, end the session.

        The client stays usable: connect() opens a new session. A session
        lost before the final transcript is reopened, its unconfirmed audio
        sent again and END_OF_AUDIO repeated, when there is a reconnect policy
        and ``resume``; otherwise it raises ConnectionLost (the transcript so
        far stays in ``transcript``). ``timeout`` bounds the whole call.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                return await self._finish_once(max(0.0, deadline - loop.time()), timeout)
            except ConnectionLost as exc:
                if not self.resume:
                    raise
                await self._reconnect_or_raise(exc)

    async def _finish_once(self, remaining: float, timeout: float) -> list[Segment]:
        link = self._link
        if self.state is not S.READY or link is None:
            raise self._lost_or(ClientError(f"finish() in state {self.state.name}"))
        try:
            await link.send_end_of_audio()
        except ConnectionLost as exc:
            raise self._lost_or(exc) from None
        self.end_of_audio_at = time.monotonic()
        try:
            final = await link.final_or_gone(remaining)
        except TimeoutError:
            raise TranscriptTimeout(
                f"no final transcript within {timeout:g} s (state {self.state.name}, "
                f"{len(self.transcript.completed)} completed segments, "
                f"partial {self.partial.text if self.partial else None!r})"
            ) from None
        if not final:
            raise self._lost_or(ConnectionLost("the connection ended before the final transcript"))
        # The server closes (1000) right after END_OF_TRANSCRIPT; let it, briefly.
        await asyncio.wait([link.receiver], timeout=self.close_timeout)
        await self._teardown("transcript complete")
        return self.transcript.completed

    # -- closing ------------------------------------------------------------

    async def close(self, timeout: float | None = None) -> None:
        """Close whatever is open and end DISCONNECTED; idempotent, bounded."""
        self._closed = True
        self._closed_event.set()
        self._registry.discard(self)
        await self._teardown("closed by client", timeout)

    async def disconnect(self, timeout: float | None = None) -> None:
        """End the current session (if any) and stay usable: connect() opens a new one."""
        await self._teardown("disconnected by client", timeout)

    async def _teardown(self, reason: str, timeout: float | None = None) -> None:
        timeout = self.close_timeout if timeout is None else timeout
        current = asyncio.current_task()
        if self._connecting is not None and self._connecting is not current:
            if not self._cancelled_by_close:  # once: connect() takes back this one cancel
                self._cancelled_by_close = True
                self._connecting.cancel()  # its own handler moves to DISCONNECTED
            await asyncio.wait([self._connecting], timeout=timeout)
        if self.state in (S.CONNECTING, S.CONNECTED, S.READY):
            self._machine.move(S.CLOSING, reason)
        await self._drop(reason, timeout)

    async def _drop(self, reason: str, timeout: float | None = None) -> None:
        """Close the socket, end the receive task, land in DISCONNECTED."""
        timeout = self.close_timeout if timeout is None else timeout
        link, self._link = self._link, None
        if link is not None:
            await link.close(timeout)
        if self.state is not S.DISCONNECTED:
            if self.state in (S.CONNECTED, S.READY):
                self._machine.move(S.CLOSING, reason)
            self._machine.move(S.DISCONNECTED, reason)


def _uncancel() -> bool:
    """Take back the cancellation close() sent the connecting task; True unless the
    task is being cancelled for another reason too (that one must go on)."""
    task = asyncio.current_task()
    return task is None or task.uncancel() == 0


async def _aiter(items: Any) -> Any:
    for item in items:
        yield item
