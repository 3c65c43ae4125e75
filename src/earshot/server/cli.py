"""``earshot-server`` / ``python -m earshot.server``: run until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence

from earshot.server import logs
from earshot.server.app import Server, StartupError
from earshot.server.config import ConfigError, ServerConfig, parse_config
from earshot.server.engine import ModelLoadError

EXIT_CONFIG = 2


async def run(config: ServerConfig) -> None:
    """Serve until SIGTERM or SIGINT, then drain."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = Server(config)
    try:
        await server.start()
        await stop.wait()
    finally:
        await server.drain()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = parse_config(argv)
    except ConfigError as exc:
        print(f"earshot-server: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logs.configure(config.log_format, config.log_level)
    try:
        asyncio.run(run(config))
    except (StartupError, ModelLoadError, ValueError) as exc:
        print(f"earshot-server: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


if __name__ == "__main__":
    sys.exit(main())
