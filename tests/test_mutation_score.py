"""make mutate's verdict (scripts/mutation_score.py): the score per module, the
equivalent mutants read from docs/suite.md, incomplete modules flagged."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("mutation_score",
                                               ROOT / "scripts" / "mutation_score.py")
assert _spec is not None and _spec.loader is not None
score = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(score)


def test_a_score_is_killed_over_the_checked_mutants_that_are_not_equivalent() -> None:
    statuses = {
        "earshot.a.x_f__mutmut_1": "killed", "earshot.a.x_f__mutmut_2": "timeout",
        "earshot.a.x_f__mutmut_3": "survived", "earshot.a.x_f__mutmut_4": "survived",
        "earshot.b.xǁCǁm__mutmut_1": "killed", "earshot.b.xǁCǁm__mutmut_2": "not checked",
    }
    rows, open_survivors = score.table(statuses, {"earshot.a.x_f__mutmut_4"})
    assert rows[1] == ["earshot.a", "4", "2", "1", "1", "0", "0", "66.7 %"]
    assert rows[2] == ["earshot.b", "2", "1", "0", "0", "0", "1", "100.0 % (incomplete)"]
    assert rows[3][0] == "all"
    assert open_survivors == ["earshot.a.x_f__mutmut_3"]


def test_the_equivalents_are_the_rows_under_their_heading_only(tmp_path: Path) -> None:
    doc = tmp_path / "suite.md"
    doc.write_text("# Page\n| `earshot.x.x_f__mutmut_1` | not here |\n"
                   "### Equivalent mutants\n| mutant | why |\n|---|---|\n"
                   "| `earshot.x.x_f__mutmut_2` | a reason |\n"
                   "## Next\n| `earshot.x.x_f__mutmut_3` | nor here |\n")
    assert score.equivalents(doc) == {"earshot.x.x_f__mutmut_2"}


def test_the_docs_list_only_mutants_of_the_modules_make_mutate_mutates() -> None:
    mutated = (ROOT / "pyproject.toml").read_text().split("only_mutate = [")[1].split("]")[0]
    for name in score.equivalents():
        module = score.module_of(name).removeprefix("earshot.").replace(".", "/")
        assert f"src/earshot/{module}.py" in mutated or \
            f"src/earshot/{module.rsplit('/', 1)[0]}/*" in mutated, name
