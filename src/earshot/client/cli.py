"""``earshot transcribe FILE``: stream a file to a server, show the text as it comes.

A live partial line while streaming (on a terminal), then the final
transcript. Exit 0 on success; 1 with a one-line reason on any error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from earshot import audio
from earshot.client.core import AsyncTranscriptionClient
from earshot.client.errors import ClientError


def _show_partial(client: AsyncTranscriptionClient) -> None:
    if not sys.stderr.isatty():
        return
    text = " ".join(s.text.strip() for s in client.transcript.completed[-2:])
    if client.partial is not None:
        text = f"{text} {client.partial.text.strip()}".strip()
    width = 100
    line = text[-width:] if len(text) > width else text
    print(f"\r\033[K{line}", end="", file=sys.stderr, flush=True)


async def transcribe(args: argparse.Namespace) -> list[str]:
    # Decoded first: a file that is not audio is named without a server, and
    # opens no session on one.
    samples = audio.load_audio(args.file)
    async with AsyncTranscriptionClient(
        args.url, language=args.language, api_key=args.api_key, on_segments=_show_partial
    ) as client:
        await client.stream(samples, realtime=args.realtime)
        segments = await client.finish(timeout=args.timeout)
    if sys.stderr.isatty():
        print("\r\033[K", end="", file=sys.stderr)
    return [s.text.strip() for s in segments]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="earshot", description="earshot's streaming client.")
    commands = parser.add_subparsers(dest="command", required=True)
    t = commands.add_parser("transcribe", help="stream an audio file and print its transcript")
    t.add_argument("file", help="any audio file soundfile reads (WAV, FLAC, OGG, ...)")
    t.add_argument("--url", default="ws://127.0.0.1:9090", help="server (default %(default)s)")
    t.add_argument("--realtime", action="store_true", help="pace the audio at real time")
    t.add_argument("--language", default="en", help="language code, or 'auto' to detect")
    t.add_argument("--api-key", default=None, help="the server's API key, if it needs one")
    t.add_argument("--timeout", type=float, default=60.0,
                   help="seconds to wait for the final transcript (default %(default)s)")
    args = parser.parse_args(argv)
    if args.language == "auto":
        args.language = None
    try:
        lines = asyncio.run(transcribe(args))
    except (ClientError, OSError, ValueError) as exc:
        print(f"earshot: {exc}", file=sys.stderr)
        return 1
    print(" ".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
