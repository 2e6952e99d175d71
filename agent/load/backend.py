"""The backend as the bots saw it: how long each function call took and how it ended, and how
long a signal took from being stored to being pushed to its bot and handled.

Every call of every bot goes through one seam, `ConvexClient.run` (the typed client, over
whichever transport), which tells an observer its path, duration and error code. A worker's
`CallLog` keeps each call as one small tuple (a few per bot and second at most) and each bot
counts its own per function (BotRecord.functions); the summary's `backend` is made from the
tuples of all workers.
"""

from __future__ import annotations

import time
from typing import Any

from agent.load.metrics import distribution
from agent.load.records import BotRecord
from signaling.client import CallObserver

Call = tuple[float, str, float, str | None]
"""(epoch s when it ended, function path, ms, None or the error code)."""


class CallLog:
    """A worker's calls, in the order they ended."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._reported = 0

    def observer(self, counts: dict[str, dict[str, Any]]) -> CallObserver:
        """An observer for one bot's client: logs here, counts into `counts` (per path, `calls`
        and `errors` by code)."""
        calls = self.calls

        def observe(path: str, seconds: float, error: str | None) -> None:
            calls.append((time.time(), path, seconds * 1000, error))
            mine = counts.get(path)
            if mine is None:
                mine = counts[path] = {"calls": 0, "errors": {}}
            mine["calls"] += 1
            if error is not None:
                mine["errors"][error] = mine["errors"].get(error, 0) + 1

        return observe

    def new(self) -> list[Call]:
        """The calls ended since the previous call (for the live metrics)."""
        new = self.calls[self._reported :]
        self._reported = len(self.calls)
        return new


def functions(calls: list[Call], started_at: float) -> dict[str, dict[str, Any]]:
    """Per function path: calls, errors by code, latency (ms) and calls in each second from
    `started_at` (`calls_per_s`: [second, calls], seconds with none left out)."""
    by_path: dict[str, list[Call]] = {}
    for call in calls:
        by_path.setdefault(call[1], []).append(call)
    return {path: _function(of, started_at) for path, of in sorted(by_path.items())}


def _function(calls: list[Call], started_at: float) -> dict[str, Any]:
    errors: dict[str, int] = {}
    per_second: dict[int, int] = {}
    for at, _, _, error in calls:
        if error is not None:
            errors[error] = errors.get(error, 0) + 1
        second = int(at - started_at)
        per_second[second] = per_second.get(second, 0) + 1
    return {
        "calls": len(calls),
        "errors": errors,
        "latency_ms": distribution([ms for _, _, ms, _ in calls]),
        "calls_per_s": sorted(per_second.items()),
    }


def apply(
    summary: dict[str, Any], calls: list[Call], records: list[BotRecord], started_at: float
) -> None:
    """Adds the backend's figures to a run's summary (agent.load.metrics.summarize)."""
    by_function = functions(calls, started_at)
    summary["backend"] = {
        "calls": len(calls),
        "errors": sum(sum(f["errors"].values()) for f in by_function.values()),
        "functions": by_function,
        "push_delay_ms": distribution([ms for r in records for _, ms in r.push_delays]),
    }


def short(path: str) -> str:
    """A function's last name: `createWebRTCSession` of `meetings/webrtc/index/createWebRTC...`."""
    return path.rpartition("/")[2].rpartition(":")[2]


def find(functions: dict[str, Any], name: str) -> Any:
    """A function's figures by its path or its last name; None."""
    for path, figures in functions.items():
        if name in (path, short(path)):
            return figures
    return None
