"""The server as a process: command line, environment, SIGTERM drain."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from websockets.asyncio.client import connect

from earshot import protocol
from earshot.protocol import CloseCode
from earshot.server.config import ConfigError, ServerConfig, parse_config
from earshot.testing import wire
from earshot.testing.local import LocalServer
from earshot.testing.waiting import wait_for_sessions


def run_server(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The server as a command, with only the environment given (no stray EARSHOT_*)."""
    if env is None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EARSHOT_")}
    return subprocess.run(
        [sys.executable, "-m", "earshot.server", *args],
        capture_output=True, text=True, timeout=60, env=env,
    )


def test_flags_override_environment_which_overrides_defaults() -> None:
    env = {"EARSHOT_PORT": "1234", "EARSHOT_MAX_CLIENTS": "7", "EARSHOT_API_KEY": "k"}
    config = parse_config(["--port", "4321"], env)
    assert (config.port, config.max_clients, config.api_key) == (4321, 7, "k")
    assert parse_config([], {}) == ServerConfig()


@pytest.mark.parametrize(
    ("argv", "env", "words"),
    [
        (["--device", "tpu"], {}, "--device: unknown device 'tpu'"),
        ([], {"EARSHOT_MAX_CLIENTS": "many"}, "EARSHOT_MAX_CLIENTS: expected an integer"),
        (["--max-clients", "0"], {}, "--max-clients: must be at least 1"),
        (["--partial-beam-size", "0"], {}, "--partial-beam-size: must be at least 1"),
        (["--first-pass-seconds", "0"], {}, "--first-pass-seconds: must be between"),
        (["--settle-seconds", "-1"], {}, "--settle-seconds: must be between"),
        (["--confirm-passes", "1"], {}, "--confirm-passes: must be 0"),
        (["--port", "70000"], {}, "not a port number"),
        (["--model", "/no/such/model"], {}, "is not a model folder"),
        (["--log-format", "xml"], {}, "--log-format"),
    ],
)
def test_bad_settings_are_named(argv, env, words) -> None:
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        parse_config(argv, env)


def test_bad_setting_exits_2_with_one_line() -> None:
    result = run_server("--device", "tpu")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "earshot-server: --device: unknown device 'tpu'; use auto, cpu, cuda"
    )


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_server("--port", str(port))
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr


def test_json_logs_are_one_object_per_line(jfk) -> None:
    with LocalServer("--log-format", "json") as srv:
        asyncio.run(wire.stream(srv.ws_url, jfk[:16000], speed=None, uid="json-uid"))
        wait_for_sessions(srv, 0)
    records = [json.loads(line) for line in srv.log_text().splitlines() if line.startswith("{")]
    events = {r["event"] for r in records}
    assert {"listening", "ready", "session started", "session ended", "stopped"} <= events
    ended = next(r for r in records if r["event"] == "session ended")
    assert ended["uid"] == "json-uid" and len(ended["session_id"]) == 32


async def test_sigterm_drains_sessions_and_exits_0(jfk) -> None:
    srv = LocalServer()
    srv.start()
    try:
        async with connect(srv.ws_url) as ws:
            await ws.send(json.dumps(wire.config(uid="drained")))
            await ws.recv()
            await ws.send(protocol.encode_audio(jfk[:16000]))
            signalled = time.monotonic()
            srv.signal(signal.SIGTERM)
            messages = [protocol.parse_server_message(m) async for m in ws]
        assert messages[-1].kind == "disconnect"
        assert ws.close_code == CloseCode.GOING_AWAY
        code = await asyncio.to_thread(srv.wait, 5)
        assert code == 0
        assert time.monotonic() - signalled < 5
    finally:
        srv.stop()


def test_a_local_servers_api_key_is_not_on_its_command_line() -> None:
    """Every user of the machine sees a process's argv (``ps``); the key goes in the
    environment, which only the process's owner can read, and is still required."""
    key = "a-secret-key-1234"
    with LocalServer(api_key=key) as srv:
        assert srv.process is not None
        with open(f"/proc/{srv.process.pid}/cmdline", "rb") as cmdline:
            argv = cmdline.read().split(b"\0")
        assert not any(key.encode() in arg for arg in argv), argv
        assert srv.get("/status", headers={"Authorization": ""})[0] == 401
        assert srv.get("/status")[0] == 200  # the target's own Bearer header
