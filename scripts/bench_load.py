"""Load benchmark: participants per core of our load bots and of naive aiortc bots, measured in
the same run on this machine; then the 200-participant target (50 meetings x 4, media none).

Each measurement is one load in one worker process (the dev backend runs in its own process and is
not counted): meetings of 4 bots stay `--duration` seconds once all have joined, and the worker's
CPU time is read over that steady window. participants per core = bots / (CPU s / wall s).

- ours: media encoded once per process and fanned out as packets; remote media counted, not decoded.
- naive: what plain aiortc bots do: each bot makes its own frames, every sender encodes them
  (one VP8 / Opus encoder per peer connection), every receiver decodes.

    .venv/bin/python scripts/bench_load.py            # about 3 minutes on 2 cores
    .venv/bin/python scripts/bench_load.py --json --skip-target
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from agent.load.config import LoadConfig, plan_meetings
from agent.load.metrics import UsageMeter
from agent.load.runner import Target, run_load, setup_meetings
from agent.load.worker import Worker
from signaling.devserver.process import DevServer

SETTLE = 2.0  # seconds after the last bot is ready before the CPU window opens


async def _steady_cpu(config: LoadConfig, plans, window: float) -> dict:
    worker = Worker()
    task = asyncio.create_task(worker.run(config, plans, time.time()))
    while worker.progress()["connected"] + worker.progress()["failed"] < config.bots:
        await asyncio.sleep(0.2)
    await asyncio.sleep(SETTLE)
    meter = UsageMeter("bench")
    cpu0, wall0 = meter.cpu_seconds(), time.monotonic()
    await asyncio.sleep(window)
    cpu, wall = meter.cpu_seconds() - cpu0, time.monotonic() - wall0
    result = await task
    ok = sum(r.ok for r in result.records)
    return {"bots": config.bots, "ok": ok, "cpu_fraction": round(cpu / wall, 3)}


def _measure_in_child(config: LoadConfig, url: str, tokens: list[str], host: str, window: float):
    meeting_ids = asyncio.run(setup_meetings(config, Target(url, host, tuple(tokens)), True))
    plans = plan_meetings(config, url, meeting_ids, tokens)
    return asyncio.run(_steady_cpu(config, plans, window))


def measure(server: DevServer, config: LoadConfig, window: float, tag: str) -> dict:
    """One load in a fresh process, so each variant starts clean (threads, feeds, pools)."""
    tokens = [server.token(f"{tag}-bot{i}") for i in range(config.bots)]
    host = server.token(f"{tag}-host")
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        out = pool.apply(_measure_in_child, (config, server.url, tokens, host, window))
    out["per_core"] = round(out["bots"] / max(out["cpu_fraction"], 1e-3), 1)
    return out


def bench(args: argparse.Namespace) -> dict:
    results: dict = {"participants_per_core": {}}
    sizes = {"none": args.meetings_none, "audio": args.meetings_audio, "av": args.meetings_av}
    with tempfile.TemporaryDirectory(prefix="connvo-bench-") as data, DevServer(Path(data)) as srv:
        for media, meetings in sizes.items():
            row = {}
            for variant, shared in (("ours", True), ("naive", False)):
                n = meetings if shared else max(1, meetings // args.naive_divisor)
                config = LoadConfig(
                    meetings=n,
                    participants=4,
                    duration=args.window + SETTLE + 1,
                    ramp=args.ramp,
                    media=media,
                    video_size=(320, 240),
                    fps=15,
                    shared_media=shared,
                    decode=not shared,
                    join_timeout=60,
                )
                row[variant] = measure(srv, config, args.window, f"{media}-{variant}")
                print(f"{media:5} {variant:5}: {row[variant]}", flush=True)
            row["ratio"] = round(row["ours"]["per_core"] / row["naive"]["per_core"], 2)
            results["participants_per_core"][media] = row
    if not args.skip_target:
        config = LoadConfig(
            meetings=50, participants=4, duration=5, ramp=args.target_ramp, media="none"
        )
        target = run_load(replace(config), workers=None, quiet=True).summary
        results["target_200_none"] = {
            "success_rate": target["success_rate"],
            "connected_p95_ms": target["phases_ms"]["connected"].get("p95"),
            "connected_p50_ms": target["phases_ms"]["connected"].get("p50"),
            "load_generator": target["load_generator"],
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=10.0, help="CPU window, seconds")
    parser.add_argument("--ramp", type=float, default=10.0)
    parser.add_argument("--meetings-none", type=int, default=12)
    parser.add_argument("--meetings-audio", type=int, default=8)
    parser.add_argument("--meetings-av", type=int, default=4)
    parser.add_argument("--naive-divisor", type=int, default=2, help="naive bots: fewer meetings")
    parser.add_argument("--target-ramp", type=float, default=10.0)
    parser.add_argument("--skip-target", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    r = bench(args)
    print("\nparticipants per core (320x240@15 for video; 1.0 core = 100% of one core)")
    print(f"{'media':6} {'ours':>8} {'naive':>8} {'ratio':>6}")
    for media, row in r["participants_per_core"].items():
        ours, naive = row["ours"]["per_core"], row["naive"]["per_core"]
        print(f"{media:6} {ours:>8.1f} {naive:>8.1f} {row['ratio']:>5.1f}x")
    if "target_200_none" in r:
        t = r["target_200_none"]
        print(
            f"\n50 meetings x 4, media none: success {t['success_rate']:.1f}%,"
            f" connected p50 {t['connected_p50_ms']} ms, p95 {t['connected_p95_ms']} ms"
        )
    if args.json:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
