"""The backend as the bots saw it: how long each function call took and how it ended, and how
long a signal took from being stored to being pushed to its bot and handled.

Every call of every bot goes through one seam, `ConvexClient.run` (the typed client, over
whichever transport), which tells an observer its path, duration and error code. A worker's
`CallLog` keeps each call as one small tuple (a few per bot and second at most) and each bot
counts its own per function (BotRecord.functions); the summary's `backend` is made from the
tuples of all workers, and its `bottleneck` from them and the workers' loop lag (RULE): a call
is only the backend's fault when the bot's own loop was not what kept it waiting.
"""

from __future__ import annotations

import bisect
import time
from typing import Any

from agent.load.health import LagSample
from agent.load.metrics import distribution
from agent.load.records import BotRecord
from agent.media.qoe import nearest_rank
from signaling.client import CallObserver

SLOW_MS = 500.0
SLOW_SHARE = 0.05
SLOW_CALLS = 2
CAPACITY_ERRORS = ("TIMEOUT", "TransportError", "RATE_LIMIT_EXCEEDED")
"""Failures that say the backend could not keep up (a refused token or a missing meeting do not)."""
RULE = (
    f"the backend is the bottleneck when the generator stayed healthy and, in some second of the "
    f"run, more than {SLOW_SHARE:.0%} (and at least {SLOW_CALLS}) of one function's calls that "
    f"ended then took over {SLOW_MS:.0f} ms, or one failed with "
    f"{', '.join(CAPACITY_ERRORS)}, unless its worker's own event loop was late by half the "
    f"call's time during it; the generator is when a worker was saturated"
)

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
    summary: dict[str, Any],
    calls: dict[str, list[Call]],
    loop_lag: dict[str, list[LagSample]],
    records: list[BotRecord],
    started_at: float,
) -> None:
    """Adds the backend's figures and the bottleneck to a run's summary (after
    agent.load.metrics.summarize); `calls` and `loop_lag` by worker."""
    every = [c for of in calls.values() for c in of]
    by_function = functions(every, started_at)
    summary["backend"] = {
        "calls": len(every),
        "errors": sum(sum(f["errors"].values()) for f in by_function.values()),
        "functions": by_function,
        "push_delay_ms": distribution([ms for r in records for _, ms in r.push_delays]),
    }
    judged = [c for w, of in calls.items() for c in of if not _late(c, loop_lag.get(w, []))]
    strained = struggling(judged, started_at)
    saturated = summary.get("generator", {}).get("saturated", False)
    summary["bottleneck"] = "generator" if saturated else "backend" if strained else None
    summary["bottleneck_evidence"] = {
        "functions": strained,
        "excused_calls": len(every) - len(judged),
        "rule": RULE,
    }


def _late(call: Call, lag: list[LagSample]) -> bool:
    """A slow call during which its worker's own loop was late by half its time or more: the
    generator's doing, not the backend's."""
    end, _, ms, _ = call
    if ms <= SLOW_MS:
        return False
    start = bisect.bisect_left(lag, end - ms / 1000, key=lambda s: s.at)
    stop = bisect.bisect_right(lag, end, key=lambda s: s.at)
    return max((s.lag_ms for s in lag[start:stop]), default=0.0) >= ms / 2


def struggling(calls: list[Call], started_at: float) -> dict[str, dict[str, Any]]:
    """The functions that were slow or failed for lack of capacity in some second (RULE): from
    when (s since the start), in how many seconds, their worst p95 there, and those errors."""
    seconds: dict[tuple[str, int], list[Call]] = {}
    for call in calls:
        seconds.setdefault((call[1], int(call[0] - started_at)), []).append(call)
    found: dict[str, dict[str, Any]] = {}
    for (path, second), of in sorted(seconds.items()):
        slow = sum(ms > SLOW_MS for _, _, ms, _ in of)
        failed = [e for _, _, _, e in of if e in CAPACITY_ERRORS]
        if not failed and (slow < SLOW_CALLS or slow <= SLOW_SHARE * len(of)):
            continue
        mine = found.setdefault(path, {"from_s": second, "seconds": 0, "p95_ms": 0.0, "errors": {}})
        mine["seconds"] += 1
        mine["p95_ms"] = max(mine["p95_ms"], round(nearest_rank([c[2] for c in of], 95), 1))
        for error in failed:
            mine["errors"][error] = mine["errors"].get(error, 0) + 1
    return found


def short(path: str) -> str:
    """A function's last name: `createWebRTCSession` of `meetings/webrtc/index/createWebRTC...`."""
    return path.rpartition("/")[2]


def find(functions: dict[str, Any], name: str) -> Any:
    """A function's figures by its path or its last name; None."""
    for path, figures in functions.items():
        if name in (path, short(path)):
            return figures
    return None


def evidence(summary: dict[str, Any]) -> list[str]:
    """One line per struggling function of a summary, for the table and the report."""
    found = summary.get("bottleneck_evidence", {}).get("functions", {})
    lines = []
    for path, f in found.items():
        errors = "".join(f", {n} {code}" for code, n in sorted(f["errors"].items()))
        lines.append(
            f"{short(path)}: from {f['from_s']} s, {f['seconds']} s slow or failing, "
            f"p95 up to {f['p95_ms']:.0f} ms{errors}"
        )
    return lines
