"""Server settings: flags, matching EARSHOT_* environment variables, validation.

Every option is a flag (``--max-clients``) and an environment variable
(``EARSHOT_MAX_CLIENTS``); a flag wins over the variable, the variable over
the default. Bad values stop the server at start with a message that names
the option and what it accepts.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from earshot.server.model_spec import DEVICES, cuda_problem, looks_like_path
from earshot.server.streaming import StreamSettings
from earshot.server.window import MAX_WINDOW_SECONDS

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
# Reading stops at the backlog limit; a session's window must still move on without
# new audio then, which a full window (and a pass's step) in the backlog guarantees.
MIN_BACKLOG_SECONDS = math.ceil(MAX_WINDOW_SECONDS + StreamSettings().step_seconds)


class ConfigError(ValueError):
    """A setting is invalid; the text names it."""


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 9090
    model: str | None = None  # None: the bundled tiny.en
    device: str = "auto"
    compute_type: str = "auto"
    cpu_threads: int = 0  # 0: the cores divided among the workers
    workers: int = 2
    beam_size: int = 5
    partial_beam_size: int = 5
    first_pass_seconds: float = 0.5
    settle_seconds: float = 2.0
    confirm_passes: int = 0
    max_clients: int = 4
    max_connection_time: float = 600.0
    api_key: str | None = None
    handshake_timeout: float = 10.0
    max_frame_bytes: int = 1024 * 1024
    max_backlog_seconds: float = 120.0
    ping_interval: float = 2.0
    ping_timeout: float = 2.0
    drain_timeout: float = 3.0
    log_format: str = "text"
    log_level: str = "info"

    def stream_settings(self) -> StreamSettings:
        """The pass policy these options set (a client's config adds its own part)."""
        return StreamSettings(first_pass_seconds=self.first_pass_seconds,
                              settle_seconds=self.settle_seconds,
                              confirm_passes=self.confirm_passes)


# name -> help text; the order is the order of --help.
_HELP = {
    "host": "address to listen on (0.0.0.0 in a container)",
    "port": "port for WebSocket and HTTP; 0 picks a free one and logs it",
    "model": "faster-whisper model folder or name (default: the bundled tiny.en)",
    "device": "auto (CUDA when CTranslate2 sees a GPU), cpu or cuda",
    "compute_type": "auto (float16 on CUDA, int8 on CPU) or a CTranslate2 compute type",
    "cpu_threads": "threads per inference worker; 0 divides the cores among the workers",
    "workers": "inference worker threads sharing the model",
    "beam_size": "beam size for decoding (1 is greedy and faster); the final pass uses it",
    "partial_beam_size": "beam size of the passes before END_OF_AUDIO, whose text is "
                         "redone by the next pass",
    "first_pass_seconds": "audio a session needs before its first pass (first text comes "
                          "this much plus one pass after the first audio)",
    "settle_seconds": "a segment is completed once the window reaches this far past its "
                      "end (longer: more context for the words after it)",
    "confirm_passes": "also complete a segment once this many passes in a row agree on it "
                      "(0: off; segments then complete once settled)",
    "max_clients": "sessions served at once; the next one gets WAIT and close 1013",
    "max_connection_time": "seconds a session may last before DISCONNECT and close 1001",
    "api_key": "require this key (Bearer header or ?token=); unset: no key needed",
    "handshake_timeout": "seconds a client has to send its config after connecting",
    "max_frame_bytes": "largest audio frame accepted; a larger one gets close 1009",
    "max_backlog_seconds": "untranscribed audio per session before reading pauses",
    "ping_interval": "seconds between keepalive pings (finds clients that vanished)",
    "ping_timeout": "seconds to wait for a pong before freeing the session",
    "drain_timeout": "seconds a SIGTERM drain waits for sessions to close",
    "log_format": "text or json (one object per line)",
    "log_level": "debug, info, warning or error",
}


def env_name(field: str) -> str:
    return "EARSHOT_" + field.upper()


def parse_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    """Build a validated ServerConfig from flags and the environment."""
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="earshot-server",
        description="A WhisperLive-compatible streaming transcription server.",
        epilog="Every option can also be set as EARSHOT_<OPTION> in the environment.",
    )
    defaults = ServerConfig()
    for f in fields(ServerConfig):
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=None,
            metavar=f.name.upper(),
            help=f"{_HELP[f.name]} [env {env_name(f.name)}; default {getattr(defaults, f.name)}]",
        )
    args = parser.parse_args(argv)
    values: dict[str, object] = {}
    for f in fields(ServerConfig):
        raw = getattr(args, f.name)
        source = f"--{f.name.replace('_', '-')}"
        if raw is None and env_name(f.name) in environ:
            raw, source = environ[env_name(f.name)], env_name(f.name)
        if raw is None or raw == "":
            continue
        values[f.name] = _convert(f.name, raw, type(getattr(defaults, f.name)), source)
    return validate(ServerConfig(**values))


def _convert(name: str, raw: str, kind: type, source: str) -> object:
    if kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise ConfigError(f"{source}: expected {noun}, got {raw!r}") from None
    return raw


def validate(config: ServerConfig) -> ServerConfig:
    """Reject values the server cannot run with, naming the option."""
    if config.device not in DEVICES:
        raise ConfigError(f"--device: unknown device {config.device!r}; use {', '.join(DEVICES)}")
    if config.device == "cuda" and (problem := cuda_problem()):
        raise ConfigError(f"--device cuda: {problem}")
    if not 0 <= config.port <= 65535:
        raise ConfigError(f"--port: {config.port} is not a port number (0-65535)")
    positive = ("workers", "beam_size", "partial_beam_size", "max_clients", "max_frame_bytes")
    for name in positive:
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: must be at least 1")
    for name in ("max_connection_time", "handshake_timeout", "max_backlog_seconds",
                 "ping_interval", "ping_timeout", "drain_timeout"):
        if not getattr(config, name) > 0:
            raise ConfigError(f"--{name.replace('_', '-')}: must be greater than 0")
    if config.max_backlog_seconds < MIN_BACKLOG_SECONDS:
        raise ConfigError(f"--max-backlog-seconds: must be at least {MIN_BACKLOG_SECONDS} "
                          "(a full window of audio and a step)")
    if not 0.1 <= config.first_pass_seconds <= 10:
        raise ConfigError("--first-pass-seconds: must be between 0.1 and 10")
    if not 0 <= config.settle_seconds <= 10:
        raise ConfigError("--settle-seconds: must be between 0 and 10")
    if config.confirm_passes < 0 or config.confirm_passes == 1:
        raise ConfigError("--confirm-passes: must be 0 (off) or 2 or more (1 would "
                          "confirm every pass's text unchecked)")
    if config.cpu_threads < 0:
        raise ConfigError("--cpu-threads: must be 0 (automatic) or more")
    if config.log_format not in LOG_FORMATS:
        raise ConfigError(
            f"--log-format: use {' or '.join(LOG_FORMATS)}, not {config.log_format!r}"
        )
    if config.log_level not in LOG_LEVELS:
        raise ConfigError(f"--log-level: use one of {', '.join(LOG_LEVELS)}")
    if config.model and looks_like_path(config.model):
        path = Path(config.model)
        if not (path / "model.bin").is_file():
            raise ConfigError(
                f"--model: {config.model!r} is not a model folder (no model.bin there)"
            )
    return config

