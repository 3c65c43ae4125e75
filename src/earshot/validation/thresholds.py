"""``validation.toml``: the thresholds a release must meet, read and checked.

The file holds every value (nothing defaults silently); this module knows each
key's unit, meaning and direction, and refuses a file with a missing, unknown
or mistyped key in one line that names it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path


class ConfigError(ValueError):
    """validation.toml is unusable; the text (one line) says where and why."""


@dataclass(frozen=True)
class Spec:
    unit: str
    meaning: str
    kind: str  # "max": measured <= value passes; "min": measured >= value; "run": a setting
    integer: bool = False


SPECS: dict[str, dict[str, Spec]] = {
    "run": {
        "concurrent_streams": Spec("count", "real-time streams run at once", "run", True),
        "streams_per_profile": Spec("count", "streams per network profile", "run", True),
    },
    "suite": {
        "max_core_failures": Spec("count", "failed checks of the protocol core", "max", True),
        "max_extension_failures": Spec(
            "count", "failed checks of extensions the server offers", "max", True),
    },
    "clips": {
        "max_wer": Spec("ratio", "word error rate, worst clip at real time", "max"),
        "max_first_text_s": Spec("s", "first audio sent to first text, worst clip", "max"),
        "max_final_s": Spec("s", "END_OF_AUDIO to final transcript, worst clip", "max"),
        "max_rtf": Spec("ratio", "first audio to final transcript over duration, worst clip",
                        "max"),
    },
    "concurrency": {
        "min_sustained": Spec("count", "concurrent streams whole and keeping up", "min", True),
        "max_lag_s": Spec("s", "text lag behind the audio, worst concurrent stream", "max"),
        "max_final_s": Spec("s", "END_OF_AUDIO to final transcript, worst concurrent stream",
                            "max"),
    },
    "network": {
        "max_wer": Spec("ratio", "word error rate, worst stream of any network profile", "max"),
        "max_final_s": Spec("s", "END_OF_AUDIO to final transcript, worst stream of any "
                                 "network profile", "max"),
    },
    "container": {
        "max_peak_memory_mib": Spec("MiB", "the server container's peak memory", "max"),
    },
}


@dataclass(frozen=True)
class Thresholds:
    """The file's values by section and key, with the file they came from."""

    values: dict[str, dict[str, float]]
    path: Path

    def __getitem__(self, dotted: str) -> float:
        section, key = dotted.split(".")
        return self.values[section][key]

    def items(self) -> list[tuple[str, Spec, float]]:
        """(section.key, spec, value) for every threshold (not the run settings)."""
        return [(f"{section}.{key}", spec, self.values[section][key])
                for section, specs in SPECS.items() for key, spec in specs.items()
                if spec.kind != "run"]


def load(path: Path) -> Thresholds:
    """Read and check ``path``; ConfigError names the first problem."""
    name = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{name}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read it: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(SPECS))
    if unknown:
        raise ConfigError(f"{name}: unknown section [{unknown[0]}] "
                          f"(known: {', '.join(SPECS)})")
    values: dict[str, dict[str, float]] = {}
    for section, specs in SPECS.items():
        table = data.get(section)
        if not isinstance(table, dict):
            raise ConfigError(f"{name}: missing section [{section}]")
        extra = sorted(set(table) - set(specs))
        if extra:
            raise ConfigError(f"{name}: unknown key {section}.{extra[0]} "
                              f"(known: {', '.join(specs)})")
        values[section] = {key: _number(name, f"{section}.{key}", table.get(key), spec)
                           for key, spec in specs.items()}
    return Thresholds(values, path)


def _number(name: str, where: str, value: object, spec: Spec) -> float:
    if value is None:
        raise ConfigError(f"{name}: missing key {where} ({spec.unit}: {spec.meaning})")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name}: {where} must be a number ({spec.unit}), not {value!r}")
    if spec.integer and value != int(value):
        raise ConfigError(f"{name}: {where} must be a whole number ({spec.unit}), not {value!r}")
    if value < 0 or (spec.kind == "run" and value < 1):
        raise ConfigError(f"{name}: {where} is out of range: {value!r}")
    return int(value) if spec.integer else float(value)
