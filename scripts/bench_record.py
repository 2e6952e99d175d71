"""CPU of the recording worker: the same meeting recorded by `--format mkv` (copied as received)
and `--format ts` (transcoded to h264 + AAC) side by side, in one run.

N A+V participants (the load bots' shared feeds: a test pattern in VP8 and a tone in Opus, each
encoded once in this process) join a meeting with two recorders, each a `connvo-agent record`
process of its own, and a third process that receives the same media and does nothing with it
(counted, as load bots do): the floor, what WebRTC reception itself costs. Once both recorders
write every participant's file, each process's CPU time (all its threads) is read over the same
window: CPU per participant = cores used / N, and the ratio mkv / ts. The bitrate and frame rate
are what the files hold (a starved sender records cheaply: check that the asked rate arrived).
The bots run in this process and are not counted; on a shared machine all three see the same load.

    .venv/bin/python scripts/bench_record.py                                  # 320x240@15
    .venv/bin/python scripts/bench_record.py --size 640x480 --fps 30 --bitrate 1200000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import psutil

from agent.ice import IceOptions
from agent.media import encoded
from agent.room import JoinRequest, Room
from signaling.api import ConnvoAPI
from signaling.devserver.process import DevServer

FORMATS = ("mkv", "ts")
FLOOR = "floor"
"""A third process that receives the same media and does nothing with it (counted, never
depayloaded): what WebRTC reception alone costs, the part no recording format can save."""


class Replayed(encoded.SharedFeed):
    """The test pattern encoded before the run (LOOP seconds, a keyframe every 2 s, held at the
    bitrate: CBR, since VBR spends little on a pattern) and replayed on the clock: the bots only
    packetize, so a loaded machine still sends the asked frame rate."""

    LOOP = 4

    def __init__(self, size: tuple[int, int], fps: int, bitrate: int) -> None:
        encoded.VIDEO_BITRATE = bitrate  # read by pattern(), which makes the encoder
        feed = encoded.SharedFeed.pattern(*size, fps)
        codec = feed._codec
        assert isinstance(codec, av.VideoCodecContext)
        codec.options |= {"minrate": str(bitrate), "maxrate": str(bitrate)}
        super().__init__("video", feed.source, codec)
        self._fps = fps
        self._packets: list[tuple[bytes, bool]] = []
        width, height = size
        bars = np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))
        noise = np.random.default_rng(0).integers(0, 255, (height, width), np.uint8)
        for index in range(self.LOOP * fps):
            grey = np.roll(bars, index * 4, axis=1) // 2 + np.roll(noise, index, axis=0) // 2
            frame = av.VideoFrame.from_ndarray(np.repeat(grey[:, :, None], 3, axis=2), "rgb24")
            frame = frame.reformat(format="yuv420p")
            frame.pts = index * 90000 // fps
            self._packets += [(bytes(p), p.is_keyframe) for p in codec.encode(frame)]

    async def _pump(self) -> None:
        start = time.monotonic()
        self._epoch = time.time()
        for index in itertools.count():
            await asyncio.sleep(max(0.0, start + index / self._fps - time.monotonic()))
            data, key = self._packets[index % len(self._packets)]
            packet = av.Packet(data)
            packet.pts, packet.is_keyframe = index * 90000 // self._fps, key
            self._stamp(packet)
            for view in list(self._views):
                view.put(packet)


def recorder(url: str, token: str, meeting: str, out: Path, format: str) -> subprocess.Popen:
    args = ["--url", url, "--meeting", meeting, "--out", str(out), "--format", format]
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "record", *args, "--ice-address", "127.0.0.1"],
        env={**os.environ, "CONNVO_TOKEN": token},
        stderr=subprocess.DEVNULL,
    )


def floor(url: str, token: str, meeting: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, "--listen", url, meeting],
        env={**os.environ, "CONNVO_TOKEN": token},
        stderr=subprocess.DEVNULL,
    )


async def listen(url: str, meeting: str) -> None:
    request = JoinRequest(receive=frozenset({"audio", "video"}), decode=False, chat=False)
    token = os.environ["CONNVO_TOKEN"]
    async with Room(url, token, meeting, request=request, ice=IceOptions.loopback()):
        await asyncio.Event().wait()  # until SIGTERM


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
    video = Replayed(args.size, args.fps, args.bitrate)
    tone = encoded.shared_feed("audio")
    outgoing = lambda: encoded.SharedOutgoing(  # noqa: E731
        audio=tone.source, video=video.source, feeds={"audio": tone, "video": video}
    )
    with DevServer(folder / "backend") as server:
        names = [f"p{i}" for i in range(args.participants)] + [*FORMATS, FLOOR]
        tokens = {name: server.token(name) for name in ["host", *names]}
        host = ConnvoAPI(server.url, tokens["host"])
        meeting = (await host.create_meeting("bench_record")).meetingId
        for name in names:
            await host.add_participant(meeting, server.user_id(name))
        await host.configure_dev_room(meeting, recording=True, maxParticipants=len(names) + 1)
        await host.start_meeting(meeting)
        outs = {f: folder / f for f in FORMATS}
        procs = {f: recorder(server.url, tokens[f], meeting, outs[f], f) for f in FORMATS}
        procs[FLOOR] = floor(server.url, tokens[FLOOR], meeting)
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
    per = {f: used[f] / args.participants for f in [*FORMATS, FLOOR]}
    return {
        "participants": args.participants,
        "video": f"{width}x{height}@{args.fps}",
        "bitrate_kbps": round(bitrate / len(copied) / 1000),
        "fps_recorded": fps,
        "dropped": lost,
        "before_keyframe": before_keyframe,
        "window_s": round(wall, 1),
        "cores": {f: round(c, 4) for f, c in used.items()},
        "per_participant": {f: round(c, 4) for f, c in per.items()},
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
    p.add_argument("--listen", nargs=2, metavar=("URL", "MEETING"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.listen:
        with contextlib.suppress(KeyboardInterrupt):
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            asyncio.run(listen(*args.listen))
        return
    with tempfile.TemporaryDirectory() as folder:
        result = asyncio.run(bench(args, Path(folder)))
    print(json.dumps(result))
    per = result["per_participant"]
    print(
        f"{result['video']} ~{result['bitrate_kbps']} kbps {result['fps_recorded']['mkv']} fps, "
        f"{result['participants']} A+V: "
        f"mkv {100 * per['mkv']:.2f}% of a core per participant, ts {100 * per['ts']:.2f}%, "
        f"ratio {result['ratio_mkv_ts']}; receiving alone {100 * per[FLOOR]:.2f}%",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
