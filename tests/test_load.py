"""Load tests of the load tester: real dev backends, real bots on loopback, small loads.

Timings are never asserted tightly: the machine is shared with other test runs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.load.config import LoadConfig
from agent.load.distributed import RayMissing
from agent.load.metrics import exit_code
from agent.load.report import write
from agent.load.runner import run_load


def connvo_agent(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_a_few_meetings_succeed_and_the_report_holds_every_bot(tmp_path: Path):
    # The embedded dev backend, two worker processes, audio and video through the shared
    # encoders and counting receivers; passing thresholds (one run for what test_load_health's
    # summary test asked of its own).
    done = connvo_agent(
        "load", "--meetings", "2", "--participants", "3", "--duration", "3", "--media", "av",
        "--workers", "2", "--threshold", "connected.p95<100000", "--threshold", "success_rate>=99",
        "--report", str(tmp_path), "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["bots"] == 6 and summary["success_rate"] == 100.0
    assert summary["load_generator"]["workers"] == 2
    # each worker's health, and the thresholds passed
    generator = summary["generator"]
    assert generator["saturated"] is False and len(generator["workers"]) == 2
    for worker in generator["workers"].values():
        assert set(worker) == {"loop_lag_ms", "cpu_percent_mean", "steady_s", "saturated"}
        assert 0 <= worker["loop_lag_ms"]["p50"] <= worker["loop_lag_ms"]["p99"]
        assert worker["cpu_percent_mean"] > 0
    assert [t["ok"] for t in summary["thresholds"]] == [True, True]
    assert "generator " in done.stderr and "healthy" in done.stderr
    assert "\x1b[" not in done.stderr  # not a terminal: no colour
    assert "alarm" not in (tmp_path / "report.html").read_text().split("<body>")[1]
    bots = json.loads((tmp_path / "bots.json").read_text())
    assert sorted(b["bot"] for b in bots) == list(range(6))
    for bot in bots:
        assert bot["ok"] and bot["peers_connected"] == 2
        assert {"connected", "chat_open", "first_audio", "first_video"} <= set(bot["phases"])
        assert bot["audio_frames"] > 0 and bot["video_bytes"] > 0
    with (tmp_path / "bots.csv").open() as rows:
        assert len(list(csv.DictReader(rows))) == 6
    page = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in page and "connected" in page
    assert (tmp_path / "usage.csv").stat().st_size > 0


@pytest.mark.slow
def test_an_unreachable_ice_path_fails_that_bot_in_the_ice_phase(tmp_path: Path):
    # Bot 3 may use TURN relays only, and the room has none: it gathers no candidate at all.
    config = LoadConfig(
        meetings=2, participants=2, duration=0.5, join_timeout=6, relay_only_bots=frozenset({3})
    )
    result = run_load(config, workers=0, quiet=True)
    records = {r.bot: r for r in result.records}
    broken = records[3]
    assert not broken.ok
    assert (broken.failure_phase, broken.failure_code) == ("ice_connected", "TIMEOUT")
    assert records[0].ok and records[1].ok  # the other meeting is untouched
    assert not records[2].ok  # its only peer is unreachable
    assert result.summary["success_rate"] < 100
    assert exit_code(result.summary, 100) == 1 and exit_code(result.summary, 50) == 0
    write(result, tmp_path)
    failed = [b for b in json.loads((tmp_path / "bots.json").read_text()) if not b["ok"]]
    assert {b["bot"] for b in failed} == {2, 3}


@pytest.mark.slow
def test_a_bad_token_fails_its_bot_when_joining_and_the_run_exits_non_zero(backend, tmp_path):
    # The --url / --tokens path, with the session's dev backend standing in for a deployment.
    host, _ = backend.user(backend.unique("load-host"))
    tokens = [backend.user(backend.unique("load-bot"))[0] for _ in range(3)]
    tokens.insert(1, tokens[0][:-4] + "AAAA")  # bot 1: a token whose signature does not match
    (tmp_path / "tokens").write_text("\n".join(tokens) + "\n")
    done = connvo_agent(
        "load", "--url", backend.url, "--host-token", host, "--tokens", str(tmp_path / "tokens"),
        "--meetings", "2", "--participants", "2", "--duration", "0.5", "--workers", "0",
        "--report", str(tmp_path / "report"), "--json",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["failures"] == {"room_initialized:UNAUTHORIZED": 1}
    bots = {b["bot"]: b for b in json.loads((tmp_path / "report" / "bots.json").read_text())}
    assert (bots[1]["failure_phase"], bots[1]["failure_code"]) == (
        "room_initialized",
        "UNAUTHORIZED",
    )
    assert bots[0]["ok"] and bots[2]["ok"] and bots[3]["ok"]
    written = "".join(f.read_text() for f in (tmp_path / "report").iterdir())
    for token in [host, *tokens]:
        assert token not in done.stdout + done.stderr + written


def test_ray_missing_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(RayMissing, match=r"pip install 'connvo-agent\[ray\]'"):
        run_load(LoadConfig(meetings=1, participants=1, duration=0), ray="auto", quiet=True)


@pytest.mark.ray
def test_a_load_on_a_local_ray_instance_merges_both_actors_records(tmp_path: Path):
    config = LoadConfig(meetings=2, participants=2, duration=1, media="audio")
    result = run_load(config, ray="local", workers=2, quiet=True)
    assert [r.bot for r in result.records] == [0, 1, 2, 3]
    assert all(r.ok for r in result.records), [r.failure_code for r in result.records]
    assert len({r.worker for r in result.records}) == 2
    assert result.summary["load_generator"]["workers"] == 2
    health = result.summary["generator"]["workers"]  # the actors' loop lag came back too
    assert set(health) == {r.worker for r in result.records}
    assert all(w["loop_lag_ms"]["p99"] > 0 for w in health.values())
    write(result, tmp_path)
    assert len(json.loads((tmp_path / "bots.json").read_text())) == 4
