"""Join-time benchmark: runs the demo meeting (dev backend, N loopback bots) several times and
summarises `join_ms` over every bot of every run.

join_ms is measured by Room: from the start of `join()` (initializeRoom) to the first peer
connection reaching "connected". Each run starts its own dev backend, so runs are independent.

    .venv/bin/python scripts/bench_join.py                      # 5 runs, 3 bots, default polling
    .venv/bin/python scripts/bench_join.py --poll-fast 0.1 --runs 10 --json

The `agent` and `signaling` packages come from the editable install in .venv.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics

from agent.demo import run_demo
from agent.load.metrics import nearest_rank
from agent.pump import PollSettings
from agent.room import RoomSettings


async def bench(args: argparse.Namespace) -> dict:
    poll = PollSettings(fast=args.poll_fast, idle=args.poll_idle)
    settings = RoomSettings(poll=poll)
    joins: list[float] = []
    runs_ok = 0
    for i in range(args.runs):
        report = await run_demo(args.participants, args.duration, settings=settings, quiet=True)
        runs_ok += report.ok
        run_joins = [p.join_ms for p in report.participants if p.join_ms is not None]
        joins += run_joins
        shown = ", ".join(f"{ms:.0f}" for ms in run_joins) or "-"
        print(f"run {i + 1}/{args.runs}: {'ok' if report.ok else 'NOT OK'}  join_ms: {shown}")
    result = {
        "participants": args.participants,
        "poll_fast": poll.fast,
        "poll_idle": poll.idle,
        "runs": args.runs,
        "runs_ok": runs_ok,
        "count": len(joins),
        "missing": args.runs * args.participants - len(joins),
    }
    if joins:
        result |= {
            "median_ms": round(statistics.median(joins), 1),
            "p95_ms": round(nearest_rank(joins, 95), 1),
            "min_ms": round(min(joins), 1),
            "max_ms": round(max(joins), 1),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--participants", type=int, default=3)
    parser.add_argument("--duration", type=float, default=1.0, help="seconds of media per run")
    parser.add_argument("--poll-fast", type=float, default=PollSettings.fast)
    parser.add_argument("--poll-idle", type=float, default=PollSettings.idle)
    parser.add_argument("--json", action="store_true", help="also print one JSON line at the end")
    args = parser.parse_args()

    r = asyncio.run(bench(args))
    print(
        f"\n{r['participants']} participants, poll fast={r['poll_fast']} s idle={r['poll_idle']} s;"
        f" {r['runs_ok']}/{r['runs']} runs ok"
    )
    if r["count"]:
        print(
            f"join_ms over {r['count']} bots: median {r['median_ms']:.0f}, p95 {r['p95_ms']:.0f},"
            f" min {r['min_ms']:.0f}, max {r['max_ms']:.0f}"
            + (f" ({r['missing']} bots never connected)" if r["missing"] else "")
        )
    else:
        print("join_ms: no bot connected")
    if args.json:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
