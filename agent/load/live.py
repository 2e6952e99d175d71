"""Live metrics of a load run: Prometheus/OpenMetrics text on `--metrics-port`, served by the driver
from the progress its workers already send it, so a Grafana user can watch a long run as it goes.

    live = LiveMetrics(planned_bots)
    port = live.start(9464)  # 127.0.0.1 unless told otherwise; 0 picks a free port
    live.update(workers)     # each worker's latest `Worker.progress()`, by worker name
    live.close()

Exported (a private registry, so repeated runs in one process never collide):

- `connvo_load_bots{state="joined|connected|failed|left"}` and `connvo_load_bots_planned`;
  `connvo_load_workers`.
- `connvo_load_phase_seconds{phase}`: a histogram of each bot's time from its join start to each
  phase (PHASES), observed as workers report the phases their bots reached (50 ms .. 30 s).
- Per worker: `connvo_load_worker_cpu_percent` (of one core), `connvo_load_worker_rss_bytes`,
  and, when the worker reports them, `connvo_load_worker_loop_lag_seconds{quantile="0.5|0.99"}`
  and `connvo_load_worker_saturated` (0 or 1).
- Quality of experience, per worker, from the progress keys of QOE when present (a key a worker
  does not report is not exported); and histograms of each bot's QoE over its stay, observed
  once per bot as it finishes: `connvo_load_bot_mos`, `connvo_load_bot_freeze_ratio`,
  `connvo_load_bot_e2e_latency_seconds` (its streams' p95).
- The backend: `connvo_load_function_seconds{function}`, a histogram of every Convex function
  call's duration (5 ms .. 30 s), and `connvo_load_function_errors_total{function,code}`, the
  failed calls by error code (agent.load.backend), both labelled by the function's path.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from agent.load.records import PHASES

PHASE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0)
"""Seconds: join phases take tens of ms on loopback and up to the join timeout (30 s) at worst."""
FUNCTION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds: a call answers in milliseconds on loopback, and times out after 10 s (retries more)."""

BOT_STATES = {"joined": "joined", "connected": "connected", "failed": "failed", "left": "done"}
"""Label value -> the `Worker.progress()` key it sums."""

_MOS = "connvo_load_mos", "Audio MOS estimate (ITU-T G.107 E-model), 1 to 5"
_E2E = "connvo_load_e2e_latency_seconds", "One-way media latency, capture to arrival"
QOE: dict[str, tuple[str, str, dict[str, str], float]] = {
    "mos_p5": (*_MOS, {"quantile": "0.05"}, 1.0),
    "mos_p50": (*_MOS, {"quantile": "0.5"}, 1.0),
    "freeze_ratio": ("connvo_load_freeze_ratio", "Frozen time / watched time of video", {}, 1.0),
    "freeze_count": ("connvo_load_freezes", "Video freezes seen by the worker's bots", {}, 1.0),
    "fps_ratio": ("connvo_load_fps_ratio", "Frame rate received / frame rate sent", {}, 1.0),
    "e2e_latency_p50_ms": (*_E2E, {"quantile": "0.5"}, 1e-3),
    "e2e_latency_p95_ms": (*_E2E, {"quantile": "0.95"}, 1e-3),
}
"""The allow-list of QoE progress keys: key -> (metric, help, extra labels, scale to the unit)."""


BOT_QOE: dict[str, tuple[str, str, tuple[float, ...]]] = {
    "mos": (
        "connvo_load_bot_mos",
        "Each bot's audio MOS (its worst stream)",
        (1, 2, 3, 3.5, 4, 4.3),
    ),
    "freeze_ratio": (
        "connvo_load_bot_freeze_ratio",
        "Each bot's frozen / watched video time",
        (0.001, 0.01, 0.05, 0.1, 0.25, 0.5),
    ),
    "e2e_latency_p95_ms": (
        "connvo_load_bot_e2e_latency_seconds",
        "Each bot's end-to-end media latency, p95 of its streams",
        (0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.0),
    ),
}
"""BotRecord.qoe key -> histogram (name, help, buckets): observed once per bot, at its end."""


class MetricsUnavailable(Exception):
    """The metrics port could not be listened on (in use, not permitted, no such address)."""


class LiveMetrics:
    def __init__(self, planned_bots: int) -> None:
        self.planned = planned_bots
        self.registry = CollectorRegistry()
        self.phases = Histogram(
            "connvo_load_phase_seconds",
            "Time from a bot's join start to each phase it reached",
            ["phase"],
            buckets=PHASE_BUCKETS,
            registry=self.registry,
        )
        for phase in PHASES:  # every series from 0, so rate() sees the first observations
            self.phases.labels(phase)
        self.functions = Histogram(
            "connvo_load_function_seconds",
            "Duration of each Convex function call of the bots, retries included",
            ["function"],
            buckets=FUNCTION_BUCKETS,
            registry=self.registry,
        )
        self.function_errors = Counter(
            "connvo_load_function_errors",
            "Failed Convex function calls of the bots, by error code",
            ["function", "code"],
            registry=self.registry,
        )
        self.bot_qoe = {
            key: Histogram(name, text, buckets=buckets, registry=self.registry)
            for key, (name, text, buckets) in BOT_QOE.items()
        }
        self._lock = threading.Lock()
        self._workers: dict[str, dict[str, Any]] = {}
        self._seen: dict[str, Any] = {}
        self.registry.register(_Snapshot(self))
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.url: str | None = None

    def start(self, port: int, host: str = "127.0.0.1") -> int:
        """Serves /metrics on host:port (0: any free port) in a daemon thread; answers the port."""
        try:
            self._server, self._thread = start_http_server(port, host, registry=self.registry)
        except OSError as e:  # in use, a privileged port, an address not of this machine
            raise MetricsUnavailable(
                f"cannot listen on {_hostport(host, port)}: {e.strerror or e}"
            ) from None
        port = self._server.server_address[1]
        self.url = f"http://{_hostport(host, port)}/metrics"
        return port

    def update(self, workers: Mapping[str, Mapping[str, Any]]) -> None:
        """`workers`: each worker's latest `Worker.progress()`. A report already seen (the driver
        passes every worker's latest on each message) is not observed twice."""
        with self._lock:
            for name, progress in workers.items():
                if self._seen.get(name) is progress:
                    continue
                self._seen[name] = progress  # held, so its identity is never reused
                self._workers[name] = dict(progress)
                for phase, ms in progress.get("phases", ()):
                    if phase in PHASES:
                        self.phases.labels(phase).observe(ms / 1000)
                for qoe in progress.get("qoe", ()):
                    self._observe_qoe(qoe)
                for path, ms, error in progress.get("calls", ()):
                    self.functions.labels(path).observe(ms / 1000)
                    if error is not None:
                        self.function_errors.labels(path, error).inc()

    def _observe_qoe(self, qoe: Mapping[str, Any]) -> None:
        for key, histogram in self.bot_qoe.items():
            value = _number(qoe.get(key))
            if value is not None:
                histogram.observe(value / 1000 if key.endswith("_ms") else value)

    def close(self) -> None:
        """Stops serving and frees the port; safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self._workers)


class _Snapshot(Collector):
    """The gauges, read from the workers' latest progress at each scrape."""

    def __init__(self, live: LiveMetrics) -> None:
        self.live = live

    def collect(self) -> Iterator[GaugeMetricFamily]:
        workers = self.live.snapshot()
        bots = GaugeMetricFamily("connvo_load_bots", "Bots by state", labels=["state"])
        for state, key in BOT_STATES.items():
            bots.add_metric([state], sum(_number(p.get(key)) or 0.0 for p in workers.values()))
        yield bots
        yield GaugeMetricFamily(
            "connvo_load_bots_planned", "Bots the run starts", self.live.planned
        )
        yield GaugeMetricFamily("connvo_load_workers", "Workers reporting", len(workers))
        families: dict[str, GaugeMetricFamily] = {}

        def gauge(name: str, text: str, labels: dict[str, str], value: float) -> None:
            if name not in families:
                families[name] = GaugeMetricFamily(name, text, labels=list(labels))
            families[name].add_metric(list(labels.values()), value)

        for worker, p in sorted(workers.items()):
            for key, name, text, scale in (
                ("cpu_percent", "connvo_load_worker_cpu_percent", "CPU, % of one core", 1.0),
                ("rss_mb", "connvo_load_worker_rss_bytes", "Resident memory", 2.0**20),
                ("saturated", "connvo_load_worker_saturated", "1: the worker is the bottleneck", 1),
            ):
                if (value := _number(p.get(key))) is not None:
                    gauge(name, text, {"worker": worker}, value * scale)
            for key, quantile in (("loop_lag_p50_ms", "0.5"), ("loop_lag_p99_ms", "0.99")):
                if (value := _number(p.get(key))) is not None:
                    labels = {"worker": worker, "quantile": quantile}
                    gauge(
                        "connvo_load_worker_loop_lag_seconds",
                        "Event-loop lag",
                        labels,
                        value / 1000,
                    )
            for key, (name, text, extra, scale) in QOE.items():
                if (value := _number(p.get(key))) is not None:
                    gauge(name, text, {"worker": worker, **extra}, value * scale)
        yield from families.values()


def _number(value: Any) -> float | None:
    """A finite number (a bool as 0 or 1); anything else is not exported."""
    if isinstance(value, bool | int | float) and math.isfinite(value):
        return float(value)
    return None


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
