"""Machine facts both benchmarks record next to their results."""

from __future__ import annotations

from pathlib import Path


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return ""


def mem_kib() -> str:
    return Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
