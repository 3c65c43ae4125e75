"""One AST at a time: the cause of "SystemError: AST constructor recursion depth
mismatch", removed from every process that loads earshot's plugin.

CPython 3.11.0 to 3.11.7 and 3.12.0 to 3.12.1 count the depth of the AST they
build (``ast.parse``) in one counter per interpreter, not per call
(python/cpython#106905, fixed in 3.11.8 and 3.12.2 by a counter per call).
Building an AST allocates; an allocation may run the garbage collector; a
finalizer it runs may let another thread take the GIL; if that thread builds
an AST too, each sees the other's depth and one of them raises the
SystemError. A test process builds ASTs in several threads: pytest's
assertion rewriting on import, pytest's and the traceback module's source
ranges (3.11 parses a line to underline it), hypothesis's reflection, beside
the server, client and proxy threads of the scenarios. Parsing under one lock
makes the interleaving impossible; on a fixed CPython nothing changes.
"""

from __future__ import annotations

import ast
import functools
import sys
import threading
from typing import Any


def is_affected(version: tuple[int, int, int]) -> bool:
    """Whether CPython ``version`` keeps one AST depth counter per interpreter."""
    return (3, 11) <= version < (3, 11, 8) or (3, 12) <= version < (3, 12, 2)


AFFECTED = is_affected(tuple(sys.version_info[:3]))

# Reentrant: a finalizer run inside one parse may parse on the same thread.
_LOCK = threading.RLock()
_MARK = "_earshot_one_at_a_time"


def install(affected: bool = AFFECTED) -> bool:
    """Make ``ast.parse`` take the lock where the interpreter needs it; True if this
    call installed it (False: not needed, or already in place)."""
    if not affected or getattr(ast.parse, _MARK, False):
        return False
    parse = ast.parse

    @functools.wraps(parse)
    def one_at_a_time(*args: Any, **kwargs: Any) -> ast.AST:
        with _LOCK:
            return parse(*args, **kwargs)

    setattr(one_at_a_time, _MARK, True)
    ast.parse = one_at_a_time
    return True
