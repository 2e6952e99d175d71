"""Signals pushed or polled, side by side: what a late joiner waits, what idle bots cost, how fast
a signal arrives.

For each mode (`--signals poll|push|both`, default both), on one dev backend:
- late joiner: two bots join a meeting and stay idle for `--idle` seconds (8), then a third
  joins; its join_ms (initializeWebRTCRoom to its first connected peer) is kept. `--runs` times.
- idle cost: two bots connected and idle for `--window` seconds (30): the HTTP function calls
  they make, counted at their transport, per bot-minute (the sync socket's messages are not
  function calls; quality reports, every 5 s, are).
- delivery: one user sends `--signals-sent` ICE candidates to another, 50-150 ms apart; the time
  from the send call to the receiver's signal pump handing the signal over.

    .venv/bin/python scripts/bench_signals.py                    # both modes, 5 runs each
    .venv/bin/python scripts/bench_signals.py --signals push --runs 3 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agent.demo import setup_meeting
from agent.ice import IceOptions
from agent.load.metrics import nearest_rank
from agent.media.sources import Outgoing
from agent.pump import PollSettings, SignalPump
from agent.room import JoinRequest, Room, RoomSettings
from agent.stats import Counters, Signals
from signaling import functions as fn
from signaling.api import ConnvoAPI
from signaling.client import CountingTransport
from signaling.devserver.process import DevServer
from signaling.models import Signal
from signaling.sync import SyncClient


def _room(
    server: DevServer, token: str, meeting: str, mode: Signals, http: CountingTransport
) -> Room:
    return Room(
        server.url,
        token,
        meeting,
        request=JoinRequest(outgoing=Outgoing.synthetic()),
        ice=IceOptions.loopback(),
        settings=RoomSettings(signals=mode),
        api=ConnvoAPI(server.url, token, http=http),
    )


async def _until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def idle_cost(server: DevServer, mode: Signals, window: float) -> tuple[float, dict]:
    """HTTP function calls per bot-minute of two connected bots doing nothing, and by function."""
    names = [f"{mode}-idle{i}" for i in range(2)]
    tokens = [server.token(name) for name in names]
    meeting = await setup_meeting(server.url, tokens)
    counters = [CountingTransport() for _ in names]
    rooms = [_room(server, t, meeting, mode, c) for t, c in zip(tokens, counters, strict=True)]
    try:
        await asyncio.gather(*(r.join() for r in rooms))
        if not await _until(lambda: all(r.connected_peers() for r in rooms), 20):
            raise RuntimeError("the two bots did not connect")
        await asyncio.sleep(1.0)  # let the join's own traffic settle
        before = counters[0].calls + counters[1].calls
        started = time.monotonic()
        await asyncio.sleep(window)
        elapsed = time.monotonic() - started
        calls = counters[0].calls + counters[1].calls - before
        return sum(calls.values()) / 2 / elapsed * 60, dict(calls)
    finally:
        await asyncio.gather(*(r.leave() for r in rooms), return_exceptions=True)


async def late_join(server: DevServer, mode: Signals, run: int, idle: float) -> dict:
    names = [f"{mode}{run}-bot{i}" for i in range(3)]
    tokens = [server.token(name) for name in names]
    meeting = await setup_meeting(server.url, tokens)
    counters = [CountingTransport() for _ in names]
    rooms = [_room(server, t, meeting, mode, c) for t, c in zip(tokens, counters, strict=True)]
    try:
        await asyncio.gather(rooms[0].join(), rooms[1].join())
        if not await _until(lambda: all(r.connected_peers() for r in rooms[:2]), 20):
            raise RuntimeError("the first two bots did not connect")
        await asyncio.sleep(idle)
        await rooms[2].join()
        await _until(lambda: rooms[2].stats().join_ms is not None, 20)
        return {
            "join_ms": rooms[2].stats().join_ms,
            "pushed": all(r.stats().signals == "push" for r in rooms),
        }
    finally:
        await asyncio.gather(*(r.leave() for r in rooms), return_exceptions=True)


async def delivery(server: DevServer, mode: Signals, count: int) -> list[float]:
    names = [f"{mode}-sender", f"{mode}-receiver"]
    tokens = [server.token(name) for name in names]
    meeting = await setup_meeting(server.url, tokens)
    sender = ConnvoAPI(server.url, tokens[0])
    receiver_id = server.user_id(names[1])
    receiver = ConnvoAPI(server.url, tokens[1])
    sent: dict[str, float] = {}
    latencies: list[float] = []

    async def handle(signal: Signal) -> None:
        line = getattr(signal.data, "candidate", "")
        if line in sent:
            latencies.append(1000 * (time.monotonic() - sent[line]))

    sync = None
    pushed = None
    pump = None
    if mode == "push":
        sync = SyncClient(server.url, tokens[1])
        await sync.connect()
        pushed = await sync.subscribe(
            fn.GET_PENDING_SIGNALS, {"meetingId": meeting}, lambda: pump and pump.nudge()
        )
    pump = SignalPump(
        receiver, meeting, handle, lambda: False, PollSettings(), counters=Counters(), pushed=pushed
    )
    task = asyncio.create_task(pump.run())
    try:
        await asyncio.sleep(0.5)
        for i in range(count):
            line = f"candidate:{i} 1 udp 2130706431 127.0.0.1 {10000 + i} typ host"
            sent[line] = time.monotonic()
            candidate = {"candidate": line, "sdpMid": "0", "sdpMLineIndex": 0}
            await sender.send_candidate(meeting, "bench", candidate, receiver_id)
            await asyncio.sleep(random.uniform(0.05, 0.15))
        await _until(lambda: len(latencies) >= count, 5)
    finally:
        task.cancel()
        if sync is not None:
            await sync.close()
    return latencies


async def bench(args: argparse.Namespace) -> dict:
    modes: list[Signals] = ["poll", "push"] if args.signals == "both" else [args.signals]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="connvo-bench-") as data:
        async with DevServer(Path(data)) as server:
            for mode in modes:
                runs = []
                for run in range(args.runs):
                    runs.append(await late_join(server, mode, run, args.idle))
                    r = runs[-1]
                    print(
                        f"{mode} run {run + 1}/{args.runs}: late joiner {r['join_ms']:.0f} ms",
                        flush=True,
                    )
                per_minute, calls = await idle_cost(server, mode, args.window)
                print(f"{mode} idle: {per_minute:.1f} calls/bot-minute {calls}", flush=True)
                lat = await delivery(server, mode, args.signals_sent)
                joins = [r["join_ms"] for r in runs if r["join_ms"] is not None]
                results[mode] = {
                    "late_join_median_ms": round(statistics.median(joins), 1) if joins else None,
                    "late_join_ms": [round(j, 1) for j in joins],
                    "idle_calls_per_bot_minute": round(per_minute, 1),
                    "idle_calls": calls,
                    "all_pushed": all(r["pushed"] for r in runs),
                    "delivery_p50_ms": round(statistics.median(lat), 1) if lat else None,
                    "delivery_p95_ms": round(nearest_rank(lat, 95), 1) if lat else None,
                    "delivered": f"{len(lat)}/{args.signals_sent}",
                }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--signals", choices=["poll", "push", "both"], default="both")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle", type=float, default=8.0, help="seconds the first two stay idle")
    parser.add_argument("--window", type=float, default=30.0, help="idle cost window, seconds")
    parser.add_argument("--signals-sent", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="also print one JSON line at the end")
    args = parser.parse_args()
    results = asyncio.run(bench(args))
    print()
    print(f"{'':6} {'late join median':>17} {'idle calls/bot-min':>19} {'delivery p50/p95':>17}")
    for mode, r in results.items():
        print(
            f"{mode:6} {r['late_join_median_ms']:>14} ms {r['idle_calls_per_bot_minute']:>19}"
            f" {r['delivery_p50_ms']:>7}/{r['delivery_p95_ms']} ms  ({r['delivered']} delivered)"
        )
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
