"""The machine a measurement ran on, in words (every recorded figure names it)."""

from __future__ import annotations

import os
import platform

import psutil


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for row in f:
                if row.startswith("model name"):
                    return row.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> str:
    """CPU model, cores and memory in one line."""
    memory = psutil.virtual_memory().total / 2**30
    return (f"{cpu_model()}, {os.cpu_count()} logical cores "
            f"({psutil.cpu_count(logical=False) or '?'} physical), {memory:.0f} GiB")
