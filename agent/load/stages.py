"""Stages, as k6's: `--stage 30s:100,2m:100,30s:0` moves the number of bots present linearly to
each target in turn. Bot i (the order in which the meetings fill) is present while the target
line is above i, so bots join as it rises and leave, newest first, as it falls; each time it is
present is one stay (a join, a new session) of the same user.

The schedule is fixed before the run, like a ramp's: every worker knows when its bots come and go
without asking the driver.
"""

from __future__ import annotations

import re
from typing import Any

from agent.load.backend import Call
from agent.load.metrics import distribution
from agent.load.records import BotRecord

Stage = tuple[float, int]
"""(seconds, target): reach `target` bots present at the end of these seconds."""
Stay = tuple[float, float | None]
"""(join, leave), seconds from the run's start; leave None: `duration` after connected."""

_STAGE = re.compile(r"\s*(\d+(?:\.\d+)?)(ms|s|m|h)?:(\d+)\s*")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse(text: str) -> tuple[Stage, ...]:
    """`DURATION:TARGET[,...]`, DURATION a number with ms, s (default), m or h; ValueError."""
    stages = []
    for part in text.split(","):
        match = _STAGE.fullmatch(part)
        if match is None:
            raise ValueError(f"{part.strip()!r} is not DURATION:TARGET, e.g. 30s:100 or 2m:0")
        stages.append((float(match[1]) * _UNIT[match[2]], int(match[3])))
    return tuple(stages)


def stays(stages: tuple[Stage, ...], slot: int) -> tuple[Stay, ...]:
    """When bot `slot` is present: while the target line is above it."""
    found: list[Stay] = []
    joined: float | None = None
    start, level = 0.0, 0.0
    for seconds, target in stages:
        if (level > slot) != (target > slot):  # the line crosses the slot in this stage
            at = start + seconds * (slot - level) / (target - level)
            if target > slot:  # back at once after touching it: one stay
                joined = found.pop()[0] if found and found[-1][1] == at else at
            else:
                found.append((joined or 0.0, at))
                joined = None
        start, level = start + seconds, target
    if joined is not None:
        found.append((joined, start))
    return tuple(found)


def target_at(stages: tuple[Stage, ...], at: float) -> float:
    """The target line at `at` seconds from the start."""
    start, level = 0.0, 0.0
    for seconds, target in stages:
        if at <= start + seconds:
            return level + (target - level) * (at - start) / seconds if seconds else target
        start, level = start + seconds, target
    return level


def summary(
    stages: tuple[Stage, ...], records: list[BotRecord], calls: list[Call], started_at: float
) -> list[dict[str, Any]]:
    """Per stage: its target, the bots present (connected to everyone, not gone) at its end and
    at most, and
    each function's call latency p95 within it."""
    moves = sorted(
        (at - started_at, step)
        for r in records
        if r.ready_at is not None
        for at, step in ((r.ready_at, 1), (r.left_at, -1))
        if at is not None
    )
    out, start = [], 0.0
    for seconds, target in stages:
        end = start + seconds
        before = sum(step for at, step in moves if at <= start)
        inside = [before]
        for at, step in moves:
            if start < at <= end:
                inside.append(inside[-1] + step)
        latency: dict[str, list[float]] = {}
        for at, path, ms, _ in calls:
            if start < at - started_at <= end:
                latency.setdefault(path, []).append(ms)
        out.append(
            {
                "duration_s": seconds,
                "target": target,
                "present_end": inside[-1],
                "present_max": max(inside),
                "functions_p95_ms": {
                    path: distribution(ms).get("p95") for path, ms in sorted(latency.items())
                },
            }
        )
        start = end
    return out
