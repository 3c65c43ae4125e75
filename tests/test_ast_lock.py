"""earshot.testing.ast_lock: two threads building ASTs at once, with the garbage
collector handing the GIL over mid-build (as a finalizer can), never raise
CPython 3.11.7's "AST constructor recursion depth mismatch" once it is in place."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap

import pytest

from earshot.testing import ast_lock

# Two threads parse the same source; a GC callback yields the GIL on every
# collection, and a low threshold makes collections happen inside each build.
RACE = textwrap.dedent("""
    import ast, gc, sys, threading, time
    from earshot.testing import ast_lock
    if sys.argv[1] == "locked":
        assert ast_lock.install(affected=True)
    source = "\\n".join(f"def f{i}(a, b):\\n    return [x * {i} for x in (a, b) if x]"
                        for i in range(100))
    errors = []
    gc.callbacks.append(lambda phase, info: time.sleep(0))  # not a wait: yields the GIL
    gc.set_threshold(10)
    def parse_often():
        for n in range(int(sys.argv[2])):
            if errors:
                return
            try:
                ast.parse(source)
            except SystemError as exc:
                errors.append(f"{exc} (parse {n})")
    threads = [threading.Thread(target=parse_often) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(errors[0] if errors else "no error")
""")


def race(mode: str, rounds: int) -> str:
    done = subprocess.run([sys.executable, "-c", RACE, mode, str(rounds)],
                          capture_output=True, text=True, timeout=120, check=True)
    return done.stdout.strip()


def test_parsing_in_two_threads_never_mismatches_with_the_lock() -> None:
    assert race("locked", 20) == "no error"


@pytest.mark.skipif(not ast_lock.AFFECTED, reason="this CPython counts depth per call")
def test_the_race_it_removes_happens_without_it_on_this_cpython() -> None:
    # The cause, shown: the same race unlocked fails on an affected CPython
    # (3.11.7 here: a mismatch in the first parse, every time).
    assert "AST constructor recursion depth mismatch" in race("unlocked", 20)


def test_installed_once_and_only_where_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    original = ast.parse
    monkeypatch.setattr(ast, "parse", original)  # restored after the test
    if getattr(original, ast_lock._MARK, False):  # the plugin put it in place already
        monkeypatch.setattr(ast, "parse", original.__wrapped__)
    assert ast_lock.install(affected=False) is False
    assert not getattr(ast.parse, ast_lock._MARK, False)
    assert ast_lock.install(affected=True) is True
    assert ast_lock.install(affected=True) is False  # not wrapped twice
    assert ast.dump(ast.parse("x = 1")) == ast.dump(ast.Module(
        body=[ast.Assign(targets=[ast.Name("x", ast.Store())], value=ast.Constant(1))],
        type_ignores=[]))


def test_the_plugin_puts_it_in_place_on_an_affected_cpython() -> None:
    assert getattr(ast.parse, ast_lock._MARK, False) is ast_lock.AFFECTED


@pytest.mark.parametrize(("version", "affected"), [
    ((3, 10, 13), False), ((3, 11, 0), True), ((3, 11, 7), True), ((3, 11, 8), False),
    ((3, 12, 1), True), ((3, 12, 2), False), ((3, 13, 0), False),
])
def test_the_affected_versions(version: tuple[int, int, int], affected: bool) -> None:
    assert ast_lock.is_affected(version) is affected
