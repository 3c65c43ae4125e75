"""make mutate's table: mutmut's results, scored per module.

Reads ``mutmut results --all true`` (run from the checkout after ``mutmut run``)
and the equivalent mutants listed in docs/suite.md (the table under
"Equivalent mutants": a mutant's name in backticks in the first cell, the reason
in the second). A mutant is killed when a test failed, timed out or crashed on
it; an equivalent one cannot be killed (no behaviour changed) and is counted
apart. The score of a module is killed / (mutants - equivalent - not checked), and
a module with mutants not checked yet is marked incomplete (and fails --min).

    python scripts/mutation_score.py [--min 95]    # exit 1 if a module scores under it
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE_DOC = ROOT / "docs" / "suite.md"
KILLED = {"killed", "timeout", "segfault", "suspicious"}
# mutmut's status words, and the one each is shown under here
SHOWN = {"killed": "killed", "timeout": "killed", "segfault": "killed",
         "suspicious": "killed", "survived": "survived", "no tests": "no tests",
         "skipped": "skipped", "not checked": "not checked"}
_EQUIVALENT_ROW = re.compile(r"^\|\s*`(earshot\.[^`]+)`\s*\|")


def module_of(mutant: str) -> str:
    """``earshot.protocol.frames.x_parse_config__mutmut_3`` -> ``earshot.protocol.frames``."""
    return mutant.split(".x_")[0].split(".xǁ")[0]


def results(mutmut: str) -> dict[str, str]:
    """Each mutant's status, as ``mutmut results --all true`` prints it."""
    out = subprocess.run([mutmut, "results", "--all", "true"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    statuses = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name.startswith("earshot."):
            statuses[name] = status.strip()
    return statuses


def equivalents(doc: Path = SUITE_DOC) -> set[str]:
    """The mutants docs/suite.md lists as equivalent (each with its reason)."""
    if not doc.is_file():
        return set()
    names, inside = set(), False
    for line in doc.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            inside = "equivalent mutants" in line.lower()
        elif inside and (match := _EQUIVALENT_ROW.match(line)):
            names.add(match.group(1))
    return names


def table(statuses: dict[str, str], equivalent: set[str]) -> tuple[list[list[str]], list[str]]:
    """Rows per module (and a total), and the modules' survivors not listed equivalent."""
    per: dict[str, Counter[str]] = defaultdict(Counter)
    open_survivors = []
    for name, status in statuses.items():
        shown = SHOWN.get(status, status)
        if shown != "killed" and name in equivalent:
            shown = "equivalent"
        per[module_of(name)][shown] += 1
        if shown in ("survived", "no tests"):
            open_survivors.append(name)
    rows = [["module", "mutants", "killed", "equivalent", "survived", "no tests",
             "not checked", "score"]]
    total: Counter[str] = Counter()
    for module in sorted(per):
        counts = per[module]
        total.update(counts)
        rows.append(_row(module, counts))
    rows.append(_row("all", total))
    return rows, sorted(open_survivors)


def _row(name: str, counts: Counter[str]) -> list[str]:
    """A module's counts and score: killed over the mutants checked that are not
    equivalent; a module with mutants not checked yet is marked incomplete."""
    mutants = sum(counts.values())
    scored = mutants - counts["equivalent"] - counts["not checked"]
    score = 100.0 * counts["killed"] / scored if scored else 100.0
    shown = f"{score:.1f} %" + (" (incomplete)" if counts["not checked"] else "")
    return [name, str(mutants), str(counts["killed"]), str(counts["equivalent"]),
            str(counts["survived"]), str(counts["no tests"]), str(counts["not checked"]),
            shown]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--min", type=float, default=None,
                        help="exit 1 when a module's score is under this percentage")
    parser.add_argument("--mutmut", default=str(Path(sys.executable).parent / "mutmut"))
    parser.add_argument("--list", action="store_true",
                        help="also list every survivor not marked equivalent")
    args = parser.parse_args(argv)
    statuses = results(args.mutmut)
    if not statuses:
        print("no mutmut results: run `make mutate` first", file=sys.stderr)
        return 2
    rows, survivors = table(statuses, equivalents())
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    if args.list:
        print("\nsurvivors not listed as equivalent in docs/suite.md:")
        print("\n".join(f"  {name}" for name in survivors) or "  none")
    if args.min is not None:
        low = [r[0] for r in rows[1:-1] if float(r[-1].split(" %")[0]) < args.min]
        incomplete = [r[0] for r in rows[1:-1] if r[-1].endswith("(incomplete)")]
        if low:
            print(f"under {args.min:g} %: {', '.join(low)}", file=sys.stderr)
        if incomplete:
            print(f"not every mutant checked yet (run make mutate again to go on): "
                  f"{', '.join(incomplete)}", file=sys.stderr)
        if low or incomplete:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
