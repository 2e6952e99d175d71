"""CPU of the recording worker: the same meeting recorded by `--format mkv` (copied as received)
and `--format ts` (transcoded to h264 + AAC) side by side, in one run.

N A+V participants (the load bots' shared feeds: a test pattern in VP8 and a tone in Opus, each
encoded once in this process) join a meeting with two recorders, each a `connvo-agent record`
process of its own. Once both recorders write every participant's file, each recorder process's
CPU time (all its threads) is read over the same window: CPU per participant = cores used / N,
and the ratio mkv / ts. The bitrate and frame rate are what the mkv files hold (a starved
sender records cheaply: check that the asked frame rate arrived). The bots run in
this process and are not counted; on a shared machine both recorders see the same load.

    .venv/bin/python scripts/bench_record.py                                  # 320x240@15
    .venv/bin/python scripts/bench_record.py --size 640x480 --fps 30 --bitrate 1200000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import psutil

from agent.ice import IceOptions
from agent.media import encoded
from agent.room import JoinRequest, Room
from signaling.api import ConnvoAPI
from signaling.devserver.process import DevServer

FORMATS = ("mkv", "ts")


def recorder(url: str, token: str, meeting: str, out: Path, format: str) -> subprocess.Popen:
    args = ["--url", url, "--meeting", meeting, "--out", str(out), "--format", format]
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "record", *args, "--ice-address", "127.0.0.1"],
        env={**os.environ, "CONNVO_TOKEN": token},
        stderr=subprocess.DEVNULL,
    )


def files(out: Path) -> list[dict]:
    try:
        return json.loads((out / "manifest.json").read_text())["files"]
    except (OSError, ValueError, KeyError):
        return []


async def until(condition, timeout: float, outs: dict[str, Path]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            opened = {f: [x["file"] for x in files(out)] for f, out in outs.items()}
            raise SystemExit(f"bench_record: not every participant's file opened: {opened}")
        await asyncio.sleep(0.2)


def frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for p in container.demux(video=0) if p.size)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def bench(args: argparse.Namespace, folder: Path) -> dict:
    width, height = args.size
    encoded.VIDEO_BITRATE = args.bitrate  # read when the feed's encoder is made, just below
    outgoing = lambda: encoded.SharedOutgoing.synthetic(size=args.size, fps=args.fps)  # noqa: E731
    # Held at the bitrate (CBR): the scrolling pattern is too easy for VBR to spend it.
    rate = str(args.bitrate)
    outgoing().feeds["video"]._codec.options |= {"minrate": rate, "maxrate": rate}
    with DevServer(folder / "backend") as server:
        names = [f"p{i}" for i in range(args.participants)] + list(FORMATS)
        tokens = {name: server.token(name) for name in ["host", *names]}
        host = ConnvoAPI(server.url, tokens["host"])
        meeting = (await host.create_meeting("bench_record")).meetingId
        for name in names:
            await host.add_participant(meeting, server.user_id(name))
        await host.configure_dev_room(meeting, recording=True, maxParticipants=len(names) + 1)
        await host.start_meeting(meeting)
        outs = {f: folder / f for f in FORMATS}
        procs = {f: recorder(server.url, tokens[f], meeting, outs[f], f) for f in FORMATS}
        request = lambda: JoinRequest(outgoing=outgoing(), receive=frozenset(), decode=False)  # noqa: E731
        bots = [
            Room(server.url, tokens[f"p{i}"], meeting, request=request(), ice=IceOptions.loopback())
            for i in range(args.participants)
        ]
        try:
            for bot in bots:
                await bot.join()
            everyone = lambda: all(  # noqa: E731
                sum(f["duration"] > 1 for f in files(outs[f])) == args.participants for f in FORMATS
            )
            await until(everyone, 180, outs)
            await asyncio.sleep(args.settle)
            meters = {f: psutil.Process(p.pid) for f, p in procs.items()}
            before = {f: cpu_seconds(m) for f, m in meters.items()}
            started = time.monotonic()
            await asyncio.sleep(args.window)
            wall = time.monotonic() - started
            used = {f: (cpu_seconds(m) - before[f]) / wall for f, m in meters.items()}
        finally:
            for bot in bots:
                await bot.leave()
            for p in procs.values():
                p.send_signal(signal.SIGTERM)
            codes = {f: p.wait(30) for f, p in procs.items()}
    copied = [f for f in files(outs["mkv"]) if f["kind"] == "participant"]
    bitrate = sum((outs["mkv"] / f["file"]).stat().st_size * 8 / f["duration"] for f in copied)
    recorded = {f: [x for x in files(outs[f]) if x["kind"] == "participant"] for f in FORMATS}
    fps = {
        f: round(sum(frames(outs[f] / x["file"]) / x["duration"] for x in xs) / len(xs), 1)
        for f, xs in recorded.items()
    }
    lost = {
        f: {k: sum(x["dropped"][k] for x in xs) for k in ("audio", "video")}
        for f, xs in recorded.items()
    }
    before_keyframe = sum(x["beforeKeyframe"] for x in recorded["mkv"])
    per = {f: used[f] / args.participants for f in FORMATS}
    return {
        "participants": args.participants,
        "video": f"{width}x{height}@{args.fps}",
        "bitrate_kbps": round(bitrate / len(copied) / 1000),
        "fps_recorded": fps,
        "dropped": lost,
        "before_keyframe": before_keyframe,
        "window_s": round(wall, 1),
        "cores": {f: round(used[f], 4) for f in FORMATS},
        "per_participant": {f: round(per[f], 4) for f in FORMATS},
        "ratio_mkv_ts": round(per["mkv"] / per["ts"], 3) if per["ts"] else None,
        "codecs": {f: sorted({str(x["video"]["codec"]) for x in files(outs[f])}) for f in FORMATS},
        "exit_codes": codes,
        "load_average": os.getloadavg(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--participants", type=int, default=3)
    p.add_argument("--size", type=lambda s: tuple(map(int, s.split("x"))), default=(320, 240))
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--bitrate", type=int, default=encoded.VIDEO_BITRATE, help="VP8 bits/s")
    p.add_argument("--window", type=float, default=20.0, help="seconds of CPU measured")
    p.add_argument("--settle", type=float, default=3.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        result = asyncio.run(bench(args, Path(folder)))
    print(json.dumps(result))
    per = result["per_participant"]
    print(
        f"{result['video']} ~{result['bitrate_kbps']} kbps {result['fps_recorded']['mkv']} fps, "
        f"{result['participants']} A+V: "
        f"mkv {100 * per['mkv']:.2f}% of a core per participant, ts {100 * per['ts']:.2f}%, "
        f"ratio {result['ratio_mkv_ts']}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
