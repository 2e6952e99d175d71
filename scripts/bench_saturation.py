"""Does the saturation rule (agent/load/health.py) tell a healthy load generator from a pinned
one? Runs audio+video loads of 4-bot meetings on ONE worker process, one after the other, and
prints each one's loop lag, CPU, media figures and the verdict.

    .venv/bin/python scripts/bench_saturation.py                     # 48 and 160 bots
    .venv/bin/python scripts/bench_saturation.py --meetings 12,24,40 --duration 30 --json

The rule judges the steady part (every bot of the worker ready, none gone), so `--duration` must
outlast the ramp: 160 bots at the default 10 per second take 16 s to start, longer to be ready.
The embedded dev backend runs in its own process, on the same machine: its CPU is not the
worker's, but it shares the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from agent.load.config import LoadConfig
from agent.load.runner import run_load


def measure(meetings: int, args: argparse.Namespace) -> dict:
    config = LoadConfig(
        meetings=meetings,
        participants=4,
        media="av",
        duration=args.duration,
        join_timeout=args.join_timeout,
    )
    started = time.monotonic()
    summary = run_load(config, workers=1, quiet=True).summary
    (worker,) = summary["generator"]["workers"].values()
    media, qoe = summary["media"], summary.get("qoe") or {}
    return {
        "bots": summary["bots"],
        "success_rate": summary["success_rate"],
        "loop_lag_ms": worker["loop_lag_ms"],
        "cpu_percent_mean": worker["cpu_percent_mean"],
        "steady_s": worker["steady_s"],
        "saturated": worker["saturated"],
        "rtt_p95_ms": media["latency"].get("p95"),
        "loss_p95_pct": media["packetLoss"].get("p95"),
        "connected_p95_ms": summary["phases_ms"]["connected"].get("p95"),
        "mos_p50": (qoe.get("mos") or {}).get("p50"),
        "freeze_ratio": qoe.get("freeze_ratio"),
        "e2e_p95_ms": (qoe.get("e2e_latency_ms") or {}).get("p95"),
        "wall_s": round(time.monotonic() - started, 1),
    }


def show(rows: list[dict]) -> None:
    print(
        f"{'bots':>5} {'ok %':>6} {'lag p50':>8} {'lag p99':>8} {'cpu %':>6} {'steady s':>9}"
        f" {'RTT p95':>8} {'loss p95':>9} {'MOS p50':>8} {'frozen':>7} {'e2e p95':>8}"
        f" {'saturated':>10}"
    )
    for r in rows:
        lag = r["loop_lag_ms"]
        print(
            f"{r['bots']:>5} {r['success_rate']:>6.1f} {lag['p50']:>8.1f} {lag['p99']:>8.1f}"
            f" {r['cpu_percent_mean']:>6.1f} {r['steady_s']:>9.1f} {r['rtt_p95_ms'] or 0:>8.0f}"
            f" {r['loss_p95_pct'] or 0:>9.1f} {_shown(r['mos_p50'], '.2f'):>8}"
            f" {_shown(r['freeze_ratio'], '.3f'):>7} {_shown(r['e2e_p95_ms'], '.0f'):>8}"
            f" {'yes' if r['saturated'] else 'no':>10}"
        )


def _shown(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meetings", default="12,40", help="comma-separated, 4 bots each")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds each bot stays")
    parser.add_argument("--join-timeout", type=float, default=120.0)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON last")
    args = parser.parse_args()
    rows = []
    for meetings in (int(m) for m in args.meetings.split(",")):
        rows.append(measure(meetings, args))
        print(f"{rows[-1]['bots']} bots: done in {rows[-1]['wall_s']} s", flush=True)
    print(f"\none worker, {os.cpu_count()} cores, A+V 320x240@15, 4 bots per meeting")
    show(rows)
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
