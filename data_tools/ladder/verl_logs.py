"""Read verl's console metrics (``step:N - key:value - ...`` lines) back into numbers, for reports and tests."""

from __future__ import annotations

import re
from pathlib import Path

_STEP_LINE = re.compile(r"\bstep:(\d+) - (.*)$")
_NUMPY_SCALAR = re.compile(r"^np\.\w+\((.*)\)$")


def parse_step_metrics(log: str) -> dict[int, dict[str, float]]:
    """verl's console logger lines ``step:N - key:value - ...`` → {N: {key: value}} (later lines win)."""
    steps: dict[int, dict[str, float]] = {}
    for line in log.splitlines():
        match = _STEP_LINE.search(line)
        if not match:
            continue
        metrics = steps.setdefault(int(match.group(1)), {})
        for item in match.group(2).split(" - "):
            key, sep, value = item.rpartition(":")
            if not sep:
                continue
            value = _NUMPY_SCALAR.sub(r"\1", value.strip())
            try:
                metrics[key.strip()] = float(value)
            except ValueError:
                continue
    return steps


def read_step_metrics(path: str | Path) -> dict[int, dict[str, float]]:
    """``parse_step_metrics`` of a log file (undecodable bytes are replaced, not fatal)."""
    return parse_step_metrics(Path(path).read_text(encoding="utf-8", errors="replace"))
