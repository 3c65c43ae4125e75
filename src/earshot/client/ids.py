"""Ids of clients and sessions: unique, and marked as this process's own."""

from __future__ import annotations

import uuid

_ids = iter(range(1, 1 << 62))  # with uuid4: unique even within one microsecond
# Every id this process makes starts with the same random prefix, so a test run
# on a shared server can tell its own sessions (by uid) from other users'.
PROCESS_PREFIX = uuid.uuid4().hex[:12]


def new_id() -> str:
    return f"{PROCESS_PREFIX}{uuid.uuid4().hex[:12]}{next(_ids):08x}"
