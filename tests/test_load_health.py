"""The load generator's own health (agent.load.health) and thresholds (agent.load.thresholds):
the rule on fed samples, and real runs through the CLI with the embedded dev backend.

Timings are never asserted tightly: the machine is shared with other test runs."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent.load.config import LoadConfig
from agent.load.health import LagSample, generator, worker_health
from agent.load.metrics import exit_code
from agent.load.progress import ProgressDisplay
from agent.load.records import BotRecord, Usage
from agent.load.report import table
from agent.load.runner import run_load


def connvo_agent(
    *args: str, timeout: float = 90, cpu: int | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh process; `cpu`: pinned to that core, with every process it starts."""
    pin = None if cpu is None else (lambda: os.sched_setaffinity(0, {cpu}))
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=pin,
    )


def summary_of(done: subprocess.CompletedProcess[str]) -> dict:
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the rule, fed samples ---------------------------------------------------------------------


def bot(worker: str, connected_at: float, left_at: float) -> BotRecord:
    """A bot connected `connected_at` s after t=1000 and gone at `left_at`; its chat opened
    later still (a saturated loop's SCTP does): the steady part starts at `connected`."""
    record = BotRecord(bot=0, meeting=0, meeting_id="m", worker=worker, started_at=1000.0)
    record.phases = {"connected": connected_at * 1000, "chat_open": (connected_at + 9) * 1000}
    record.ok, record.left_at = True, 1000.0 + left_at
    return record


def lags(start: float, end: float, ms: float) -> list[LagSample]:
    """A sample every 50 ms from t=1000+start to 1000+end, each `ms` late."""
    return [LagSample(1000.0 + start + i * 0.05, ms) for i in range(int((end - start) / 0.05))]


def cpu(start: float, end: float, percent: float, worker: str = "w") -> list[Usage]:
    """A sample a second from t=1000+start to 1000+end."""
    return [Usage(worker, 1000.0 + t, percent, 100.0) for t in range(int(start), int(end))]


def test_the_rule_judges_the_steady_part_not_the_join_burst():
    # Joins from 0 to 5 s: late and busy, as every run's joins are; then 20 s of media.
    records = [bot("w", 5, 25), bot("w", 2, 25)]
    burst, media = lags(0, 5, 300), lags(5, 25, 3)
    health = worker_health(burst + media, cpu(0, 5, 100) + cpu(5, 25, 70), records)
    assert health == {
        "loop_lag_ms": {"p50": 3.0, "p99": 3.0},
        "cpu_percent_mean": 70.0,
        "steady_s": 20.0,
        "saturated": False,
    }
    assert worker_health(burst + lags(5, 25, 25), cpu(5, 25, 70), records)["saturated"]
    # The CPU is reported, not judged: threads count in it, and the lag shows a full loop.
    assert not worker_health(media, cpu(5, 25, 99), records)["saturated"]


def test_without_a_steady_part_the_whole_run_is_judged():
    # No bot connected, or the first left before the last connected: steady_s 0.
    failed = bot("w", 5, 25)
    failed.ok = False
    health = worker_health(lags(0, 5, 300) + lags(5, 25, 3), cpu(0, 25, 99), [failed])
    assert health["steady_s"] == 0.0 and not health["saturated"]
    assert health["loop_lag_ms"] == {"p50": 3.0, "p99": 300.0}
    overlapping = [bot("w", 10, 30), bot("w", 2, 8)]
    health = worker_health(lags(0, 30, 30), cpu(0, 30, 50), overlapping)
    assert health["steady_s"] == 0.0 and health["saturated"]


def test_the_generator_is_saturated_when_any_worker_is_and_the_exit_code_says_so():
    records = [bot("a", 1, 20), bot("b", 1, 20)]
    records[1].bot = 1
    usage = cpu(1, 20, 50, "a") + cpu(1, 20, 50, "b")
    result = generator({"a": lags(1, 20, 2), "b": lags(1, 20, 80)}, usage, records)
    assert result["saturated"] and "lag p50 is over 20 ms" in result["rule"]
    assert [w["saturated"] for w in result["workers"].values()] == [False, True]
    summary = {"success_rate": 100.0, "generator": result, "thresholds": []}
    assert exit_code(summary, 100) == 1
    assert exit_code(summary, 100, allow_saturated=True) == 0


# --- real runs ---------------------------------------------------------------------------------
# (Each worker's health in a passing run's summary, with thresholds that pass, is asserted by
# test_load.py's run of a few meetings: one run for both.)


@pytest.mark.slow
def test_a_failed_or_unmeasurable_threshold_is_listed_and_exits_1(tmp_path: Path):
    done = connvo_agent(
        "load", "--meetings", "1", "--participants", "2", "--duration", "1", "--media", "audio",
        "--workers", "0", "--threshold", "connected.p95<100000", "--threshold",
        "connected.p95<0.001", "--threshold", "first_video.p95<100000",
        "--report", str(tmp_path), "--json",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    summary = summary_of(done)
    assert summary["success_rate"] == 100.0 and not summary["generator"]["saturated"]
    passed, failed, absent = summary["thresholds"]
    assert passed["ok"] and passed["value"] == summary["phases_ms"]["connected"]["p95"]
    assert not failed["ok"] and failed["value"] == passed["value"]
    assert absent == {
        "expression": "first_video.p95<100000",
        "value": None,
        "ok": False,
        "reason": "first_video has no samples in this run",
    }
    assert "thresholds: 1 passed, 2 failed" in done.stderr
    assert "FAIL  connected.p95<0.001" in done.stderr
    page = (tmp_path / "report.html").read_text()
    assert "Thresholds failed" in page and "connected.p95&lt;0.001" in page


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("connected.p95 2000", "is not metric[.stat] op number"),
        ("conected.p95<2000", "unknown metric 'conected'"),
        ("connected<2000", "connected needs a stat"),
        ("connected.p95<soon", "'soon' is not a number"),
    ],
)
def test_a_malformed_threshold_is_one_line_and_exit_2(expression: str, says: str):
    done = connvo_agent("load", "--threshold", "success_rate>=99", "--threshold", expression)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("connvo-agent load: argument --threshold: ")
    assert says in done.stderr


@pytest.mark.slow
def test_an_in_process_worker_reports_its_loop_lag_while_running(monkeypatch):
    seen: list[dict] = []
    monkeypatch.setattr(ProgressDisplay, "update", lambda _, workers: seen.extend(workers.values()))
    config = LoadConfig(meetings=1, participants=2, duration=1.5, media="audio")
    result = run_load(config, workers=0, quiet=True)
    assert seen and all({"loop_lag_p50_ms", "loop_lag_p99_ms", "saturated"} <= set(p) for p in seen)
    assert any(p["loop_lag_p99_ms"] > 0 for p in seen)
    (worker,) = result.summary["generator"]["workers"].values()
    assert worker["loop_lag_ms"]["p99"] > 0 and not worker["saturated"]


@pytest.mark.slow
def test_a_worker_freezes_what_its_joining_bots_made_and_hands_it_back_when_they_left(
    monkeypatch,
):
    """So that a full collection, which stops every stream of the worker at once, walks only
    what was made since (agent.load.collector)."""
    frozen: list[int] = []
    monkeypatch.setattr(ProgressDisplay, "update", lambda *_: frozen.append(gc.get_freeze_count()))
    config = LoadConfig(meetings=1, participants=2, duration=1.5, media="av")
    result = run_load(config, workers=0, quiet=True)
    assert result.summary["success_rate"] == 100.0
    assert max(frozen) > 10_000  # the worker's modules, its bots' peers and feeds
    assert gc.get_freeze_count() == 0


# --- a worker starved for real -----------------------------------------------------------------

SHARE = 11
"""Processes busy on the starved core, each getting an eleventh of it: the runs' CLIs (each with
its in-process worker) and dev backends, and busy hogs for the rest. With 5 hogs and one run, the
lag p50 came out at 6 to 50 ms from run to run (a flaky test); with 9 (an eleventh each) it is
well past the rule's 20 ms, about 33 s a run."""


@contextlib.contextmanager
def hogs(cpu: int, count: int) -> Iterator[None]:
    """`count` processes spinning on core `cpu` for as long as the block runs."""
    spin = f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile True:\n    pass\n"
    started = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(count)]
    try:
        time.sleep(0.3)
        yield
    finally:
        for process in started:
            process.kill()
            process.wait()


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_a_starved_worker_is_saturated_and_fails_the_run_unless_allowed():
    # The CLI, its in-process worker and the dev backend share one core with busy processes:
    # the generator really has less CPU than its bots need, as on an overloaded machine. Two
    # runs at once, refused and allowed, each starved as one run alone among 9 hogs was.
    cpu = max(os.sched_getaffinity(0))
    load = (
        "load", "--meetings", "3", "--participants", "4", "--duration", "5", "--media", "av",
        "--workers", "0", "--join-timeout", "60", "--json", "--min-success", "0",
    )  # fmt: skip
    runs = {False: load, True: (*load, "--allow-saturated")}
    with hogs(cpu, SHARE - 2 * len(runs)), ThreadPoolExecutor(len(runs)) as pool:
        started = {
            allow: pool.submit(connvo_agent, *args, cpu=cpu, timeout=180)
            for allow, args in runs.items()
        }
        done = {allow: run.result() for allow, run in started.items()}
    for allow, run in done.items():
        summary = summary_of(run)
        # An eleventh of a core: now and then a bot does not connect in time, as on any such
        # machine; the verdict is what this test is about (and --min-success 0 keeps it the
        # exit code's).
        assert summary["success_rate"] >= 75.0, summary["failures"]
        (worker,) = summary["generator"]["workers"].values()
        assert summary["generator"]["saturated"] and worker["saturated"], worker
        assert worker["loop_lag_ms"]["p50"] > 20
        assert worker["cpu_percent_mean"] < 60  # its own CPU cannot see the core it lacks
        assert "load generator SATURATED" in run.stderr
        assert run.returncode == (0 if allow else 1), run.stderr[-3000:]


def test_the_table_shows_a_saturated_worker_in_red_only_for_a_terminal():
    summary = {
        "bots": 4, "ok": 4, "failed": 0, "success_rate": 100.0, "phases_ms": {},
        "media": {"bitrate": {"count": 0}}, "load_generator": {}, "failures": {},
        "generator": generator({"w": lags(1, 20, 80)}, cpu(1, 20, 50), [bot("w", 1, 20)]),
        "thresholds": [{"expression": "mos.p5>3.5", "value": None, "ok": False, "reason": "x"}],
    }  # fmt: skip
    plain, red = table(summary), table(summary, color=True)
    assert "\x1b[" not in plain
    assert "generator w: loop lag p50 80 ms, p99 80 ms, cpu mean 50% over 19 s steady: " in plain
    assert "load generator SATURATED" in plain and "FAIL  mos.p5>3.5" in plain
    assert "\x1b[31mgenerator w:" in red and "\x1b[31m  FAIL  mos.p5>3.5" in red
