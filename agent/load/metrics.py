"""The summary of a load run, computed from its bots' records (agent.load.records) and its
workers' usage and loop lag: distributions, QoE, the generator's health, the exit code."""

from __future__ import annotations

from typing import Any

from agent.load import health
from agent.load.health import LagSample
from agent.load.records import PHASES, BotRecord, Usage
from agent.media.qoe import nearest_rank  # the one definition: media cannot import load


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
        "churn": {
            "per_min": config.get("churn", 0.0),
            "left_and_rejoined": sum(r.churned for r in records),
            "rejoins": sum(r.stay > 0 for r in records),
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
