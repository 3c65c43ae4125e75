"""One load-test session, as a microphone client would run it, with no Locust in it.

:func:`run_session` opens a session, streams one clip at real time, sends
END_OF_AUDIO and waits for the final transcript, reporting each step as it
ends through a callback: ``connect`` (handshake to SERVER_READY),
``first_text`` (first audio frame to the first segments message with text)
and ``final`` (END_OF_AUDIO to END_OF_TRANSCRIPT, or to the server's close
for a server that has no END_OF_TRANSCRIPT). A step that goes wrong is
reported once as failed with the reason, and the session stops there.

It is blocking code on websockets' sync client, so it runs the same on a
thread or, under Locust, on a gevent greenlet. Pacing and receiving are one
loop: between two frames the session reads replies until the next frame is
due, so one session is one greenlet.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache

from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection, connect

from earshot import audio, protocol
from earshot.audio import Speech
from earshot.protocol import SAMPLE_RATE, CloseCode
from earshot.testing import wire
from earshot.testing.wer import normalise, wer

FRAME_SECONDS = 0.1  # a microphone's buffer: each frame leaves when its 100 ms are captured
STEPS = ("connect", "first_text", "final")
LOOP_WORDS = 5  # a run of this many words seen twice in one snapshot is a loop

# step, seconds, failure reason (None: it succeeded)
Report = Callable[[str, float, str | None], None]


class StepFailed(Exception):
    """A step failed; ``step`` names it, the text says why."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(reason)
        self.step = step


@cache
def load_clip(name: str) -> Speech:
    """A manifest clip, decoded once per process (every user of a worker shares it)."""
    return audio.load_speech(name)


@dataclass(frozen=True)
class SessionOptions:
    """What a session checks; ``wer_bounds`` maps a clip to its largest WER."""

    max_wer: float = 0.10
    wer_bounds: Mapping[str, float] | None = None
    end_by_close: bool = False  # the server has no END_OF_TRANSCRIPT: its close is the end
    connect_timeout: float = 10.0
    final_timeout: float = 30.0  # from END_OF_AUDIO
    headers: Mapping[str, str] | None = None

    def wer_bound(self, clip: str) -> float:
        if self.wer_bounds and clip in self.wer_bounds:
            return self.wer_bounds[clip]
        return self.max_wer


def repeated_run(text: str, reference: str, n: int = LOOP_WORDS) -> str | None:
    """A run of ``n`` words that ``text`` holds twice and the reference does not: the
    mark of a looping or repeated pass reaching the client. None when there is none."""

    def runs(words: list[str]) -> list[tuple[str, ...]]:
        return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]

    allowed = {run for run, n in Counter(runs(normalise(reference).split())).items() if n > 1}
    seen: set[tuple[str, ...]] = set()
    for run in runs(normalise(text).split()):
        if run in seen and run not in allowed:
            return " ".join(run)
        seen.add(run)
    return None


class _Session:
    """The state of one run: what came back, and when."""

    def __init__(self, ws: ClientConnection, connection: protocol.ClientConnection,
                 clip: Speech, options: SessionOptions, report: Report) -> None:
        self.ws, self.clip, self.options, self.report = ws, clip, options, report
        self.connection = connection  # the protocol's side of it: what may come when
        self.transcript = wire.Exchange()
        self.first_text_reported = False

    @property
    def step(self) -> str:
        """The step a failure now belongs to: once the first text is reported, what
        goes wrong spoils the stream, and so its ``final``."""
        return "final" if self.first_text_reported else "first_text"

    def receive_until(self, deadline: float) -> bool:
        """Handle replies until ``deadline`` or the final transcript; False once the
        server has closed."""
        while (left := deadline - time.monotonic()) > 0:
            try:
                frame = self.ws.recv(timeout=left)
            except TimeoutError:
                return True
            except ConnectionClosed:
                self.transcript.closed_at = time.monotonic()
                return False
            self.handle(frame)
            if self.transcript.final:
                return True
        return True

    def handle(self, frame: str | bytes) -> None:
        now = time.monotonic()
        message = self.connection.receive(frame).message
        self.transcript.messages.append((now, message))
        if self.connection.refusal is not None:
            raise StepFailed(self.step, f"server sent {message.kind.upper()}: "
                                   f"{message.data.get('message')!r}")
        if message.kind != "segments":
            return
        texts = " ".join(s.text.strip() for s in message.segments)
        if loop := repeated_run(texts, self.clip.reference):
            raise StepFailed(self.step, f"a snapshot repeated itself ({loop!r}): {texts!r}")
        if texts.strip() and not self.first_text_reported:
            self.first_text_reported = True
            assert self.transcript.first_audio_at is not None
            self.report("first_text", now - self.transcript.first_audio_at, None)

    def stream(self) -> None:
        """Send the clip a frame at a time as a microphone fills it, reading between."""
        step = round(FRAME_SECONDS * SAMPLE_RATE)
        samples = self.clip.samples
        started = time.monotonic()
        for index, at in enumerate(range(0, len(samples), step)):
            due = started + (index + 1) * FRAME_SECONDS  # pacing, not a wait
            if not self.receive_until(due):
                raise StepFailed(self.step, self.closed_early("while audio was sent"))
            self.transcript.first_audio_at = self.transcript.first_audio_at or time.monotonic()
            self.ws.send(self.connection.send_audio(samples[at:at + step]))
        self.transcript.end_of_audio_at = time.monotonic()
        self.ws.send(self.connection.send_end_of_audio())

    def finish(self) -> float:
        """Wait for the final transcript; its latency from END_OF_AUDIO."""
        assert self.transcript.end_of_audio_at is not None
        deadline = self.transcript.end_of_audio_at + self.options.final_timeout
        while not self.transcript.final:
            if not self.receive_until(min(deadline, time.monotonic() + 1.0)):
                if self.options.end_by_close and self.ws.close_code == CloseCode.NORMAL:
                    assert self.transcript.closed_at is not None
                    return self.transcript.closed_at - self.transcript.end_of_audio_at
                raise StepFailed("final", self.closed_early("before END_OF_TRANSCRIPT"))
            if time.monotonic() >= deadline:
                raise StepFailed("final", f"timeout: no END_OF_TRANSCRIPT within "
                                          f"{self.options.final_timeout:g} s of END_OF_AUDIO"
                                          f"; last text {self.transcript.heard!r}")
        return self.transcript.first_time("end") - self.transcript.end_of_audio_at

    def check_text(self) -> None:
        text = self.transcript.heard if self.options.end_by_close else self.transcript.text
        score, bound = wer(self.clip.reference, text), self.options.wer_bound(self.clip.name)
        if score > bound:
            raise StepFailed("final", f"WER {score:.3f} over {bound:.3f}: {text!r}")

    def closed_early(self, when: str) -> str:
        return (f"the server closed {when} (code {self.ws.close_code}, "
                f"reason {self.ws.close_reason!r})")


def run_session(url: str, clip: Speech, name: str, report: Report,
                options: SessionOptions | None = None) -> None:
    """One session of ``clip`` against ``url``; every step goes to ``report``.

    Returns after the final step (succeeded or failed); a failure is reported,
    not raised, with the time its step had taken. The connection is closed on
    every path, including a greenlet that Locust kills at the end of a run.
    """
    options = options or SessionOptions()
    started = time.monotonic()
    session: _Session | None = None

    def failed(step: str, reason: str) -> None:
        """Report ``step`` failed, timed from where that step began."""
        transcript = session.transcript if session is not None else None
        origin = {"first_text": transcript and transcript.first_audio_at,
                  "final": transcript and transcript.end_of_audio_at}.get(step)
        report(step, time.monotonic() - (origin or started), reason)

    try:
        with connect(url, additional_headers=options.headers, max_size=None,
                     open_timeout=options.connect_timeout) as ws:
            connection = protocol.ClientConnection(wire.uid(name))
            ws.send(connection.send_config(wire.config(connection.uid)))
            ready = connection.receive(ws.recv(timeout=options.connect_timeout)).message
            if connection.state is not protocol.ClientState.STREAMING:
                raise StepFailed("connect", f"server answered {ready.kind.upper()} "
                                            f"{ready.data.get('message')!r}, not SERVER_READY")
            report("connect", time.monotonic() - started, None)
            session = _Session(ws, connection, clip, options, report)
            session.stream()
            latency = session.finish()
            if not session.first_text_reported:
                raise StepFailed("first_text", "no text arrived before the final transcript")
            session.check_text()
            report("final", latency, None)
    except StepFailed as exc:
        failed(exc.step, str(exc))
    except InvalidStatus as exc:
        failed("connect", f"handshake refused: HTTP {exc.response.status_code}")
    except (OSError, TimeoutError, WebSocketException, protocol.ProtocolError,
            protocol.InvalidState) as exc:
        failed(session.step if session else "connect", f"{type(exc).__name__}: {exc}")
