"""Locust users that stream real speech to a WhisperLive-protocol server.

Each user loops: open a session, stream one manifest clip at real time in
100 ms frames (as a microphone fills them), send END_OF_AUDIO, wait for the
final transcript. Each step is its own request type in Locust's statistics,
named after the clip:

- ``connect``: from opening the connection to SERVER_READY;
- ``first_text``: from the first audio frame to the first segments message
  with text;
- ``final``: from END_OF_AUDIO to END_OF_TRANSCRIPT (``--end-by close``: to
  the server's 1000 close, for servers without END_OF_TRANSCRIPT).

WAIT, ERROR, DISCONNECT, an unexpected close, a timeout, a snapshot that
repeats itself (a looping pass) or a WER over the bound fail the step with the
reason. Clips are decoded once per process. The session itself is
``earshot.load.session``; run this file with ``make load`` or
``locust -f load/locustfile.py --host ws://127.0.0.1:9090``.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

from locust import User, events, task

from earshot import audio
from earshot.audio import Speech
from earshot.load import locust_csv
from earshot.load.session import SessionOptions, load_clip, run_session

locust_csv.install()  # the CSV complete to the last request (see the module)

_numbers = itertools.count()  # user numbers in this process, for readable uids


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--clips", default="", include_in_web_ui=False,
                        help="comma-separated manifest clips (default: all)")
    parser.add_argument("--max-wer", type=float, default=0.10,
                        help="largest WER a final transcript may have (default 0.10)")
    parser.add_argument("--wer-baseline", default="",
                        help="JSON file of clip -> whole-file WER; a clip's bound is then "
                             "its baseline plus --wer-margin")
    parser.add_argument("--wer-margin", type=float, default=0.05,
                        help="WER allowed over the baseline (default 0.05)")
    parser.add_argument("--end-by", choices=("eot", "close"), default="eot",
                        help="the final transcript ends at END_OF_TRANSCRIPT (eot) or at "
                             "the server's 1000 close (close: servers without it)")
    parser.add_argument("--final-timeout", type=float, default=30.0,
                        help="seconds from END_OF_AUDIO to the final transcript (default 30)")
    parser.add_argument("--api-key", default="", include_in_web_ui=False,
                        help="sent as a Bearer token")


def session_options(parsed) -> SessionOptions:
    bounds = None
    if parsed.wer_baseline:
        baseline = json.loads(Path(parsed.wer_baseline).read_text())
        bounds = {clip: float(value) + parsed.wer_margin for clip, value in baseline.items()}
    return SessionOptions(
        max_wer=parsed.max_wer,
        wer_bounds=bounds,
        end_by_close=parsed.end_by == "close",
        final_timeout=parsed.final_timeout,
        headers={"Authorization": f"Bearer {parsed.api_key}"} if parsed.api_key else None,
    )


def chosen_clips(parsed) -> list[Speech]:
    names = [n.strip() for n in parsed.clips.split(",") if n.strip()]
    return [load_clip(name) for name in names or audio.load_manifest()]


class SpeechUser(User):
    """One microphone: a session per clip, back to back; after a failed session it
    pauses a second before the next, as a client backs off (WAIT, a refused
    handshake), instead of hammering the server with connects."""

    failed = False

    def wait_time(self) -> float:
        return 1.0 if self.failed else 0.0

    def on_start(self) -> None:
        parsed = self.environment.parsed_options
        self.options = session_options(parsed)
        self.number = next(_numbers)
        clips = chosen_clips(parsed)
        # Users start on different clips, so concurrent streams differ.
        self.clips = itertools.islice(itertools.cycle(clips), self.number % len(clips), None)
        self.sessions = itertools.count()

    def report(self, clip: str, step: str, seconds: float, failure: str | None) -> None:
        self.failed = self.failed or failure is not None
        self.environment.events.request.fire(
            request_type=step, name=clip, response_time=seconds * 1000.0,
            response_length=0, exception=RuntimeError(failure) if failure else None,
            context={},
        )

    @task
    def stream_a_clip(self) -> None:
        clip = next(self.clips)
        self.failed = False
        # The pid too: Locust's --processes forks workers that share the uid prefix.
        name = f"load-{os.getpid()}-{self.number}-{next(self.sessions)}"
        run_session(self.host, clip, name,
                    lambda step, seconds, failure: self.report(clip.name, step, seconds,
                                                               failure),
                    self.options)
