"""One load bot's record and one sample of a worker's usage: what workers send to the driver.

Records are plain dataclasses of numbers and strings so they cross process and Ray boundaries as
they are, and land in JSON and CSV without translation. Phase latencies are milliseconds from the
bot's join start (each on its own monotonic clock); wall-clock times (epoch seconds) are only used
to line bots and workers up on a shared time axis.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

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
    stay: int = 0
    """0 for the user's first join, then one more for each rejoin (stages, churn)."""
    churned: bool = False
    """This stay ended by `--churn`: the user left to rejoin at once."""
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
    ready_at: float | None = None
    """Wall clock (epoch s) when it was connected to everyone expected: present from then."""
    left_at: float | None = None
    signals: str = ""
    """How signals reached the bot at the end: "push" (its sync socket) or "poll"."""
    signal_polls: int = 0
    """getPendingSignals calls: billed function calls, none while pushed."""
    functions: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per function path the bot called: `calls`, and `errors` by code (agent.load.backend)."""
    push_delays: list[tuple[float, float]] = field(default_factory=list)
    """(epoch s, ms) per signal pushed to the bot: from the backend storing it to its handling."""
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
        skip = ("phases", "quality", "streams", "qoe", "qoe_timeline", "functions", "push_delays")
        row = {k: v for k, v in asdict(self).items() if k not in skip}
        row["calls"] = sum(f["calls"] for f in self.functions.values())
        row["call_errors"] = sum(sum(f["errors"].values()) for f in self.functions.values())
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
