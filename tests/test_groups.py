"""The xdist groups of tests with servers of their own: dealt longest first onto
the least loaded group by the last run's seconds, which the controller records."""

from __future__ import annotations

import json
import re

import pytest

from earshot.plugin import INNER_SESSION_ARGS
from earshot.plugin.groups import CACHE_KEY, deal, plain_id


def test_the_longest_go_first_each_onto_the_least_loaded_group() -> None:
    # a 10 -> 0; b 6 -> 1; c 5 -> 1 (6 < 10); d 4 -> 0 (10 < 11): loads 14 and 11,
    # where turns over the ids (a, c | b, d) would give 15 and 10.
    assert deal(["d", "c", "b", "a"], {"a": 10, "b": 6, "c": 5, "d": 4}, 2) == {
        "a": 0, "b": 1, "c": 1, "d": 0}


def test_with_no_record_the_deal_is_turns_over_the_sorted_ids() -> None:
    assert deal(["d", "b", "c", "a", "e"], {}, 2) == {"a": 0, "b": 1, "c": 0, "d": 1, "e": 0}
    assert deal(["c", "a", "b"], {}, 3) == {"a": 0, "b": 1, "c": 2}


def test_a_test_without_a_record_weighs_the_mean_of_those_with_one() -> None:
    # mean 6: a 10 -> 0; c 6 -> 1; b 2 -> 1 (6 < 10).
    assert deal(["a", "b", "c"], {"a": 10, "b": 2, "old": 99}, 2) == {"a": 0, "c": 1, "b": 1}


def test_equal_loads_go_to_the_lowest_group_and_every_group_is_used() -> None:
    assert deal(["x", "y"], {"x": 1, "y": 1}, 4) == {"x": 0, "y": 1}
    assert deal([], {"x": 1}, 2) == {}


@pytest.mark.parametrize(("nodeid", "plain"), [
    ("t.py::test_a@earshot-own-server-1", "t.py::test_a"),
    ("t.py::test_a[x]@mine", "t.py::test_a[x]"),
    ("t.py::test_a[user@host]", "t.py::test_a[user@host]"),
    ("t.py::test_a", "t.py::test_a"),
])
def test_the_group_suffix_is_taken_off_the_id(nodeid: str, plain: str) -> None:
    assert plain_id(nodeid) == plain


OWN = '''
import pytest

@pytest.mark.parametrize("n", range(4))
def test_own(whisperlive_server_factory, n):
    assert whisperlive_server_factory().server_status()
'''


@pytest.mark.timeout(240)
def test_a_run_records_its_seconds_and_the_next_deals_by_them(suite: pytest.Pytester) -> None:
    """Two real xdist runs with local servers: the first records every test's
    seconds (without the @group suffix); the second, given a record where turns
    and the longest-first deal differ, deals as that record says."""
    suite.makepyfile(test_inner=OWN)
    args = ("test_inner.py", "-p", "no:randomly", *INNER_SESSION_ARGS,
            "--earshot-target", "local", "-n", "2", "--dist", "loadgroup", "-v")
    first = suite.runpytest_subprocess(*args)
    first.assert_outcomes(passed=4)
    record = suite.path / ".pytest_cache" / "v" / CACHE_KEY
    seconds = json.loads(record.read_text())
    ids = [f"test_inner.py::test_own[{n}]" for n in range(4)]
    assert set(seconds) == set(ids), seconds
    assert all(s > 0 for s in seconds.values())
    record.write_text(json.dumps(dict(zip(ids, [10, 6, 5, 4], strict=True))))
    second = suite.runpytest_subprocess(*args)
    second.assert_outcomes(passed=4)
    dealt = dict(re.findall(r"test_own\[(\d)\]@earshot-own-server-(\d)", second.stdout.str()))
    assert dealt == {"0": "0", "1": "1", "2": "1", "3": "0"}, second.stdout.str()
