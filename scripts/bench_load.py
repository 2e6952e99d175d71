"""Load benchmark: participants per core of our load bots and of naive aiortc bots, measured in
the same run on this machine; then the 200-participant target (50 meetings x 4, media none).

Each measurement is one load in one worker process (the dev backend runs in its own process and is
not counted): meetings of 4 bots stay `--duration` seconds once all have joined, and the worker's
CPU time is read over that steady window. participants per core = bots / (CPU s / wall s) ("raw").
The frames each bot receives per remote stream in the same window are counted too: a starved
worker (senders or receivers falling behind) is not cheap, it is failing, so "at rate" scales
raw by the share of the asked frame rate that arrived, and the sizes default to loads where each
side still delivers what it can (naive av cannot reach 15 fps with even one meeting of 4 here).
Both sides use the same signaling path, window, media, frame rates, encoder bitrates (naive
senders are held at ours': 300 kbps VP8, 32 kbps Opus) and, by default, number of bots; every
bot stays through the CPU window (`left_in_window` says so: 0).

- ours: media encoded once per process and fanned out as packets; remote media counted, not decoded.
- naive: what plain aiortc bots do: each bot makes its own frames, every sender encodes them
  (one VP8 / Opus encoder per peer connection), every receiver decodes.

`--signals push|poll|both` (default both): ours is measured with signals pushed over the sync
protocol (one socket per bot) and polled, side by side; naive bots push. The 200-participant
target runs once per mode. `ours-noqoe` is ours without the QoE accounting of the counting
receivers (freezes, delay, concealment), to show what it costs.

    .venv/bin/python scripts/bench_load.py            # about 6 minutes on 2 cores
    .venv/bin/python scripts/bench_load.py --json --skip-target --media av --signals push
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
from agent.load.records import UsageMeter
from agent.load.runner import Target, run_load, setup_meetings
from agent.load.worker import Worker
from agent.media import encoded
from agent.stats import Signals
from signaling.devserver.process import DevServer

SETTLE = 2.0  # seconds after the last bot is ready before the CPU window opens
AUDIO_FPS = 50  # 20 ms Opus frames, one per RTP packet, for both kinds of bots


async def _steady_cpu(config: LoadConfig, plans, window: float) -> dict:
    worker = Worker()
    task = asyncio.create_task(worker.run(config, plans, time.time()))
    while worker.progress()["connected"] + worker.progress()["failed"] < config.bots:
        await asyncio.sleep(0.2)
    await asyncio.sleep(SETTLE)
    meter = UsageMeter("bench")
    frames0 = _frames(worker)
    cpu0, wall0 = meter.cpu_seconds(), time.monotonic()
    await asyncio.sleep(window)
    cpu, wall = meter.cpu_seconds() - cpu0, time.monotonic() - wall0
    frames, closed = _frames(worker), time.time()
    result = await task
    left = sum(r.left_at is not None and r.left_at < closed for r in result.records)
    ok = sum(r.ok for r in result.records)
    streams = config.bots * (config.participants - 1)  # remote streams of each kind received
    fps = {k: round((frames[k] - frames0[k]) / wall / streams, 1) for k in config.kinds}
    # The share of the media asked for that arrived: a starved sender (or receiver) is not cheap.
    target = {"audio": AUDIO_FPS, "video": config.fps}
    delivered = min([min(1.0, fps[k] / target[k]) for k in config.kinds] or [1.0])
    return {
        "bots": config.bots,
        "ok": ok,
        "left_in_window": left,  # must be 0: the window holds every bot
        "cpu_fraction": round(cpu / wall, 3),
        "fps_in": fps,
        "delivered": round(delivered, 3),
    }


def _frames(worker: Worker) -> dict[str, int]:
    """Frames received so far by every bot of the worker, per kind: counted (ours, per RTP
    frame) or decoded (naive), so a starved sender shows as a low received frame rate."""
    total = {"audio": 0, "video": 0}
    for bot in worker._bots:
        room = bot.room
        for kind in total:
            if room.received is not None:
                count = room.received.kinds.get(kind)
                total[kind] += count.frames if count else 0
            else:
                total[kind] += sum(p.frames_received(kind) for p in room.peers.values())
    return total


def _same_bitrates() -> None:
    """Naive senders encode at ours' bitrates (VIDEO_BITRATE, AUDIO_BITRATE), fixed: aiortc's
    own start VP8 at 500 kbps (REMB takes it to 1.5 Mbps) and Opus at 96 kbps."""
    from aiortc.codecs import opus, vpx

    vpx.DEFAULT_BITRATE = vpx.MIN_BITRATE = vpx.MAX_BITRATE = encoded.VIDEO_BITRATE
    start = opus.OpusEncoder.__init__

    def init(self: opus.OpusEncoder) -> None:
        start(self)
        self.codec.bit_rate = encoded.AUDIO_BITRATE

    opus.OpusEncoder.__init__ = init  # type: ignore[method-assign]  # the naive baseline patches aiortc at our bitrate


def _measure_in_child(config: LoadConfig, url: str, tokens: list[str], host: str, window: float):
    if not config.shared_media:
        _same_bitrates()
    meeting_ids = asyncio.run(setup_meetings(config, Target(url, host, tuple(tokens)), True))
    plans = plan_meetings(config, url, meeting_ids, tokens)
    return asyncio.run(_steady_cpu(config, plans, window))


def measure(server: DevServer, config: LoadConfig, window: float, tag: str) -> dict:
    """One load in a fresh process, so each variant starts clean (threads, feeds, pools)."""
    tokens = [server.token(f"{tag}-bot{i}") for i in range(config.bots)]
    host = server.token(f"{tag}-host")
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        out = pool.apply(_measure_in_child, (config, server.url, tokens, host, window))
    cpu = max(out["cpu_fraction"], 1e-3)
    out["per_core_raw"] = round(out["bots"] / cpu, 1)
    out["per_core"] = round(out["bots"] * out["delivered"] / cpu, 1)
    return out


def bench(args: argparse.Namespace) -> dict:
    results: dict = {"participants_per_core": {}}
    modes: list[Signals] = ["push", "poll"] if args.signals == "both" else [args.signals]
    variants = [(f"ours-{mode}", True, mode, True) for mode in modes]
    variants += [("ours-noqoe", True, modes[0], False), ("naive", False, modes[0], True)]
    sizes = {
        "none": (args.meetings_none, args.naive_none or args.meetings_none),
        "audio": (args.meetings_audio, args.naive_audio or args.meetings_audio),
        "av": (args.meetings_av, args.naive_av or args.meetings_av),
    }
    with tempfile.TemporaryDirectory(prefix="connvo-bench-") as data, DevServer(Path(data)) as srv:
        for media, (meetings, naive_meetings) in sizes.items():
            if media not in args.media:
                continue
            row = {}
            for variant, shared, signals, qoe in variants:
                if variant == "ours-noqoe" and media == "none":
                    continue  # no media, nothing to account
                n = meetings if shared else naive_meetings
                config = LoadConfig(
                    meetings=n,
                    participants=4,
                    duration=args.window + SETTLE + 4 * n / args.ramp + 2,  # no one leaves early
                    ramp=args.ramp,
                    media=media,
                    video_size=(320, 240),
                    fps=15,
                    shared_media=shared,
                    decode=not shared,
                    join_timeout=60,
                    signals=signals,
                    qoe=qoe,
                )
                row[variant] = measure(srv, config, args.window, f"{media}-{variant}")
                print(f"{media:5} {variant:10}: {row[variant]}", flush=True)
            ours = row[f"ours-{modes[0]}"]
            row["ratio"] = round(ours["per_core"] / row["naive"]["per_core"], 2)
            row["ratio_raw"] = round(ours["per_core_raw"] / row["naive"]["per_core_raw"], 2)
            results["participants_per_core"][media] = row
    for mode in [] if args.skip_target else modes:
        config = LoadConfig(
            meetings=50,
            participants=4,
            duration=5,
            ramp=args.target_ramp,
            media="none",
            signals=mode,
        )
        target = run_load(replace(config), workers=None, quiet=True).summary
        results[f"target_200_none_{mode}"] = {
            "success_rate": target["success_rate"],
            "failures": target["failures"],
            "signals": target["signals"],
            "phases_ms": {p: d for p, d in target["phases_ms"].items() if d["count"]},
            "load_generator": target["load_generator"],
        }
    return results


def _fps(m: dict) -> str:
    return " ".join(f"{k[0]}{v:g}" for k, v in m["fps_in"].items()) or "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=10.0, help="CPU window, seconds")
    parser.add_argument("--ramp", type=float, default=10.0)
    parser.add_argument("--meetings-none", type=int, default=12)
    parser.add_argument("--meetings-audio", type=int, default=6)
    parser.add_argument("--meetings-av", type=int, default=3)
    # Naive bots: as many as ours by default, so the two are compared on the same load (a
    # naive worker that starves shows it in its delivered frame rate, and "at rate" counts it).
    parser.add_argument("--naive-none", type=int, help="naive bots' meetings (default: as ours)")
    parser.add_argument("--naive-audio", type=int)
    parser.add_argument("--naive-av", type=int)
    parser.add_argument("--target-ramp", type=float, default=10.0)
    parser.add_argument("--media", nargs="+", default=["none", "audio", "av"])
    parser.add_argument("--skip-target", action="store_true")
    parser.add_argument("--signals", choices=["push", "poll", "both"], default="both")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    r = bench(args)
    print("\nparticipants per core (320x240@15 for video; 1.0 core = 100% of one core)")
    print("raw = bots / cores used; at rate = raw x delivered (received frame rate / asked, <= 1)")
    print(f"{'media':6} {'bots':10} {'raw':>7} {'at rate':>8}   frames/s per stream")
    for media, row in r["participants_per_core"].items():
        for name, m in row.items():
            if isinstance(m, dict):
                print(
                    f"{media:6} {name:10} {m['per_core_raw']:>7.1f} {m['per_core']:>8.1f}"
                    f"   {_fps(m)}"
                )
        print(f"{'':6} ours/naive: {row['ratio_raw']:.1f}x raw, {row['ratio']:.1f}x at rate")
    for key, t in r.items():
        if not key.startswith("target_200_none"):
            continue
        mode = key.rsplit("_", 1)[-1]
        print(
            f"\n50 meetings x 4, media none, signals {mode}: success {t['success_rate']:.1f}%"
            f" {t['failures']} {t['signals']}"
        )
        print(f"{'phase (ms)':18} {'count':>6} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}")
        for phase, d in t["phases_ms"].items():
            print(
                f"{phase:18} {d['count']:>6} {d['p50']:>8.0f} {d['p95']:>8.0f}"
                f" {d['p99']:>8.0f} {d['max']:>8.0f}"
            )
    if args.json:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
