"""Server settings in-process: flags, EARSHOT_* variables, --help, and validation.

The server as a command (exit 2 and one line on a bad setting) is tested in
test_process.py; here parse_config and validate are called directly.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import ctranslate2
import pytest

from earshot.server.config import ConfigError, ServerConfig, env_name, parse_config, validate
from earshot.server.streaming import StreamSettings


def help_text(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        parse_config(["--help"], {})
    assert exited.value.code == 0
    return capsys.readouterr().out


def refused(message: str, **values: object) -> None:
    """validate refuses ServerConfig(**values) with exactly ``message``."""
    with pytest.raises(ConfigError) as caught:
        validate(ServerConfig(**values))  # type: ignore[arg-type]
    assert str(caught.value) == message


# -- flags and environment ------------------------------------------------------


def test_every_option_has_an_environment_variable_named_after_it() -> None:
    assert env_name("max_clients") == "EARSHOT_MAX_CLIENTS"
    assert parse_config([], {"EARSHOT_MAX_BACKLOG_SECONDS": "30"}).max_backlog_seconds == 30.0


def test_a_flag_wins_over_the_environment_for_that_option_only() -> None:
    env = {"EARSHOT_PORT": "1234", "EARSHOT_WORKERS": "3"}
    config = parse_config(["--port", "4321"], env)
    assert (config.port, config.workers) == (4321, 3)


def test_the_process_environment_is_read_when_none_is_given(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("EARSHOT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("EARSHOT_MAX_CLIENTS", "9")
    assert parse_config([]).max_clients == 9
    assert parse_config([], {}).max_clients == ServerConfig().max_clients


def test_an_empty_variable_or_no_value_leaves_the_default() -> None:
    assert parse_config([], {"EARSHOT_PORT": "", "EARSHOT_API_KEY": ""}) == ServerConfig()
    assert parse_config([], {}) == ServerConfig()


def test_every_option_is_parsed_to_its_type_from_flags() -> None:
    config = parse_config([
        "--host", "0.0.0.0", "--port", "0", "--device", "cpu", "--compute-type", "int8",
        "--cpu-threads", "3", "--workers", "1", "--beam-size", "2", "--partial-beam-size", "1",
        "--first-pass-seconds", "0.25", "--settle-seconds", "1.5", "--confirm-passes", "2",
        "--max-clients", "8", "--max-connection-time", "60", "--api-key", "k",
        "--handshake-timeout", "1.5", "--max-frame-bytes", "2048",
        "--max-backlog-seconds", "30", "--ping-interval", "0.5", "--ping-timeout", "0.25",
        "--drain-timeout", "9", "--log-format", "json", "--log-level", "debug",
    ], {})
    assert config == ServerConfig(
        host="0.0.0.0", port=0, device="cpu", compute_type="int8", cpu_threads=3, workers=1,
        beam_size=2, partial_beam_size=1, first_pass_seconds=0.25, settle_seconds=1.5,
        confirm_passes=2, max_clients=8, max_connection_time=60.0, api_key="k",
        handshake_timeout=1.5, max_frame_bytes=2048, max_backlog_seconds=30.0,
        ping_interval=0.5, ping_timeout=0.25, drain_timeout=9.0, log_format="json",
        log_level="debug",
    )
    assert type(config.port) is int and type(config.max_connection_time) is float


@pytest.mark.parametrize(("argv", "env", "message"), [
    (["--max-clients", "many"], {}, "--max-clients: expected an integer, got 'many'"),
    ([], {"EARSHOT_MAX_CLIENTS": "many"}, "EARSHOT_MAX_CLIENTS: expected an integer, got 'many'"),
    (["--ping-timeout", "soon"], {}, "--ping-timeout: expected a number, got 'soon'"),
    ([], {"EARSHOT_PING_TIMEOUT": "1,5"}, "EARSHOT_PING_TIMEOUT: expected a number, got '1,5'"),
])
def test_a_value_of_the_wrong_type_names_where_it_came_from(argv, env, message) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(argv, env)
    assert str(caught.value) == message


def test_parsed_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"^--workers: must be at least 1$"):
        parse_config([], {"EARSHOT_WORKERS": "0"})


def test_an_unknown_flag_is_a_usage_error_of_earshot_server(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_config(["--no-such-flag"], {})
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: earshot-server ")
    assert "earshot-server: error: unrecognized arguments: --no-such-flag" in err


def test_help_names_each_option_its_variable_and_its_default(capsys) -> None:
    text = " ".join(help_text(capsys).split())  # argparse wraps lines
    assert text.startswith("usage: earshot-server ")
    assert " A WhisperLive-compatible streaming transcription server. options: " in text
    assert text.endswith("Every option can also be set as EARSHOT_<OPTION> in the environment.")
    defaults = ServerConfig()
    for f in dataclasses.fields(ServerConfig):
        flag = "--" + f.name.replace("_", "-")
        assert f"{flag} {f.name.upper()} " in text, flag
        assert f"[env {env_name(f.name)}; default {getattr(defaults, f.name)}]" in text, flag
    assert "sessions served at once; the next one gets WAIT and close 1013" in text


# -- validation -----------------------------------------------------------------


def test_the_defaults_are_valid() -> None:
    assert validate(ServerConfig()) == ServerConfig()


def test_an_unknown_device_is_refused_with_the_known_ones() -> None:
    refused("--device: unknown device 'tpu'; use auto, cpu, cuda", device="tpu")


def test_only_a_cuda_device_needs_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    # The one stand-in here: how many GPUs CTranslate2 sees.
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 0)
    with pytest.raises(ConfigError, match=r"^--device cuda: no CUDA GPU found \(.*\); use "):
        validate(ServerConfig(device="cuda"))
    assert validate(ServerConfig(device="cpu")).device == "cpu"
    assert validate(ServerConfig(device="auto")).device == "auto"
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 1)
    assert validate(ServerConfig(device="cuda")).device == "cuda"


@pytest.mark.parametrize("port", [0, 1, 65535])
def test_ports_from_0_to_65535_are_accepted(port: int) -> None:
    assert validate(ServerConfig(port=port)).port == port


@pytest.mark.parametrize("port", [-1, 65536])
def test_a_port_outside_0_to_65535_is_refused(port: int) -> None:
    refused(f"--port: {port} is not a port number (0-65535)", port=port)


COUNTS = ("workers", "beam_size", "partial_beam_size", "max_clients", "max_frame_bytes")


@pytest.mark.parametrize("name", COUNTS)
def test_counts_must_be_at_least_one(name: str) -> None:
    refused(f"--{name.replace('_', '-')}: must be at least 1", **{name: 0})
    assert getattr(validate(ServerConfig(**{name: 1})), name) == 1  # type: ignore[arg-type]


DURATIONS = ("max_connection_time", "handshake_timeout",
             "ping_interval", "ping_timeout", "drain_timeout")  # the backlog: below


@pytest.mark.parametrize("name", DURATIONS)
def test_durations_must_be_greater_than_zero(name: str) -> None:
    for bad in (0.0, -1.0):
        refused(f"--{name.replace('_', '-')}: must be greater than 0", **{name: bad})
    assert getattr(validate(ServerConfig(**{name: 0.5})), name) == 0.5  # type: ignore[arg-type]


def test_the_backlog_limit_is_at_least_a_window_and_a_step() -> None:
    from earshot.server.config import MIN_BACKLOG_SECONDS

    for bad in (-1.0, 0.0):
        refused("--max-backlog-seconds: must be greater than 0", max_backlog_seconds=bad)
    refused(f"--max-backlog-seconds: must be at least {MIN_BACKLOG_SECONDS:g} "
            "(a full window of audio and a step)",
            max_backlog_seconds=MIN_BACKLOG_SECONDS - 0.5)
    limit = validate(ServerConfig(max_backlog_seconds=MIN_BACKLOG_SECONDS)).max_backlog_seconds
    assert limit == MIN_BACKLOG_SECONDS


@pytest.mark.parametrize("seconds", [0.1, 0.5, 10.0])
def test_first_pass_seconds_from_a_tenth_to_ten_are_accepted(seconds: float) -> None:
    assert validate(ServerConfig(first_pass_seconds=seconds)).first_pass_seconds == seconds


@pytest.mark.parametrize("seconds", [0.0, 0.09, 10.5])
def test_first_pass_seconds_outside_a_tenth_to_ten_are_refused(seconds: float) -> None:
    refused("--first-pass-seconds: must be between 0.1 and 10", first_pass_seconds=seconds)


@pytest.mark.parametrize("seconds", [0.0, 0.5, 10.0])
def test_settle_seconds_from_zero_to_ten_are_accepted(seconds: float) -> None:
    assert validate(ServerConfig(settle_seconds=seconds)).settle_seconds == seconds


@pytest.mark.parametrize("seconds", [-0.1, 10.5])
def test_settle_seconds_outside_zero_to_ten_are_refused(seconds: float) -> None:
    refused("--settle-seconds: must be between 0 and 10", settle_seconds=seconds)


@pytest.mark.parametrize("passes", [0, 2, 3])
def test_confirm_passes_is_off_or_at_least_two(passes: int) -> None:
    assert validate(ServerConfig(confirm_passes=passes)).confirm_passes == passes


@pytest.mark.parametrize("passes", [-1, 1])
def test_confirm_passes_of_one_or_below_zero_is_refused(passes: int) -> None:
    refused("--confirm-passes: must be 0 (off) or 2 or more (1 would confirm every pass's "
            "text unchecked)", confirm_passes=passes)


def test_cpu_threads_may_be_zero_but_not_negative() -> None:
    assert validate(ServerConfig(cpu_threads=0)).cpu_threads == 0
    refused("--cpu-threads: must be 0 (automatic) or more", cpu_threads=-1)


def test_log_format_and_level_must_be_known_ones() -> None:
    for log_format in ("text", "json"):
        assert validate(ServerConfig(log_format=log_format)).log_format == log_format
    for level in ("debug", "info", "warning", "error"):
        assert validate(ServerConfig(log_level=level)).log_level == level
    refused("--log-format: use text or json, not 'xml'", log_format="xml")
    refused("--log-level: use one of debug, info, warning, error", log_level="trace")


def test_a_model_folder_must_hold_a_model_bin(tmp_path: Path) -> None:
    refused(f"--model: {str(tmp_path)!r} is not a model folder (no model.bin there)",
            model=str(tmp_path))
    (tmp_path / "model.bin").write_bytes(b"")
    assert validate(ServerConfig(model=str(tmp_path))).model == str(tmp_path)


def test_a_model_name_is_left_to_faster_whisper() -> None:
    assert validate(ServerConfig(model="tiny.en")).model == "tiny.en"


def test_the_stream_settings_carry_the_pass_options() -> None:
    config = ServerConfig(first_pass_seconds=0.3, settle_seconds=1.5, confirm_passes=3)
    assert config.stream_settings() == StreamSettings(
        first_pass_seconds=0.3, settle_seconds=1.5, confirm_passes=3)
