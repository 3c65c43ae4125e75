"""One transcription session: a connection after its config was accepted.

A session owns its transcript stream, its outbox and its side of the protocol
(:class:`earshot.protocol.ServerConnection`). Inference passes come from the
shared scheduler; messages leave through the outbox. Whatever ends the session
(the final transcript, a client error, a failed pass, the time limit, a
shutdown, the client going away) ends it through :meth:`Session.end`, and the
first end decides the outcome.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from earshot import protocol
from earshot.protocol import (
    AudioEnded,
    AudioReceived,
    CloseCode,
    Ending,
    Outcome,
    ProtocolError,
    ServerConnection,
)
from earshot.server.engine import Transcriber
from earshot.server.metrics import Metrics
from earshot.server.outbox import Outbox
from earshot.server.scheduler import FairScheduler
from earshot.server.streaming import Job, StreamSettings, TranscriptStream
from earshot.server.window import WindowResult

log = logging.getLogger("earshot.session")
# Until a pass has heard words, and for at most this much audio, a session's
# passes go to the front of the queue (see earshot.server.scheduler).
FIRST_TEXT_SECONDS = 3.0


def new_session_id() -> str:
    """Random, so ids never collide, however fast clients reconnect."""
    return uuid.uuid4().hex


class Session:
    """State of one accepted connection; schedulable by the FairScheduler."""

    def __init__(
        self,
        connection: ServerConnection,
        remote: str,
        transcriber: Transcriber,
        scheduler: FairScheduler,
        metrics: Metrics,
        settings: StreamSettings | None = None,
    ) -> None:
        """Accept ``connection`` (its config received): SERVER_READY is the first
        message out. ``settings``: the server's pass policy; the client's config
        sets how many segments are sent and when a repeated partial is completed."""
        assert connection.config is not None, "a session starts once the config is in"
        self.protocol = connection
        self.config = config = connection.config
        self.uid = config.uid
        self.session_id = new_session_id()
        self.remote = remote
        self.started = time.monotonic()
        self.stream = TranscriptStream(
            replace(
                settings or StreamSettings(),
                send_last_n_segments=config.send_last_n_segments,
                same_output_threshold=config.same_output_threshold,
            )
        )
        self.outbox = Outbox()
        self.outbox.put(connection.accept(self.session_id))
        self.gone = asyncio.Event()  # set by the server once the connection is closed
        self._ended = asyncio.Event()
        self._transcriber = transcriber
        self._scheduler = scheduler
        self._metrics = metrics
        self._job: Job | None = None
        self._room = asyncio.Event()  # set whenever a pass shrank the backlog or it ended

    @property
    def fields(self) -> dict[str, Any]:
        """What every log line of this session carries."""
        return {"uid": self.uid, "session_id": self.session_id, "peer": self.remote}

    @property
    def age(self) -> float:
        return time.monotonic() - self.started

    @property
    def closed(self) -> bool:
        """Ended: no more passes, no more frames read."""
        return self.protocol.ended

    # -- the end -------------------------------------------------------------------

    def end(self, ending: Ending, message: str = "", *,
            close_code: CloseCode | None = None) -> None:
        """End the session; the first end decides. Its last frames join the outbox,
        a running pass is discarded, and :meth:`ended` returns the outcome."""
        outcome = self.protocol.end(ending, message, close_code=close_code)
        if outcome is None:
            return
        for frame in outcome.frames:
            self.outbox.put(frame)
        self._room.set()
        self._ended.set()

    async def ended(self) -> Outcome:
        """Until the session ends: how it ended."""
        await self._ended.wait()
        assert self.protocol.outcome is not None
        return self.protocol.outcome

    # -- input from the connection ----------------------------------------------------

    def receive(self, frame: str | bytes) -> bool:
        """Take one frame from the client; False once no more are wanted
        (END_OF_AUDIO came, or the frame broke the protocol and ended the session)."""
        try:  # an InvalidState (the server's own bug) is not the client's to hear about
            event = self.protocol.receive(frame)
        except ProtocolError as exc:
            self.end(Ending.CLIENT_ERROR, exc.message, close_code=exc.close_code)
            return False
        if isinstance(event, AudioReceived):
            self.stream.add_audio(event.samples)
            self._metrics.audio_seconds.inc(len(event.samples) / protocol.SAMPLE_RATE)
            self._wake()
            return True
        if isinstance(event, AudioEnded):
            self.stream.end_of_audio()
            self._wake(urgent=True)
        return False

    async def room_for_audio(self, max_backlog_seconds: float) -> None:
        """Wait while the untranscribed audio is over the limit (or until the end).

        The caller stops reading the socket meanwhile, so TCP flow control
        slows the client down instead of the server buffering without bound.
        """
        while self.stream.backlog_seconds > max_backlog_seconds and not self.closed:
            self._room.clear()
            await self._room.wait()

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
        if error is not None:  # surfaced at once, not at END_OF_AUDIO
            log.error("inference failed", extra={"fields": self.fields}, exc_info=error)
            self.end(Ending.SERVER_ERROR, "the server failed to transcribe")
            return
        try:
            self._apply(*result)
        except Exception:  # the server's own bug: end this session now rather than hang it
            log.exception("applying a pass failed", extra={"fields": self.fields})
            self.end(Ending.SERVER_ERROR, "the server failed")

    def _apply(self, job: Job, result: WindowResult) -> None:
        if job is not self._job:
            return  # overtaken by the final pass, which started while this one ran
        self._job = None
        if self.config.language is None:
            detected = self.protocol.language(result.language, result.language_probability)
            if detected is not None:
                self.outbox.put(detected)
        update = self.stream.apply(job, result)
        if update.changed:
            self.outbox.put(self.protocol.segments(self.stream.segments()), "segments")
        if update.finished:
            self.end(Ending.COMPLETE)
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
