"""The report's plots, drawn with matplotlib's Agg backend (no display) into PNG bytes:
phase latency distributions, participants connected over time, the load generator's CPU and
memory over time, media quality per peer, what participants experienced over time (MOS and
video freezes), and the backend: each function's latency and errors over time."""

from __future__ import annotations

import io
import itertools
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after the backend is chosen

from agent.load.backend import Call, short
from agent.load.metrics import per_second
from agent.load.records import PHASES, BotRecord, Usage
from agent.media.qoe import nearest_rank

FUNCTIONS_SHOWN = 8
"""The most called functions get a line each; more would be unreadable."""


def figure(
    records: list[BotRecord],
    usage: list[Usage],
    started_at: float,
    calls: list[Call],
    stages: Sequence[tuple[float, int]] = (),
) -> bytes:
    """All the plots in one PNG, 4 x 2."""
    fig, axes = plt.subplots(4, 2, figsize=(13, 16.5), dpi=90)
    phases(axes[0][0], records)
    connected(axes[0][1], records, started_at, stages)
    load(axes[1][0], usage, started_at)
    quality(axes[1][1], records)
    experience(axes[2][0], records, started_at)
    function_latency(axes[2][1], calls, started_at)
    function_errors(axes[3][0], calls, started_at)
    push_delay(axes[3][1], records, started_at)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()


def phases(ax, records: list[BotRecord]) -> None:
    present = [p for p in PHASES if any(p in r.phases for r in records)]
    data = [[r.phases[p] for r in records if p in r.phases] for p in present]
    if data:
        ax.boxplot(
            data, orientation="horizontal", tick_labels=present, whis=(5, 95), showfliers=True
        )
    ax.set_xlabel("ms from join start (box: p25-p75, whiskers: p5-p95)")
    ax.set_title("Join phase latencies")
    ax.grid(axis="x", alpha=0.3)


def connected(
    ax, records: list[BotRecord], started_at: float, stages: Sequence[tuple[float, int]]
) -> None:
    """Bots present (connected to everyone) over time; with stages, the targets they follow."""
    events: list[tuple[float, int]] = []
    for r in records:
        if r.ready_at is not None:
            events.append((r.ready_at - started_at, 1))
            if r.left_at is not None:
                events.append((r.left_at - started_at, -1))
    events.sort()
    times, counts, now = [0.0], [0], 0
    for at, step in events:
        now += step
        times.append(at)
        counts.append(now)
    ax.step(times, counts, where="post", label="present")
    if stages:
        ends = list(itertools.accumulate(seconds for seconds, _ in stages))
        ax.plot([0.0, *ends], [0, *(t for _, t in stages)], "--", color="gray", label="target")
        ax.legend(fontsize="small")
    failed = sum(not r.ok for r in records)
    ax.set_title(f"Participants present ({len(records)} bots, {failed} failed)")
    ax.set_xlabel("s since start")
    ax.grid(alpha=0.3)


def load(ax, usage: list[Usage], started_at: float) -> None:
    seconds = per_second(usage)
    times = [s - started_at for s in seconds]
    ax.plot(times, [sum(u.cpu_percent for u in g) for g in seconds.values()], color="tab:red")
    ax.set_ylabel("CPU % (100 = one core)", color="tab:red")
    ax.set_xlabel("s since start")
    twin = ax.twinx()
    twin.plot(times, [sum(u.rss_mb for u in g) for g in seconds.values()], color="tab:blue")
    twin.set_ylabel("RSS MB", color="tab:blue")
    workers = len({u.worker for u in usage})
    ax.set_title(f"Load generator CPU and memory ({workers} workers)")
    ax.grid(alpha=0.3)


def quality(ax, records: list[BotRecord]) -> None:
    """One point per (bot, remote peer): bitrate against RTT, coloured by jitter."""
    points = [q for r in records for q in r.quality.values()]
    if points:
        dots = ax.scatter(
            [q["latency"] for q in points],
            [q["bitrate"] / 1000 for q in points],
            c=[q["jitter"] for q in points],
            s=[12 + 4 * q["packetLoss"] for q in points],
            cmap="viridis",
        )
        ax.figure.colorbar(dots, ax=ax, label="jitter ms")
    ax.set_xlabel("RTT ms")
    ax.set_ylabel("received kbit/s")
    ax.set_title(f"Media quality per peer ({len(points)} peer links; size: loss %)")
    ax.grid(alpha=0.3)


def experience(ax, records: list[BotRecord], started_at: float) -> None:
    """MOS (p50 and the worst bot) and video freezes so far, over every bot's stay (BotRecord.
    qoe_timeline), in seconds buckets of the run."""
    buckets: dict[int, list[tuple[float | None, int]]] = {}
    for r in records:
        for at, mos, freezes in r.qoe_timeline:
            buckets.setdefault(int(at - started_at), []).append((mos, freezes))
    times = sorted(buckets)
    moses = [sorted(m for m, _ in buckets[t] if m is not None) for t in times]
    shown = [(t, m) for t, m in zip(times, moses, strict=True) if m]
    if shown:
        ax.plot([t for t, _ in shown], [m[len(m) // 2] for _, m in shown], label="MOS p50")
        ax.plot([t for t, _ in shown], [m[0] for _, m in shown], label="MOS worst bot")
    ax.set_ylim(1, 4.6)
    ax.set_ylabel("MOS (E-model)")
    ax.set_xlabel("s since start")
    twin = ax.twinx()
    twin.step(times, [sum(f for _, f in buckets[t]) for t in times], color="tab:red", where="post")
    twin.set_ylabel("video freezes so far (all bots)", color="tab:red")
    if shown:
        ax.legend(loc="lower left")
    ax.set_title("What participants experienced")
    ax.grid(alpha=0.3)


def _per_second(calls: list[Call], started_at: float) -> dict[str, dict[int, list[Call]]]:
    """The calls of the most called functions (by last name), per second of the run."""
    by_name: dict[str, dict[int, list[Call]]] = {}
    for call in calls:
        by_name.setdefault(short(call[1]), {}).setdefault(int(call[0] - started_at), []).append(
            call
        )
    ranked = sorted(by_name, key=lambda n: -sum(map(len, by_name[n].values())))
    return {name: by_name[name] for name in ranked[:FUNCTIONS_SHOWN]}


def function_latency(ax, calls: list[Call], started_at: float) -> None:
    """Each function's p95 per second: a backend slowing down shows as lines rising together."""
    for name, seconds in _per_second(calls, started_at).items():
        times = sorted(seconds)
        p95s = [nearest_rank([c[2] for c in seconds[t]], 95) for t in times]
        ax.plot(times, p95s, marker=".", label=name)
    if calls:
        ax.set_yscale("log")
        ax.legend(fontsize="small")
    ax.set_ylabel("ms, p95 of the calls ended in each second")
    ax.set_xlabel("s since start")
    ax.set_title(f"Backend function latency ({len(calls)} calls)")
    ax.grid(alpha=0.3)


def function_errors(ax, calls: list[Call], started_at: float) -> None:
    failed = [c for c in calls if c[3] is not None]
    for name, seconds in _per_second(failed, started_at).items():
        times = sorted(seconds)
        ax.plot(times, [len(seconds[t]) for t in times], marker="o", label=name)
    if failed:
        ax.legend(fontsize="small")
    ax.set_ylabel("failed calls per second")
    ax.set_xlabel("s since start")
    ax.set_title(f"Backend function errors ({len(failed)})")
    ax.grid(alpha=0.3)


def push_delay(ax, records: list[BotRecord], started_at: float) -> None:
    """From a signal stored to its bot handling it, p50 and p95 per second of the run."""
    seconds: dict[int, list[float]] = {}
    for r in records:
        for at, ms in r.push_delays:
            seconds.setdefault(int(at - started_at), []).append(ms)
    times = sorted(seconds)
    for pct in (50, 95):
        ax.plot(times, [nearest_rank(seconds[t], pct) for t in times], marker=".", label=f"p{pct}")
    if times:
        ax.legend(fontsize="small")
    ax.set_ylabel("ms, signals handled in each second")
    ax.set_xlabel("s since start")
    ax.set_title(f"Pushed signals: stored to handled ({sum(map(len, seconds.values()))})")
    ax.grid(alpha=0.3)
