"""The validation report: thresholds checked, and the evidence written to a folder.

:func:`evaluate` turns the suite's results and the measurements into
:class:`Check` rows against ``validation.toml``; :func:`write` puts into a
report folder ``metrics.json``, ``summary.md``, ``summary.html`` and the PNG
plots (drawn by :mod:`earshot.validation.plots`). The summary's first line is the
verdict: ``SHIP`` when every threshold holds, else ``DO NOT SHIP`` and which did not.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from earshot.testing.offers import EXTENSIONS, Offers
from earshot.validation.measure import Stream
from earshot.validation.plots import PLOTS, draw
from earshot.validation.suite import SuiteResult
from earshot.validation.thresholds import Thresholds


@dataclass
class Check:
    name: str  # section.key of validation.toml
    unit: str
    meaning: str
    limit: float
    kind: str  # max | min
    measured: float | None  # None: could not be measured (fails)
    note: str = ""

    @property
    def passed(self) -> bool:
        if self.measured is None:
            return False
        return self.measured <= self.limit if self.kind == "max" else self.measured >= self.limit


@dataclass
class Run:
    """Everything one validation run found; what the report is written from."""

    target: str
    server: str  # what it is, in words
    machine: str
    offers: Offers
    thresholds: Thresholds
    suite: SuiteResult | None = None
    clips: list[Stream] = field(default_factory=list)
    concurrency: list[Stream] = field(default_factory=list)
    network: list[Stream] = field(default_factory=list)
    container: dict[str, float | None] | None = None  # cpu_seconds, peak_memory_mib
    started: str = ""
    seconds: float = 0.0
    phases: tuple[str, ...] = ()  # the phases asked for: each must give its thresholds
    problems: dict[str, str] = field(default_factory=dict)  # phase -> why it could not run


def _worst(values: Sequence[float | None], fn=max) -> float | None:
    present = [v for v in values if v is not None]
    return fn(present) if present and len(present) == len(values) else None


def sustained(run: Run) -> list[Stream]:
    """The concurrent streams that came back whole and kept up with the audio."""
    t = run.thresholds
    return [s for s in run.concurrency
            if s.wer is not None and s.wer <= t["clips.max_wer"]
            and s.max_lag_s is not None and s.max_lag_s <= t["concurrency.max_lag_s"]]


def measured(run: Run) -> dict[str, tuple[float | None, str]]:
    """Each threshold's measured value, with a note where it needs one."""
    values: dict[str, tuple[float | None, str]] = {}
    if run.suite is not None:
        core, ext = run.suite.of("failed", "core"), run.suite.of("failed", "extension")
        values["suite.max_core_failures"] = (len(core), "")
        values["suite.max_extension_failures"] = (len(ext), "")
    if run.clips:
        estimated = any(s.final_estimated for s in run.clips)
        note = ("estimated: no END_OF_TRANSCRIPT; the close (or the last update) taken as "
                "the end" if estimated else "")
        values["clips.max_wer"] = (_worst([s.wer for s in run.clips]), "")
        values["clips.max_first_text_s"] = (_worst([s.first_text_s for s in run.clips]), "")
        values["clips.max_final_s"] = (_worst([s.final_s for s in run.clips]), note)
        values["clips.max_rtf"] = (_worst([s.rtf for s in run.clips]), note)
    if run.concurrency:
        values["concurrency.min_sustained"] = (
            len(sustained(run)), f"of {len(run.concurrency)} streams")
        values["concurrency.max_lag_s"] = (_worst([s.max_lag_s for s in run.concurrency]), "")
        values["concurrency.max_final_s"] = (_worst([s.final_s for s in run.concurrency]), "")
    if run.network:
        values["network.max_wer"] = (_worst([s.wer for s in run.network]), "")
        values["network.max_final_s"] = (_worst([s.final_s for s in run.network]), "")
    if run.container is not None:
        values["container.max_peak_memory_mib"] = (run.container.get("peak_memory_mib"), "")
    return values


def evaluate(run: Run) -> list[Check]:
    """A check per threshold of each phase asked for (the container's only on a
    container). A phase that could not run, or gave nothing to measure, fails its
    thresholds, with the reason as the note."""
    found = measured(run)
    checks = []
    for name, spec, limit in run.thresholds.items():
        section = name.split(".")[0]
        if name in found:
            value, note = found[name]
            if value is None and not note:
                note = "not measured: a stream failed (see metrics.json)"
        elif section in run.phases:
            value = None
            why = run.problems.get(section)
            note = f"not measured: the phase could not run: {why}" if why else (
                "not measured: the phase gave nothing to measure")
        else:
            continue
        checks.append(Check(name, spec.unit, spec.meaning, limit, spec.kind, value, note))
    return checks


def ships(checks: Sequence[Check]) -> bool:
    """SHIP: something was checked, and every check holds."""
    return bool(checks) and all(c.passed for c in checks)


def exit_status(checks: Sequence[Check]) -> int:
    """The validator's exit status for ``checks``: 0 for SHIP, 1 for DO NOT SHIP."""
    return 0 if ships(checks) else 1


def verdict(checks: Sequence[Check]) -> str:
    if ships(checks):
        return f"SHIP: all {len(checks)} thresholds hold."
    if not checks:
        return "DO NOT SHIP: no threshold was checked."
    failed = [c for c in checks if not c.passed]
    return "DO NOT SHIP: " + "; ".join(_failure(c) for c in failed) + "."


def _failure(check: Check) -> str:
    value = "not measured" if check.measured is None else _fmt(check.measured)
    bound = "<=" if check.kind == "max" else ">="
    return f"{check.name} is {value} {check.unit}, needs {bound} {_fmt(check.limit)}"


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


# -- the files -----------------------------------------------------------------------


def metrics(run: Run, checks: Sequence[Check]) -> dict[str, Any]:
    return {
        "verdict": verdict(checks),
        "target": run.target, "server": run.server, "machine": run.machine,
        "started": run.started, "seconds": round(run.seconds, 1),
        "thresholds_file": str(run.thresholds.path),
        "phases": list(run.phases), "problems": run.problems,
        "checks": [{"name": c.name, "unit": c.unit, "limit": c.limit, "kind": c.kind,
                    "measured": c.measured, "passed": c.passed, "note": c.note}
                   for c in checks],
        "extensions": run.offers.as_dict(),
        "suite": None if run.suite is None else {
            "exit_code": run.suite.exit_code, "seed": run.suite.seed,
            "tests": [t.as_dict() for t in run.suite.tests]},
        "clips": [s.as_dict() for s in run.clips],
        "concurrency": {
            "streams": len(run.concurrency),
            "sustained": len(sustained(run)),
            "worst_final_s": _worst([s.final_s for s in run.concurrency]),
            "per_stream": [s.as_dict() for s in run.concurrency]},
        "network": [s.as_dict() for s in run.network],
        "container": run.container,
    }


def summary_rows(run: Run, checks: Sequence[Check]) -> dict[str, list[list[str]]]:
    """The summary's tables, as rows of text (shared by the Markdown and the HTML)."""
    tables: dict[str, list[list[str]]] = {}
    tables["Thresholds"] = [["check", "measured", "limit", "unit", "result", "note"]] + [
        [c.name, _fmt(c.measured), ("<= " if c.kind == "max" else ">= ") + _fmt(c.limit),
         c.unit, "pass" if c.passed else "FAIL", c.note] for c in checks]
    if run.problems:
        tables["Phases that could not run"] = [["phase", "why"]] + [
            [phase, _short(why)] for phase, why in run.problems.items()]
    tables["Extensions (found by probing)"] = [["extension", "offered", "what the probe saw"]] + [
        [name, "yes" if name in run.offers.offered else "not offered",
         run.offers.seen.get(name, "")] for name in EXTENSIONS]
    if run.suite is not None:
        counts = [["kind", "passed", "failed", "not offered", "not run"]]
        for kind in ("core", "extension"):
            counts.append([kind] + [str(len(run.suite.of(o, kind)))
                                    for o in ("passed", "failed", "not offered", "not run")])
        tables["Scenario suite"] = counts
        skipped = [t for t in run.suite.tests if t.outcome in ("not offered", "not run")]
        reasons: dict[str, int] = {}
        for t in skipped:
            reason = (f"not offered: {t.message.split(' (')[0]}" if t.outcome == "not offered"
                      else t.message)
            reasons[reason] = reasons.get(reason, 0) + 1
        if reasons:
            tables["Checks not made here, and why"] = [["reason", "checks"]] + [
                [_short(reason), str(n)] for reason, n in sorted(reasons.items())]
        departures = run.suite.of("failed", "core")
        if departures:
            tables["Departures from the protocol core"] = [["test", "what happened"]] + [
                [t.nodeid.split("::", 1)[-1], _short(t.message)] for t in departures]
        ext = run.suite.of("failed", "extension")
        if ext:
            tables["Failed extension checks"] = [["test", "extensions", "what happened"]] + [
                [t.nodeid.split("::", 1)[-1], ", ".join(t.extensions), _short(t.message)]
                for t in ext]
    if run.clips:
        tables["Clips at real time"] = [["clip", "s", "WER", "first text s", "final s",
                                         "RTF", "note"]] + [
            [s.clip, f"{s.seconds:.1f}", _fmt(s.wer), _fmt(s.first_text_s), _fmt(s.final_s),
             _fmt(s.rtf), s.error or ("final estimated" if s.final_estimated else "")]
            for s in run.clips]
    if run.concurrency:
        tables["Concurrent real-time streams"] = [["stream", "clip", "WER", "max lag s",
                                                   "final s", "note"]] + [
            [str(i), s.clip, _fmt(s.wer), _fmt(s.max_lag_s), _fmt(s.final_s), s.error or ""]
            for i, s in enumerate(run.concurrency)]
    if run.network:
        rows = [["profile", "streams", "WER (worst)", "first text s (worst)",
                 "final s (worst)", "failed"]]
        for profile in dict.fromkeys(s.profile for s in run.network):
            mine = [s for s in run.network if s.profile == profile]
            rows.append([str(profile), str(len(mine)), _fmt(_worst([s.wer for s in mine])),
                         _fmt(_worst([s.first_text_s for s in mine])),
                         _fmt(_worst([s.final_s for s in mine])),
                         str(sum(not s.ok for s in mine))])
        tables["Network profiles (through the latency proxy)"] = rows
    if run.container is not None:
        tables["Server container"] = [["CPU seconds", "peak memory MiB"],
                                      [_fmt(run.container.get("cpu_seconds")),
                                       _fmt(run.container.get("peak_memory_mib"))]]
    return tables


def _short(text: str, limit: int = 240) -> str:
    """A failure's message as a table cell (metrics.json keeps it whole)."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _header(run: Run) -> list[str]:
    return [f"Target: {run.target} ({run.server})", f"Machine: {run.machine}",
            f"Started {run.started} UTC, took {run.seconds:.0f} s; thresholds from "
            f"{run.thresholds.path.name}"
            + (f"; suite seed {run.suite.seed}" if run.suite and run.suite.seed else "")]


def markdown(run: Run, checks: Sequence[Check]) -> str:
    lines = [verdict(checks), "", *[f"- {line}" for line in _header(run)], ""]
    for title, rows in summary_rows(run, checks).items():
        lines += [f"## {title}", "", _md_row(rows[0]), _md_row(["---"] * len(rows[0]))]
        lines += [_md_row(row) for row in rows[1:]] + [""]
    lines += ["## Plots", ""] + [f"- `{name}`: {what}" for name, what in PLOTS.items()] + [""]
    return "\n".join(lines)


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def html_page(run: Run, checks: Sequence[Check]) -> str:
    e = html.escape
    ship = ships(checks)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>earshot validation</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
        "margin-bottom:1.5em}td,th{border:1px solid #bbb;padding:3px 8px;text-align:left}"
        ".FAIL{background:#fdd}.pass{background:#dfd}h1.ship{color:#060}h1.stop{color:#a00}"
        "</style></head><body>",
        f"<h1 class='{'ship' if ship else 'stop'}'>{e(verdict(checks))}</h1>",
        "<ul>" + "".join(f"<li>{e(line)}</li>" for line in _header(run)) + "</ul>",
    ]
    for title, rows in summary_rows(run, checks).items():
        parts.append(f"<h2>{e(title)}</h2><table><tr>"
                     + "".join(f"<th>{e(c)}</th>" for c in rows[0]) + "</tr>")
        for row in rows[1:]:
            parts.append("<tr>" + "".join(
                f"<td class='{e(c)}'>{e(c)}</td>" if c in ("pass", "FAIL") else f"<td>{e(c)}</td>"
                for c in row) + "</tr>")
        parts.append("</table>")
    for name, what in PLOTS.items():
        parts.append(f"<h2>{e(what)}</h2><img src='{e(name)}' alt='{e(what)}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write(run: Run, folder: Path) -> list[Check]:
    """Every file of the report into ``folder`` (which exists); returns the checks."""
    checks = evaluate(run)
    (folder / "metrics.json").write_text(json.dumps(metrics(run, checks), indent=2) + "\n")
    (folder / "summary.md").write_text(markdown(run, checks))
    (folder / "summary.html").write_text(html_page(run, checks))
    draw(run, folder)
    return checks
