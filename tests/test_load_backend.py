"""The backend as a load run sees it: every function call's latency and errors, from every bot.

Small loads on the session's dev backend; timings are never asserted tightly (a shared machine)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from agent.load import backend
from agent.load.backend import short
from agent.load.config import LoadConfig
from agent.load.health import LagSample
from agent.load.live import LiveMetrics
from agent.load.report import table, write
from agent.load.runner import Target, run_load
from agent.load.stages import parse as parse_stages
from agent.load.stages import stays
from agent.load.thresholds import apply, parse
from signaling.devserver.process import DevServer


@pytest.mark.slow
def test_refused_tokens_show_as_errors_by_code_per_function_and_per_bot(backend):
    host, _ = backend.user(backend.unique("load-host"))
    tokens = [backend.user(backend.unique("load-bot"))[0] for _ in range(3)]
    tokens.insert(1, tokens[0][:-4] + "AAAA")  # bot 1: a token whose signature does not match
    config = LoadConfig(meetings=2, participants=2, duration=0.5)
    result = run_load(
        config, target=Target(backend.url, host, tuple(tokens)), workers=0, quiet=True
    )

    functions = result.summary["backend"]["functions"]
    by_name = {short(path): f for path, f in functions.items()}
    assert by_name["initializeWebRTCRoom"]["errors"] == {"UNAUTHORIZED": 1}
    assert by_name["createWebRTCSession"]["calls"] == 3  # the refused bot never got that far
    assert by_name["createWebRTCSession"]["errors"] == {}
    latency = by_name["createWebRTCSession"]["latency_ms"]
    assert latency["count"] == 3 and 0 < latency["p50"] <= latency["p99"] <= latency["max"]
    assert sum(n for _, n in by_name["createWebRTCSession"]["calls_per_s"]) == 3
    assert result.summary["backend"]["errors"] >= 1
    refused = result.records[1].functions
    assert any(f["errors"] == {"UNAUTHORIZED": 1} for f in refused.values())
    assert all(not f["errors"] for f in result.records[0].functions.values())
    assert "createWebRTCSession" in table(result.summary)
    assert "errors: 1 UNAUTHORIZED" in table(result.summary)


@pytest.mark.slow
def test_pushed_signals_are_timed_from_stored_to_handled(tmp_path):
    result = run_load(LoadConfig(meetings=1, participants=3, duration=0.5), workers=0, quiet=True)
    delay = result.summary["backend"]["push_delay_ms"]
    pushed = [ms for r in result.records for _, ms in r.push_delays]
    assert delay["count"] == len(pushed) > 0  # offers and answers at least
    assert -50 < delay["p50"] < 2000  # the clock offset is good to half a call's round trip
    assert "pushed signals (delay)" in table(result.summary)
    assert result.summary["bottleneck"] is None
    write(result, tmp_path)  # the plots of function latency, errors and push delay draw
    bots = json.loads((tmp_path / "bots.json").read_text())
    assert all(b["push_delays"] and b["functions"] for b in bots)


def test_function_calls_are_exported_as_a_histogram_and_errors_by_code():
    live = LiveMetrics(2)
    path = "meetings/webrtc/index:createWebRTCSession"
    live.update({"w": {"calls": [(path, 12.0, None), (path, 3000.0, "TIMEOUT")]}})
    text = _exposition(live)
    assert f'connvo_load_function_seconds_count{{function="{path}"}} 2.0' in text
    assert f'connvo_load_function_seconds_bucket{{function="{path}",le="0.025"}} 1.0' in text
    assert f'connvo_load_function_errors_total{{code="TIMEOUT",function="{path}"}} 1.0' in text


def _exposition(live: LiveMetrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(live.registry).decode()


@pytest.mark.slow
def test_a_backend_stopped_for_3_s_mid_ramp_is_named_the_bottleneck(tmp_path):
    # 12 bots join at 3 a second; 1.5 s in, the backend's process is stopped for 3 s: the bots
    # joining then wait on their first calls, and all still connect.
    with DevServer(tmp_path / "data") as server:
        tokens = tuple(server.token(f"bot{i}") for i in range(12))
        target = Target(server.url, server.token("host"), tokens)
        stall = threading.Timer(1.5, _stop_for, (server.pid, 3.0))
        stall.start()
        config = LoadConfig(meetings=4, participants=3, duration=2, ramp=3)
        result = run_load(config, target=target, workers=0, quiet=True)
        stall.join()
    summary = result.summary
    assert summary["success_rate"] == 100.0
    initialize = summary["backend"]["functions"]["meetings/webrtc/index/initializeWebRTCRoom"]
    assert initialize["latency_ms"]["p99"] > 1500
    assert summary["bottleneck"] == "backend", summary["bottleneck_evidence"]
    assert (
        "meetings/webrtc/index/initializeWebRTCRoom" in summary["bottleneck_evidence"]["functions"]
    )
    [check] = apply(summary, [parse("backend.initializeWebRTCRoom.p95<500")])
    assert not check["ok"] and check["value"] > 500
    assert "bottleneck: the BACKEND" in table(summary)
    write(result, tmp_path / "report")
    assert "The backend was the bottleneck" in (tmp_path / "report" / "report.html").read_text()


def test_calls_slowed_by_the_generators_own_loop_do_not_blame_the_backend():
    path, t = "meetings/webrtc/index/createWebRTCSession", 1000.0
    slow = [(t + 5, path, 3000.0, None), (t + 5.1, path, 2900.0, None)]
    summary: dict = {"generator": {"saturated": False}}
    stalled = {"w": [LagSample(t + 4.9, 2800.0)]}  # the worker's loop woke 2.8 s late
    backend.apply(summary, {"w": slow}, stalled, [], t)
    assert summary["bottleneck"] is None
    assert summary["bottleneck_evidence"]["excused_calls"] == 2
    backend.apply(summary, {"w": slow}, {"w": [LagSample(t + 4.9, 3.0)]}, [], t)
    assert summary["bottleneck"] == "backend"
    assert summary["bottleneck_evidence"]["functions"][path]["from_s"] == 5


def _stop_for(pid: int, seconds: float) -> None:
    os.kill(pid, signal.SIGSTOP)
    try:
        threading.Event().wait(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.mark.slow
def test_bots_present_follow_the_stages_up_and_down(tmp_path):
    config = LoadConfig(meetings=2, participants=3, stages=((3, 6), (4, 6), (3, 2)))
    result = run_load(config, workers=0, quiet=True)
    up, hold, down = result.summary["stages"]
    assert [s["target"] for s in (up, hold, down)] == [6, 6, 2]
    assert hold["present_max"] == 6 and up["present_max"] <= 6
    assert abs(down["present_end"] - 2) <= 1  # bots 0-2 leave with the last stage's end
    assert result.summary["success_rate"] == 100.0
    left = {r.bot: r.left_at or 0.0 for r in result.records}
    assert left[5] < left[4] < left[3] < min(left[0], left[1], left[2])  # newest first
    assert hold["functions_p95_ms"] or up["functions_p95_ms"]
    assert "present at end" in table(result.summary)
    write(result, tmp_path)


@pytest.mark.parametrize(
    ("stage", "says"),
    [
        ("10s:5", "a target of 5 is above --meetings x --participants (4)"),
        ("10x:2", "'10x:2' is not DURATION:TARGET"),
    ],
)
def test_a_stage_beyond_the_meetings_or_malformed_is_one_line_and_exit_2(stage: str, says: str):
    done = subprocess.run(
        [sys.executable, "-m", "agent", "load", "--meetings", "2", "--participants", "2",
         "--stage", f"1s:1,{stage}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and says in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_stages_are_a_line_through_the_targets_and_bots_leave_newest_first():
    stages = parse_stages("2s:4,1m:4,2s:1")
    assert stages == ((2.0, 4), (60.0, 4), (2.0, 1))
    assert [stays(stages, i) for i in range(5)] == [
        ((0.0, 64.0),),
        ((0.5, 64.0),),
        ((1.0, 62.0 + 4 / 3),),  # the line falls 1.5 a second from 4 at 62 s
        ((1.5, 62.0 + 2 / 3),),
        (),
    ]


@pytest.mark.slow
def test_churned_bots_leave_and_rejoin_with_a_new_session_and_are_counted():
    config = LoadConfig(meetings=1, participants=3, duration=8, churn=40)
    result = run_load(config, workers=0, quiet=True)
    churn = result.summary["churn"]
    assert churn["left_and_rejoined"] >= 1
    assert churn["rejoins"] == churn["left_and_rejoined"]
    rejoined = [r for r in result.records if r.stay > 0]
    assert rejoined and all(r.ok and "connected" in r.phases for r in rejoined)
    assert result.summary["bots"] == 3 + len(rejoined)  # each join counts, as any other
    assert result.summary["success_rate"] == 100.0
