"""Live metrics of a load run (`--metrics-port`): scraped over HTTP while a real run goes on."""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from cli_fork import run_forked
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.load.live import LiveMetrics, MetricsUnavailable


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def connvo_agent(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_a_run_is_scraped_while_it_goes_and_the_port_closes_at_the_end():
    run = subprocess.Popen(
        [
            sys.executable, "-m", "agent", "load", "--meetings", "2", "--participants", "2",
            "--duration", "4", "--workers", "1", "--metrics-port", "0", "--json",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in run.stderr], daemon=True).start()
    try:
        url = None
        deadline = time.monotonic() + 20
        while url is None and time.monotonic() < deadline:
            line = lines.get(timeout=20)
            if line.startswith("metrics: "):
                url = line.split()[1]
        assert url is not None and url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        seen: dict = {}
        while time.monotonic() < deadline and run.poll() is None:
            seen = samples(httpx.get(url, timeout=5).text)
            if seen[("connvo_load_bots", frozenset({("state", "connected")}))] == 4:
                break
            time.sleep(0.2)
        assert run.poll() is None, "the run ended before its bots were seen connected"
        assert seen[("connvo_load_bots", frozenset({("state", "connected")}))] == 4
        assert seen[("connvo_load_bots_planned", frozenset())] == 4
        assert seen[("connvo_load_workers", frozenset())] == 1
        connected = frozenset({("phase", "connected")})
        assert seen[("connvo_load_phase_seconds_count", connected)] == 4
        assert 0 < seen[("connvo_load_phase_seconds_sum", connected)] < 4 * 30
        cpu = [k for k in seen if k[0] == "connvo_load_worker_cpu_percent"]
        rss = [v for k, v in seen.items() if k[0] == "connvo_load_worker_rss_bytes"]
        assert len(cpu) == 1 and dict(cpu[0][1])["worker"]
        assert rss and rss[0] > 10 * 2**20
        # OpenMetrics too, for a Prometheus that asks for it.
        open_metrics = httpx.get(
            url, headers={"Accept": "application/openmetrics-text; version=1.0.0"}, timeout=5
        )
        assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
        assert open_metrics.text.rstrip().endswith("# EOF")
        out, _ = run.communicate(timeout=30)
        assert run.returncode == 0
        assert json.loads(out.strip().splitlines()[-1])["success_rate"] == 100.0
        with pytest.raises(httpx.ConnectError):
            httpx.get(url, timeout=2)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


def test_a_bad_metrics_port_is_one_line_and_exit_2():
    ports = (("70000", "out of range: from 0 to 65535"), ("http", "not a whole number"))
    args = [("load", "--metrics-port", value) for value, _ in ports]
    *bad_ports, host_alone = run_forked(
        [*args, ("load", "--metrics-host", "127.0.0.1")], os.environ
    )
    for (_, why), (code, _, err) in zip(ports, bad_ports, strict=True):
        assert code == 2
        assert err.count("\n") == 1 and "argument --metrics-port" in err
        assert why in err
    code, _, err = host_alone
    assert code == 2
    assert err == "connvo-agent load: --metrics-host goes with --metrics-port\n"


def test_a_metrics_port_in_use_is_one_line_and_exit_2_before_anything_starts():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        done = connvo_agent("load", "--metrics-port", str(port))
    assert done.returncode == 2
    assert done.stderr == (
        f"connvo-agent load: --metrics-port {port}: cannot listen on 127.0.0.1:{port}:"
        " Address already in use\n"
    )
    assert time.monotonic() - started < 15  # no backend, no meetings, no bots were started


def test_progress_maps_to_gauges_only_for_the_keys_workers_report():
    live = LiveMetrics(planned_bots=6)
    first = {"joined": 2, "connected": 1, "cpu_percent": 50.0, "rss_mb": 100.0}
    first["phases"] = [("connected", 250.0), ("session_created", 40.0), ("not_a_phase", 1.0)]
    other = {"joined": 1, "connected": 1, "failed": 1, "done": 1, "cpu_percent": 20.0}
    other |= {"loop_lag_p50_ms": 2.0, "loop_lag_p99_ms": 60.0, "saturated": True}
    other |= {"mos_p50": 4.2, "freeze_ratio": 0.01, "e2e_latency_p95_ms": 120.0, "colour": "red"}
    live.update({"w1": first})
    live.update({"w1": first, "w2": other})  # w1's report again: not observed twice
    got = samples(generate_latest(live.registry).decode())

    def value(name: str, **labels: str) -> float | None:
        return got.get((name, frozenset(labels.items())))

    assert value("connvo_load_bots", state="joined") == 3
    assert value("connvo_load_bots", state="left") == 1
    assert value("connvo_load_bots_planned") == 6
    assert value("connvo_load_phase_seconds_count", phase="connected") == 1
    assert value("connvo_load_phase_seconds_bucket", phase="connected", le="0.25") == 1
    assert value("connvo_load_phase_seconds_bucket", phase="connected", le="0.1") == 0
    assert value("connvo_load_phase_seconds_count", phase="first_video") == 0
    assert value("connvo_load_worker_rss_bytes", worker="w1") == 100 * 2**20
    assert value("connvo_load_worker_loop_lag_seconds", worker="w2", quantile="0.99") == 0.06
    assert value("connvo_load_worker_saturated", worker="w2") == 1
    assert value("connvo_load_worker_saturated", worker="w1") is None
    assert value("connvo_load_mos", worker="w2", quantile="0.5") == 4.2
    assert value("connvo_load_e2e_latency_seconds", worker="w2", quantile="0.95") == 0.12
    assert value("connvo_load_freeze_ratio", worker="w2") == 0.01
    names = {name for name, _ in got}
    assert "connvo_load_fps_ratio" not in names and not any("colour" in n for n in names)
    assert value("connvo_load_mos", worker="w1", quantile="0.5") is None


def test_each_bots_qoe_is_observed_once_in_the_qoe_histograms():
    live = LiveMetrics(planned_bots=2)
    done = {"qoe": [{"mos": 4.4, "freeze_ratio": 0.0, "e2e_latency_p95_ms": 80.0}]}
    live.update({"w1": done})
    live.update({"w1": done})  # the same report: not observed again
    live.update({"w1": {"qoe": [{"mos": 2.5, "freeze_ratio": None, "e2e_latency_p95_ms": 400}]}})
    got = samples(generate_latest(live.registry).decode())

    def value(name: str, **labels: str) -> float | None:
        return got.get((name, frozenset(labels.items())))

    assert value("connvo_load_bot_mos_count") == 2
    assert value("connvo_load_bot_mos_bucket", le="3.0") == 1
    assert value("connvo_load_bot_freeze_ratio_count") == 1  # an unknown ratio is not a zero
    assert value("connvo_load_bot_e2e_latency_seconds_bucket", le="0.1") == 1
    assert value("connvo_load_bot_e2e_latency_seconds_count") == 2


def test_the_exporter_listens_on_loopback_and_frees_its_port():
    live = LiveMetrics(planned_bots=1)
    port = live.start(0)
    try:
        assert live.url == f"http://127.0.0.1:{port}/metrics"
        assert "connvo_load_bots_planned 1.0" in httpx.get(live.url, timeout=5).text
        with pytest.raises(MetricsUnavailable, match="Address already in use"):
            LiveMetrics(planned_bots=1).start(port)
    finally:
        live.close()
        live.close()
    with socket.socket() as again:  # no listener left (SO_REUSEADDR: the scrape's TIME_WAIT)
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
        again.listen()
