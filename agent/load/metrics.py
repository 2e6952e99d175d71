"""What a load run measures: one record per bot (phase latencies, failure, media, quality), the
load generator's own CPU and memory, and the summary computed from them.

Records are plain dataclasses of numbers and strings so they cross process and Ray boundaries as
they are, and land in JSON and CSV without translation. Phase latencies are milliseconds from the
bot's join start (each on its own monotonic clock); wall-clock times (epoch seconds) are only used
to line bots and workers up on a shared time axis.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from agent.load import health
from agent.media.qoe import nearest_rank  # the one definition: media cannot import load

if TYPE_CHECKING:
    from agent.load.health import LagSample

PHASES = (
    "room_initialized",
    "session_created",
    "offer_sent",
    "offer_received",
    "ice_connected",
    "connected",
    "chat_open",
    "first_audio",
    "first_video",
)


QOE_COLUMNS = (
    "mos",
    "freeze_count",
    "freeze_ratio",
    "fps_ratio",
    "e2e_latency_p50_ms",
    "e2e_latency_p95_ms",
)
"""BotRecord.qoe's keys, the same columns for every bot (a failed one has none)."""


@dataclass
class BotRecord:
    bot: int
    meeting: int
    meeting_id: str
    worker: str = ""
    user_id: str = ""
    started_at: float = 0.0
    """Wall clock (epoch s) of the join start."""
    phases: dict[str, float] = field(default_factory=dict)
    """ms from the join start to each phase reached."""
    ok: bool = False
    failure_phase: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    peers_expected: int = 0
    peers_connected: int = 0
    """The most peers connected at once."""
    chat_sent: int = 0
    chat_received: int = 0
    audio_frames: int = 0
    audio_bytes: int = 0
    video_frames: int = 0
    video_bytes: int = 0
    left_at: float | None = None
    signals: str = ""
    """How signals reached the bot at the end: "push" (its sync socket) or "poll"."""
    signal_polls: int = 0
    """getPendingSignals calls: billed function calls, none while pushed."""
    quality: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per remote user: bitrate (bits/s), packetLoss (%), latency (RTT ms), jitter (ms)."""
    streams: dict[str, dict[str, dict[str, float | None]]] = field(default_factory=dict)
    """Per remote user and kind: what a participant experienced of that stream (agent.media.qoe:
    frames, e2e_latency_p50/p95_ms, and freeze_count, freeze_ratio, fps, fps_ratio for video,
    concealed_ratio and mos for audio)."""
    qoe: dict[str, float | None] = field(default_factory=dict)
    """The bot's QoE in one line: mos (its worst audio stream), freeze_count, freeze_ratio (frozen
    / watched), fps_ratio (received / sent frames), e2e_latency_p50/p95_ms (over its streams)."""
    qoe_timeline: list[tuple[float, float | None, int]] = field(default_factory=list)
    """(epoch s, mos, freezes so far) every few seconds of the stay, for the report's plot."""

    def fail(self, phase: str, code: str, message: str = "") -> None:
        self.ok = False
        self.failure_phase, self.failure_code = phase, code
        self.failure_message = message[:300] or None

    @property
    def connected_at(self) -> float | None:
        ms = self.phases.get("connected")
        return None if ms is None else self.started_at + ms / 1000

    def as_row(self) -> dict[str, Any]:
        """One flat CSV row: phases and quality as columns."""
        skip = ("phases", "quality", "streams", "qoe", "qoe_timeline")
        row = {k: v for k, v in asdict(self).items() if k not in skip}
        row.update({f"qoe_{k}": self.qoe.get(k) for k in QOE_COLUMNS})
        for phase in PHASES:
            row[f"{phase}_ms"] = self.phases.get(phase)
        for name in ("bitrate", "packetLoss", "latency", "jitter"):
            values = [q[name] for q in self.quality.values() if name in q]
            row[f"{name}_mean"] = round(sum(values) / len(values), 3) if values else None
        return row


@dataclass
class Usage:
    """One sample of a load-generator process."""

    worker: str
    at: float
    cpu_percent: float
    rss_mb: float


class UsageMeter:
    """CPU (percent of one core, since the previous reading) and resident memory of this process,
    threads included (aiortc encodes and decodes in threads)."""

    def __init__(self, worker: str) -> None:
        import psutil

        self.worker = worker
        self._process = psutil.Process()
        self._process.cpu_percent(None)

    def read(self) -> Usage:
        return Usage(
            worker=self.worker,
            at=time.time(),
            cpu_percent=self._process.cpu_percent(None),
            rss_mb=self._process.memory_info().rss / 2**20,
        )

    def cpu_seconds(self) -> float:
        times = self._process.cpu_times()
        return times.user + times.system


def distribution(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "p50": round(nearest_rank(values, 50), 1),
        "p95": round(nearest_rank(values, 95), 1),
        "p99": round(nearest_rank(values, 99), 1),
        "max": round(max(values), 1),
    }


def summarize(
    records: list[BotRecord],
    usage: list[Usage],
    config: dict[str, Any],
    loop_lag: dict[str, list[LagSample]] | None = None,
) -> dict:
    """The run in one JSON-able dict: success rate, phase distributions, failures, media, load,
    the generator's health per worker (`loop_lag`: each worker's samples); `thresholds` is filled
    by agent.load.thresholds.apply."""
    ok = sum(r.ok for r in records)
    failures: dict[str, int] = {}
    for r in records:
        if not r.ok:
            key = f"{r.failure_phase}:{r.failure_code}"
            failures[key] = failures.get(key, 0) + 1
    qualities = [q for r in records for q in r.quality.values()]
    return {
        "bots": len(records),
        "ok": ok,
        "failed": len(records) - ok,
        "success_rate": round(100 * ok / len(records), 2) if records else 0.0,
        "phases_ms": {
            p: distribution([r.phases[p] for r in records if p in r.phases]) for p in PHASES
        },
        "failures": failures,
        "media": {
            name: distribution([q[name] for q in qualities if name in q])
            for name in ("bitrate", "packetLoss", "latency", "jitter")
        },
        "signals": {
            "pushed_bots": sum(r.signals == "push" for r in records),
            "polled_bots": sum(r.signals == "poll" for r in records),
            "polls": sum(r.signal_polls for r in records),
        },
        "load_generator": _load(usage),
        "generator": health.generator(loop_lag or {}, usage, records),
        "qoe": qoe_summary(records),
        "thresholds": [],
        "config": config,
    }


def bot_qoe(streams: dict[str, dict[str, dict[str, Any]]]) -> dict[str, float | None]:
    """One bot's QoE from its streams (BotRecord.streams): see BotRecord.qoe."""
    pooled = _Pooled([k for by_kind in streams.values() for k in by_kind.items()])
    return {
        "mos": min(pooled.moses, default=None),
        "freeze_count": pooled.freeze_count,
        "freeze_ratio": pooled.freeze_ratio,
        "fps_ratio": pooled.fps_ratio,
        "e2e_latency_p50_ms": _stats(pooled.p50s, (50,), 1)["p50"],
        "e2e_latency_p95_ms": max(pooled.p95s, default=None),
    }


def qoe_summary(records: list[BotRecord]) -> dict[str, Any]:
    """Over every received stream of every bot: MOS p5/p50 (audio), freezes and the frozen share
    of watched time (video), received over sent frames, end-to-end delay (the median of the
    streams' p50s, the p95 of their p95s)."""
    pooled = _Pooled([k for r in records for kinds in r.streams.values() for k in kinds.items()])
    return {
        "streams": {"audio": len(pooled.audio), "video": len(pooled.video)},
        "mos": _stats(pooled.moses, (5, 50), 2),
        "freeze_count": pooled.freeze_count,
        "freeze_ratio": pooled.freeze_ratio,
        "fps_ratio": pooled.fps_ratio,
        "concealed_ratio": _stats(
            [s.get("concealed_ratio") or 0 for s in pooled.audio], (50, 95), 4
        ),
        "e2e_latency_ms": {
            "p50": _stats(pooled.p50s, (50,), 1)["p50"],
            "p95": _stats(pooled.p95s, (95,), 1)["p95"],
        },
    }


class _Pooled:
    """Stream summaries (kind name, StreamQoE.summary()) taken together: video totals are
    sums over the streams, so a long stream weighs more than a short one."""

    def __init__(self, streams: list[tuple[str, dict[str, Any]]]) -> None:
        self.video = [s for kind, s in streams if kind.startswith("video")]
        self.audio = [s for kind, s in streams if kind.startswith("audio")]
        self.moses = [s["mos"] for s in self.audio if s.get("mos") is not None]
        self.p50s = [v for _, s in streams if (v := s.get("e2e_latency_p50_ms")) is not None]
        self.p95s = [v for _, s in streams if (v := s.get("e2e_latency_p95_ms")) is not None]
        self.freeze_count = sum(s.get("freeze_count") or 0 for s in self.video)
        watched = sum(s.get("watched_s") or 0 for s in self.video)
        frozen = sum(s.get("freeze_time_s") or 0 for s in self.video)
        sent = sum(s.get("frames_sent") or 0 for s in self.video)
        shown = sum(s.get("frames") or 0 for s in self.video)
        self.freeze_ratio = round(frozen / watched, 4) if watched else None
        self.fps_ratio = round(shown / sent, 3) if sent else None


def _stats(values: list[float], pcts: tuple[int, ...], digits: int) -> dict[str, float | None]:
    return {f"p{p}": round(nearest_rank(values, p), digits) if values else None for p in pcts}


def _load(usage: list[Usage]) -> dict[str, float]:
    """Peak and mean of the whole generator: samples of all workers summed per second."""
    cpu, rss = [], []
    for group in per_second(usage).values():
        cpu.append(sum(u.cpu_percent for u in group))
        rss.append(sum(u.rss_mb for u in group))
    if not cpu:
        return {}
    return {
        "workers": len({u.worker for u in usage}),
        "cpu_percent_mean": round(sum(cpu) / len(cpu), 1),
        "cpu_percent_max": round(max(cpu), 1),
        "rss_mb_max": round(max(rss), 1),
    }


def per_second(usage: list[Usage]) -> dict[int, list[Usage]]:
    """Each worker's last sample in each second, so workers' samples add up on one axis."""
    buckets: dict[int, dict[str, Usage]] = {}
    for u in sorted(usage, key=lambda u: u.at):
        buckets.setdefault(int(u.at), {})[u.worker] = u
    return {second: list(group.values()) for second, group in sorted(buckets.items())}


def exit_code(summary: dict, min_success: float, allow_saturated: bool = False) -> int:
    """Non-zero when fewer bots succeeded than asked for, a threshold failed, or a worker of the
    load generator was saturated (its figures measure the tool, unless `allow_saturated`), so
    pipelines can gate on it."""
    failed = summary["success_rate"] < min_success
    failed |= any(not t["ok"] for t in summary.get("thresholds", []))
    failed |= summary.get("generator", {}).get("saturated", False) and not allow_saturated
    return 1 if failed else 0
