"""xdist groups for the tests that start servers of their own, balanced by time.

Under ``--dist loadgroup`` each such test joins one of ``OWN_SERVER_GROUPS``
groups (earshot.plugin.server), and each group runs on one worker, one test
after another: the longest group is the floor of the whole run. The tests are
dealt by the longest-processing-time rule (the longest first, each to the
group with the least time so far) over the seconds each took in the last run
that recorded them (pytest's cache, ``earshot/durations``); a test with no
record counts as the mean of those with one, and with no records at all the
deal is plain turns over the sorted ids. Every worker deals alike: each reads
the same record, which only the controller writes, at the session's end.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pytest

CACHE_KEY = "earshot/durations"


def deal(ids: Iterable[str], seconds: Mapping[str, float], groups: int) -> dict[str, int]:
    """Each id's group (0 to ``groups`` - 1), longest first onto the least loaded
    group (the lowest index among equals); ids without ``seconds`` weigh their mean."""
    ids = sorted(set(ids))
    known = [seconds[i] for i in ids if i in seconds]
    default = sum(known) / len(known) if known else 1.0
    weight = {i: float(seconds.get(i, default)) for i in ids}
    load = [0.0] * groups
    dealt: dict[str, int] = {}
    for test in sorted(ids, key=lambda i: (-weight[i], i)):
        group = min(range(groups), key=lambda g: (load[g], g))
        dealt[test] = group
        load[group] += weight[test]
    return dealt


def recorded(config: pytest.Config) -> dict[str, float]:
    """The seconds of the last run that recorded them ({} with no cache, or none)."""
    cache = getattr(config, "cache", None)
    found = cache.get(CACHE_KEY, {}) if cache is not None else {}
    if not isinstance(found, dict):
        return {}
    return {k: float(v) for k, v in found.items() if isinstance(v, int | float)}


def plain_id(nodeid: str) -> str:
    """The test's id without the ``@group`` xdist appends under loadgroup (an ``@``
    inside a parameter's id, before its ``]``, is not one)."""
    head, at, group = nodeid.rpartition("@")
    return head if at and "]" not in group and "::" not in group else nodeid


class Recorder:
    """Sums each test's setup, call and teardown seconds as its reports arrive (in
    xdist's controller, every worker's), and keeps them in the cache at the end,
    over the older record (tests this run did not run keep their seconds)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        test = plain_id(report.nodeid)
        self.seconds[test] = self.seconds.get(test, 0.0) + report.duration

    @pytest.hookimpl
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        cache = getattr(session.config, "cache", None)
        if cache is None or not self.seconds:
            return
        merged = {**recorded(session.config),
                  **{k: round(v, 2) for k, v in self.seconds.items()}}
        cache.set(CACHE_KEY, merged)
