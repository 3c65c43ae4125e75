"""How accurate the server's pass policy is, replayed in-process at fixed cadences.

Under load a stream's passes come further apart, and where its segments are
completed (and so where the next window starts) changes with them. This
replays each manifest clip, and the four clips joined into one 30 s stream,
through the server's own :class:`TranscriptStream` and :class:`Transcriber`
with a pass every ``cadence`` seconds of audio (0.5 s is an idle server; 2.2 s
a loaded one), then the final pass, and prints the WER of the completed text.
No server, no sockets, no timing: only what the policy completes.

    .venv/bin/python bench/pass_policy.py [--server-option settle_seconds=1.0 ...]

Options are the server's pass-policy settings by name (``settle_seconds``,
``first_pass_seconds``, ``confirm_passes``, ``partial_beam_size``,
``beam_size``); the defaults are the server's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from earshot import audio
from earshot.audio import Speech
from earshot.protocol import SAMPLE_RATE
from earshot.server.config import ServerConfig
from earshot.server.engine import Transcriber
from earshot.server.streaming import StreamSettings, TranscriptStream
from earshot.testing.wer import wer

CADENCES = (0.5, 0.8, 1.0, 1.3, 1.7, 2.2)
FRAME = SAMPLE_RATE // 10
GAP_SECONDS = 0.4  # between the clips of the joined stream


def replay(transcriber: Transcriber, speech: Speech, settings: StreamSettings) -> str:
    """The completed text of one stream with a pass whenever the policy wants one."""
    stream = TranscriptStream(settings)
    for at in range(0, len(speech.samples), FRAME):
        stream.add_audio(speech.samples[at:at + FRAME])
        if stream.wants_pass():
            job = stream.next_job()
            stream.apply(job, transcriber.transcribe(job.audio, language="en", partial=True))
    stream.end_of_audio()
    while stream.wants_pass():
        job = stream.next_job()
        stream.apply(job, transcriber.transcribe(job.audio, language="en",
                                                 partial=not job.final))
    return " ".join(s.text for s in stream.segments() if s.completed)


def joined(clips: Sequence[Speech]) -> Speech:
    gap = np.zeros(round(GAP_SECONDS * SAMPLE_RATE), dtype=np.float32)
    samples = np.concatenate([part for clip in clips for part in (clip.samples, gap)])
    return Speech("all four joined", samples, " ".join(c.reference for c in clips))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server-option", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    known = {"settle_seconds", "first_pass_seconds", "confirm_passes", "partial_beam_size",
             "beam_size"}
    args.options = {}
    for option in args.server_option:
        name, _, value = option.partition("=")
        if name not in known or not value:
            parser.error(f"--server-option: expected one of {', '.join(sorted(known))}=VALUE, "
                         f"not {option!r}")
        args.options[name] = float(value) if "seconds" in name else int(value)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = replace(ServerConfig(), **args.options)
    settings = config.stream_settings()
    transcriber = Transcriber(device="cpu", workers=1, beam_size=config.beam_size,
                              partial_beam_size=config.partial_beam_size)
    clips = [audio.load_speech(name) for name in audio.load_manifest()]
    given = ", ".join(f"{k}={v}" for k, v in sorted(args.options.items())) or "defaults"
    print(f"settings: {given} (settle {settings.settle_seconds} s, first pass "
          f"{settings.first_pass_seconds} s, confirm {settings.confirm_passes}, "
          f"partial beam {transcriber.partial_beam_size})\n")
    print("| stream | " + " | ".join(f"{c:g} s" for c in CADENCES) + " |")
    print("|---|" + "---:|" * len(CADENCES))
    scores = []
    for speech in [*clips, joined(clips)]:
        row = []
        for cadence in CADENCES:
            score = wer(speech.reference, replay(transcriber, speech,
                                                 replace(settings, step_seconds=cadence)))
            scores.append(score)
            row.append(f"{score:.3f}")
        print(f"| {speech.name} | " + " | ".join(row) + " |")
        sys.stdout.flush()
    print(f"\nWER over every stream and cadence: mean {statistics.mean(scores):.3f}, "
          f"worst {max(scores):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
