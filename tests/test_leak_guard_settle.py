"""The leak guard waits up to 5 s for what a test started to end, then names what is
left: a thread with its stack.

An inner pytest session (pytester, in a subprocess) with the repository's root
conftest and settings (the guard on for every test) and a private TMPDIR.
"""

from __future__ import annotations

import pytest

from earshot.plugin import INNER_SESSION_ARGS


def test_the_guard_waits_5_s_for_a_thread_then_names_it_with_its_stack(
        suite: pytest.Pytester) -> None:
    suite.makepyfile(test_inner="""
import threading

def finish_some_work(seconds):
    threading.Event().wait(seconds)  # the work a thread of the test still does

def test_leaves_a_thread_that_ends_3_s_later():
    threading.Thread(target=finish_some_work, args=(3,), name="ends-in-3-s",
                     daemon=True).start()

def test_leaves_a_thread_that_ends_8_s_later():
    threading.Thread(target=finish_some_work, args=(8,), name="ends-in-8-s",
                     daemon=True).start()
""")
    result = suite.runpytest_subprocess("test_inner.py", "-p", "no:randomly",
                                        "-p", "no:cacheprovider", *INNER_SESSION_ARGS)
    result.assert_outcomes(passed=2, errors=1)  # the 3 s one was waited for
    result.stdout.fnmatch_lines([
        "*ERROR at teardown of test_leaves_a_thread_that_ends_8_s_later*",
        "*still held 5 s after the test*",
        "*thread 'ends-in-8-s'*",
        '*, in finish_some_work',
        "*threading.Event().wait(seconds)*",
    ])
    assert "ends-in-3-s" not in result.stdout.str()
