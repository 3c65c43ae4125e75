"""The tables the README and docs promise, read from the files a user reads, match
the code: the server's options and defaults, the shipped thresholds, the capacity
search's defaults. A default changed in one place and not the other fails here."""

from __future__ import annotations

import dataclasses
import inspect
import re
import tomllib
from pathlib import Path

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


def test_the_named_waits_bound_themselves_and_their_async_twins_as_the_readme_says() -> None:
    from earshot.testing import waiting
    bounds = _named_wait_bounds()
    assert set(bounds) == {"wait_for_state", "wait_for_sessions", "wait_for_transcript",
                           "wait_for_container_status"}
    for name, seconds in bounds.items():
        for wait in (getattr(waiting, name), getattr(waiting, f"{name}_async")):
            assert inspect.signature(wait).parameters["timeout"].default == seconds, wait


def test_the_leak_checks_wait_as_long_as_the_guard_the_readme_gives() -> None:
    from earshot.plugin import leaks as guard
    from earshot.testing import leaks
    assert "(waited for, 5 s, as `earshot.testing.leaks.check`" in README
    assert guard.SETTLE_SECONDS == 5.0
    for check in (leaks.check, leaks.check_async):
        assert inspect.signature(check).parameters["timeout"].default == guard.SETTLE_SECONDS


def test_the_probe_waits_as_long_as_docs_validation_says() -> None:
    from earshot.testing import offers
    assert "each connection and each\n   GET waits at most 10 s" in VALIDATION_DOC
    assert inspect.signature(offers.probe).parameters["timeout"].default == 10.0
