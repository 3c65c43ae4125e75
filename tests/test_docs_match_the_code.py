"""The tables the README and docs promise, read from the files a user reads, match
the code: the server's options and defaults, the shipped thresholds, the capacity
search's defaults. A default changed in one place and not the other fails here."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest

from earshot.server.config import ServerConfig, parse_config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
VALIDATION_DOC = (ROOT / "docs" / "validation.md").read_text(encoding="utf-8")


def _table_rows(text: str, first_header: str) -> list[list[str]]:
    """The body rows of the Markdown table whose header row starts with ``first_header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows


# The README's words for a default that is not a plain value.
SPOKEN = {"bundled tiny.en": None, "unset": None}


def _readme_defaults() -> dict[str, str]:
    defaults = {}
    for flags, default, _ in _table_rows(README, "option"):
        names = re.findall(r"`--([a-z-]+)`", flags)
        values = [v.strip() for v in default.split(",")] if len(names) > 1 else [default]
        for name, value in zip(names, values, strict=True):
            defaults[name.replace("-", "_")] = value
    return defaults


def test_the_options_table_lists_every_option_and_no_other() -> None:
    fields = {f.name for f in dataclasses.fields(ServerConfig)}
    assert set(_readme_defaults()) == fields


@pytest.mark.parametrize("name", sorted(_readme_defaults()))
def test_each_options_default_is_the_one_the_table_gives(name: str) -> None:
    written = _readme_defaults()[name]
    actual = getattr(parse_config([], {}), name)  # what the server starts with
    if written in SPOKEN:
        assert actual == SPOKEN[written]
    elif isinstance(actual, bool | str):
        assert str(actual) == written
    else:
        assert actual == pytest.approx(float(written)), f"--{name}: README says {written}"


def test_the_thresholds_table_gives_the_shipped_values() -> None:
    shipped = tomllib.loads((ROOT / "validation.toml").read_text(encoding="utf-8"))
    documented = {}
    for key, _unit, _meaning, value in _table_rows(VALIDATION_DOC, "key"):
        section, name = key.strip("`").split(".")
        documented.setdefault(section, {})[name] = float(value)
    assert documented == {section: {k: float(v) for k, v in values.items()}
                          for section, values in shipped.items()}


def test_the_capacity_search_runs_the_levels_and_soak_the_readme_gives() -> None:
    from earshot.load import cli

    levels = re.search(r"raises the number of users \(([\d, ]+);", README)
    assert levels is not None
    assert list(cli.DEFAULT_LEVELS) == [int(n) for n in levels.group(1).split(", ")]
    args = cli.parse_args(["capacity"])
    assert args.soak == 1800.0  # "then a 30 min soak" (make capacity)
    assert "then a 30 min soak" in README


def _named_wait_bounds() -> dict[str, float]:
    """The README's "Their bounds unless given `timeout=`" list: wait name -> seconds."""
    text = " ".join(README[README.index("Their bounds unless given"):].split("\n", 3)[:3])
    return {name: float(seconds)
            for name, seconds in re.findall(r"`(wait_for_[a-z_]+)` (\d+) s", text)}


class Bounds:
    """Stands in for the wait a function delegates to, recording the bound it is given
    (the function runs, with its own default: a signature alone would not show it)."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def __call__(self, *args: object, timeout: float, **kwargs: object) -> str:
        self.seen.append(timeout)
        return "done"

    async def async_(self, *args: object, timeout: float, **kwargs: object) -> str:
        return self(timeout=timeout)


@pytest.mark.parametrize("name", ["wait_for_state", "wait_for_sessions", "wait_for_transcript",
                                  "wait_for_container_status"])
async def test_each_named_wait_and_its_async_twin_bound_themselves_as_the_readme_says(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from earshot.testing import waiting
    bounds = Bounds()
    monkeypatch.setattr(waiting, "eventually", bounds)
    monkeypatch.setattr(waiting, "eventually_async", bounds.async_)
    from earshot.client import ConnectionState
    target = SimpleNamespace(client_id="c" * 16, shared=False)  # a client, a server
    args = {"wait_for_state": (target, ConnectionState.READY), "wait_for_sessions": (target, 1),
            "wait_for_transcript": (target,), "wait_for_container_status": (target, "exited")}
    getattr(waiting, name)(*args[name])
    await getattr(waiting, f"{name}_async")(*args[name])
    assert bounds.seen == [_named_wait_bounds()[name]] * 2


async def test_eventually_and_its_twin_wait_the_10_s_the_readme_gives(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from earshot.testing import waiting
    stated = re.search(r"`eventually` itself \(and its twin\) (\d+) s", README)
    assert stated is not None
    given: list[float] = []
    policy = waiting._policy

    def recording(timeout: float, max_interval: float) -> dict:
        given.append(timeout)
        return policy(timeout, max_interval)

    monkeypatch.setattr(waiting, "_policy", recording)
    assert waiting.eventually(lambda: 1) == 1
    assert await waiting.eventually_async(lambda: 2) == 2
    assert given == [float(stated.group(1))] * 2 == [10.0, 10.0]


def test_the_readme_lists_the_bound_of_every_named_wait() -> None:
    assert set(_named_wait_bounds()) == {"wait_for_state", "wait_for_sessions",
                                         "wait_for_transcript", "wait_for_container_status"}


async def test_the_leak_checks_wait_5_s_by_default_as_the_guard_the_readme_gives(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from earshot.plugin import leaks as guard
    from earshot.testing import leaks
    assert "(waited for, 5 s, as `earshot.testing.leaks.check`" in README
    assert guard.SETTLE_SECONDS == 5.0
    bounds = Bounds()
    monkeypatch.setattr(leaks, "eventually", bounds)
    monkeypatch.setattr(leaks, "eventually_async", bounds.async_)
    leaks.check(leaks.Snapshot(), leaks.Snapshot)
    await leaks.check_async(leaks.Snapshot(), leaks.Snapshot)
    assert bounds.seen == [guard.SETTLE_SECONDS] * 2


def test_the_probe_waits_10_s_by_default_as_docs_validation_says(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from earshot.testing import offers
    assert "each connection and each\n   GET waits at most 10 s" in VALIDATION_DOC
    seen: list[float] = []
    for step in ("_session", "_bad_config", "_http"):
        monkeypatch.setattr(offers, step, lambda url, headers, timeout, *rest: seen.append(timeout))
    offers.probe("ws://127.0.0.1:9", "http://127.0.0.1:9")
    assert seen == [10.0, 10.0, 10.0]


def test_a_probe_connection_waits_2_s_for_its_close_as_docs_validation_says(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from earshot.testing import offers
    assert "a connection at most 2 s more for the answer to its\n   close" in VALIDATION_DOC
    given: list[dict[str, object]] = []

    def connect(url: str, **options: object) -> None:
        given.append(options)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(offers, "connect", connect)
    with pytest.raises(offers.TargetError):
        offers._open("ws://127.0.0.1:9", {}, 10.0)
    assert [(o["open_timeout"], o["close_timeout"]) for o in given] == [(10.0, 2)]


def test_each_capacity_level_runs_the_45_s_the_readme_gives() -> None:
    from earshot.load import cli

    seconds = re.search(r"`--levels`\)\nfor (\d+) s each", README)
    assert seconds is not None
    assert cli.parse_args(["capacity"]).step_seconds == float(seconds.group(1)) == 45.0


def test_the_proxy_buffers_the_512_kib_the_readme_gives() -> None:
    from earshot.testing.proxy import connection

    kib = re.search(r"direction buffers at most (\d+) KiB", README)
    assert kib is not None
    assert connection.BUFFER_BYTES == int(kib.group(1)) * 1024 == 512 * 1024
    assert connection.Pipe()._limit == connection.BUFFER_BYTES  # each direction's default


def test_the_locustfiles_wer_margin_is_the_0_05_the_docs_give() -> None:
    # In a process of its own: importing Locust patches the standard library (gevent).
    import subprocess
    import sys

    code = ("from earshot.load import LOCUSTFILE; from earshot.load.runner import "
            "load_locustfile; from locust.argument_parser import get_parser; "
            "load_locustfile(LOCUSTFILE); "
            "print(get_parser().parse_args(['-f', str(LOCUSTFILE)]).wer_margin)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    margin = re.search(r"its\nWER within ([\d.]+) of faster-whisper's WER", README)
    assert margin is not None
    assert float(done.stdout.strip()) == float(margin.group(1)) == 0.05
    assert "`--wer-margin` 0.05" in (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
