"""The load generator's own health: is the worker measuring the backend, or itself?

A worker whose event loop cannot keep up delays every packet, timer and handshake of its bots, and
the run then blames the backend for what the tool did to itself. Two signs, both cheap:

- loop lag: a ticker sleeps TICK seconds and records how late it wakes. Work queued ahead of it,
  and CPU taken by other processes, both show here, which the process's own CPU cannot see;
- CPU: the worker's `UsageMeter` samples, in percent of one core (threads included).

The rule (RULE) is on the loop lag's median over each worker's steady part: from its last bot
connected to its first bot gone. The joins before it (keys, DTLS, ICE) are a burst every healthy
run has, and a few late wake-ups (a keyframe's fan-out, a GC pass) are not saturation either; a
loop that is late half the time while only media flows is not keeping up. The CPU is reported but
not judged: it counts the encoder thread and the QoE accounting (48 healthy A+V bots measured 66%
to 99% of a core) and cannot see the CPU other processes take from the worker, which the lag does.
Measured on the 2-core dev machine (scripts/bench_saturation.py, README): 48 A+V bots on one
worker, lag p50 1-6 ms, MOS 4.4; 96 and 160 bots, lag p50 44-63 and 105-115 ms, MOS 1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.load.records import BotRecord, Usage
from agent.media.qoe import nearest_rank

TICK = 0.05
"""Seconds the ticker sleeps between wake-ups."""
LAG_P50_LIMIT_MS = 20.0
RECENT = 10.0
"""Seconds of samples behind the live figure."""
RULE = (
    f"a worker is saturated when its event-loop lag p50 is over {LAG_P50_LIMIT_MS:.0f} ms over its "
    f"steady part (from its last bot connected to its first bot gone; the whole run when there "
    f"is none)"
)


@dataclass
class LagSample:
    at: float
    """Wall clock (epoch s) of the wake-up."""
    lag_ms: float


@dataclass
class LoopLagMeter:
    """Measures how late this event loop wakes a sleeper; `run` until cancelled."""

    tick: float = TICK
    samples: list[LagSample] = field(default_factory=list)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + self.tick
            await asyncio.sleep(self.tick)
            lag = max(0.0, loop.time() - asked) * 1000
            self.samples.append(LagSample(time.time(), lag))

    def live(self, seconds: float = RECENT) -> dict[str, float | bool]:
        """The lag p50/p99 (ms) of the last `seconds` and the rule on them, for the progress line
        and the live metrics: the whole run's would hide a saturation that starts late (and
        sorting it every half second costs). The summary judges the steady part instead."""
        start = time.time() - seconds
        last = self.samples[-int(seconds / self.tick) - 1 :]  # a wake-up takes at least a tick
        lags = [s.lag_ms for s in last if s.at >= start]
        p50 = percentile(lags, 50)
        return {
            "loop_lag_p50_ms": p50,
            "loop_lag_p99_ms": percentile(lags, 99),
            "saturated": saturated(p50),
        }


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest rank, rounded to 0.1; 0 for no values."""
    return round(nearest_rank(list(values), pct), 1) if values else 0.0


def saturated(lag_p50_ms: float) -> bool:
    """The rule (RULE) on one worker's loop lag p50 (ms) over its steady part."""
    return lag_p50_ms > LAG_P50_LIMIT_MS


def steady_window(records: Sequence[BotRecord]) -> tuple[float, float] | None:
    """(epoch s) from the last of these bots connected to the first of them gone; None when no
    bot connected, or one left before the last connected (a ramp longer than the stay).

    `connected` (media flows from there), not the bot's last phase: on a saturated loop a chat
    channel's SCTP handshake backs off, and opened 15 s after `connected` for 160 bots."""
    stayed = [r for r in records if r.ok and r.connected_at is not None and r.left_at is not None]
    if not stayed:
        return None
    start = max(r.connected_at for r in stayed if r.connected_at is not None)
    end = min(r.left_at for r in stayed if r.left_at is not None)
    return (start, end) if end > start else None


def worker_health(
    lag: Sequence[LagSample], usage: Sequence[Usage], records: Sequence[BotRecord]
) -> dict[str, Any]:
    """One worker's figures over its steady part, and whether the rule calls it saturated."""
    window = steady_window(records)
    if window is not None:
        lag = [s for s in lag if window[0] <= s.at <= window[1]] or lag
        usage = [u for u in usage if window[0] <= u.at <= window[1]] or usage
    lags = [s.lag_ms for s in lag]
    cpu = [u.cpu_percent for u in usage]
    p50, p99 = percentile(lags, 50), percentile(lags, 99)
    cpu_mean = round(sum(cpu) / len(cpu), 1) if cpu else 0.0
    steady_s = round(window[1] - window[0], 1) if window else 0.0
    return {
        "loop_lag_ms": {"p50": p50, "p99": p99},
        "cpu_percent_mean": cpu_mean,
        "steady_s": steady_s,
        "saturated": saturated(p50),
    }


def generator(
    lag: dict[str, list[LagSample]], usage: Sequence[Usage], records: Sequence[BotRecord]
) -> dict[str, Any]:
    """The summary's `generator`: every worker's health; saturated when any worker is."""
    names = sorted(set(lag) | {u.worker for u in usage})
    workers = {
        name: worker_health(
            lag.get(name, []),
            [u for u in usage if u.worker == name],
            [r for r in records if r.worker == name],
        )
        for name in names
    }
    return {
        "saturated": any(w["saturated"] for w in workers.values()),
        "workers": workers,
        "rule": RULE,
    }


def saturated_workers(summary: dict[str, Any]) -> list[str]:
    """One line per saturated worker of a summary: its name and figures, for the table and the
    report."""
    workers = summary.get("generator", {}).get("workers", {})
    return [
        f"{name}: loop lag p50 {w['loop_lag_ms']['p50']:.0f} ms, p99 "
        f"{w['loop_lag_ms']['p99']:.0f} ms, cpu mean {w['cpu_percent_mean']:.0f}%"
        for name, w in workers.items()
        if w["saturated"]
    ]
