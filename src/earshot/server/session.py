"""One transcription session: a connection after its config was accepted.

A session owns its transcript stream and its outbox. Inference passes come
from the shared scheduler; messages leave through the outbox's own sender
task, so a client that reads slowly delays only itself: a segments update
that has not left yet is replaced by the newer one instead of queueing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from websockets.asyncio.server import ServerConnection

from earshot import protocol
from earshot.protocol import ClientConfig
from earshot.server.engine import Transcriber, WindowResult
from earshot.server.metrics import Metrics
from earshot.server.scheduler import FairScheduler
from earshot.server.streaming import Job, StreamSettings, TranscriptStream

log = logging.getLogger("earshot.session")
# Until a pass has heard words, and for at most this much audio, a session's
# passes go to the front of the queue (see earshot.server.scheduler).
FIRST_TEXT_SECONDS = 3.0


def peer(connection: ServerConnection) -> str:
    """host:port of the other end, for logs."""
    return "{}:{}".format(*connection.remote_address[:2])


def new_session_id() -> str:
    """Random, so ids never collide, however fast clients reconnect."""
    return uuid.uuid4().hex


class Outbox:
    """Messages waiting for the sender, in order; segments updates coalesce."""

    def __init__(self) -> None:
        self._items: deque[tuple[str, str]] = deque()  # (kind, text)
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def put(self, text: str, kind: str = "control") -> None:
        if kind == "segments" and self._items and self._items[-1][0] == "segments":
            self._items[-1] = (kind, text)  # the newer snapshot replaces the unsent one
        else:
            self._items.append((kind, text))
        self._idle.clear()
        self._ready.set()

    async def run(self, ws: ServerConnection) -> None:
        """Send until cancelled or the connection closes."""
        while True:
            await self._ready.wait()
            while self._items:
                _, text = self._items.popleft()
                await ws.send(text)
            self._ready.clear()
            self._idle.set()

    async def flushed(self) -> None:
        await self._idle.wait()


class Session:
    """State of one accepted connection; schedulable by the FairScheduler."""

    def __init__(
        self,
        config: ClientConfig,
        connection: ServerConnection,
        transcriber: Transcriber,
        scheduler: FairScheduler,
        metrics: Metrics,
        settings: StreamSettings | None = None,
    ) -> None:
        """``settings``: the server's pass policy; the client's config sets how many
        segments are sent and when a repeated partial is completed."""
        self.config = config
        self.connection = connection
        self.uid = config.uid
        self.session_id = new_session_id()
        self.remote = peer(connection)
        self.started = time.monotonic()
        self.stream = TranscriptStream(
            replace(
                settings or StreamSettings(),
                send_last_n_segments=config.send_last_n_segments,
                same_output_threshold=config.same_output_threshold,
            )
        )
        self.outbox = Outbox()
        self.finished = asyncio.Event()
        self.failed: BaseException | None = None
        self.closed = False
        self._transcriber = transcriber
        self._scheduler = scheduler
        self._metrics = metrics
        self._job: Job | None = None
        self._language_sent = False
        self._room = asyncio.Event()  # set whenever a pass shrank the backlog

    @property
    def fields(self) -> dict[str, Any]:
        """What every log line of this session carries."""
        return {"uid": self.uid, "session_id": self.session_id, "peer": self.remote}

    @property
    def age(self) -> float:
        return time.monotonic() - self.started

    # -- input from the connection ----------------------------------------

    def add_audio(self, samples: Any) -> None:
        self.stream.add_audio(samples)
        self._metrics.audio_seconds.inc(len(samples) / protocol.SAMPLE_RATE)
        self._wake()

    def end_of_audio(self) -> None:
        self.stream.end_of_audio()
        self._wake(urgent=True)

    async def room_for_audio(self, max_backlog_seconds: float) -> None:
        """Wait while the untranscribed audio is over the limit.

        The caller stops reading the socket meanwhile, so TCP flow control
        slows the client down instead of the server buffering without bound.
        """
        while self.stream.backlog_seconds > max_backlog_seconds:
            if self.failed is not None or self.closed:
                raise protocol.ProtocolError("the server failed to transcribe",
                                             protocol.CloseCode.INTERNAL)
            self._room.clear()
            await self._room.wait()

    def close(self) -> None:
        """No more passes for this session; a running one is discarded."""
        self.closed = True
        self._room.set()

    def _wake(self, urgent: bool = False) -> None:
        if not self.closed and self.stream.wants_pass():
            first = (not self.stream.heard
                     and self.stream.received_seconds <= FIRST_TEXT_SECONDS)
            self._scheduler.submit(self, urgent, first)
            self._metrics.queue.set(self._scheduler.queued)

    # -- Schedulable -------------------------------------------------------

    def next_task(self) -> Callable[[], tuple[Job, WindowResult]] | None:
        if self.closed or not self.stream.wants_pass():
            return None
        self._job = job = self.stream.next_job()
        transcribe = functools.partial(
            self._transcriber.transcribe,
            job.audio,
            language=self.config.language,
            task=self.config.task,
            initial_prompt=self.config.initial_prompt,
            no_speech_threshold=self.config.no_speech_thresh,
            vad=self.config.use_vad,
            partial=not job.final,
        )
        return lambda: (job, transcribe())

    def task_done(self, result: Any, error: BaseException | None, seconds: float) -> None:
        self._metrics.passes.observe(seconds)
        self._metrics.queue.set(self._scheduler.queued)
        self._room.set()
        if self.closed:
            return
        if error is not None:
            log.error("inference failed", extra={"fields": self.fields}, exc_info=error)
            self.failed = error
            self.finished.set()
            return
        job, result = result
        if job is not self._job:
            return  # overtaken by the final pass, which started while this one ran
        self._job = None
        if self.config.language is None and not self._language_sent:
            self._language_sent = True
            self.outbox.put(
                protocol.language(self.uid, result.language, result.language_probability)
            )
        update = self.stream.apply(job, result)
        if update.changed:
            self.outbox.put(protocol.segments(self.uid, self.stream.segments()), "segments")
        if update.finished:
            self.outbox.put(protocol.end_of_transcript(self.uid))
            self.finished.set()
        else:
            self._wake()

    # -- status ------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "session_id": self.session_id,
            "age_seconds": round(self.age, 3),
            "audio_seconds": round(self.stream.received_seconds, 3),
            "backlog_seconds": round(self.stream.backlog_seconds, 3),
            "completed_segments": self.stream.completed_count,
            "state": "finishing" if self.stream.ended else "streaming",
        }
