"""`connvo-agent` as a user runs it: real processes, real backend, loopback ICE."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from conftest import Backend
from test_room import room

from agent.bot import BotOptions
from agent.media.sources import Outgoing
from agent.room import JoinTarget
from agent.workers.recorder import RecordOptions
from agent.workers.transcriber import TranscriberOptions


async def connvo_agent(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    return process.returncode, out.decode(), err.decode()


async def test_join_prints_events_and_ends_with_a_json_summary(backend: Backend):
    meeting = await backend.meeting(2)
    partner = room(meeting, 0, outgoing=Outgoing.synthetic())
    async with partner:
        code, out, err = await connvo_agent(
            "join",
            "--url",
            backend.url,
            "--token",
            meeting[1].token,
            "--meeting",
            meeting.id,
            "--send",
            "audio,video",
            "--chat",
            "hello from the cli",
            "--duration",
            "4",
            "--ice-address",
            "127.0.0.1",
            "--poll-fast",
            "0.05",
            "--json",
        )
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["userId"] == meeting[1].user_id
    assert summary["peers"] == [meeting[0].user_id]
    assert summary["chat_sent"] == 1
    assert summary["audio_frames_received"] > 0 and summary["video_frames_received"] > 0
    assert summary["join_ms"] > 0
    assert f"participant joined: {meeting[0].user_id}" in out
    assert meeting[1].token not in out + err


async def test_bad_token_is_one_clear_line_and_exit_code_2(backend: Backend):
    meeting = await backend.meeting(1)
    code, out, err = await connvo_agent(
        "join",
        "--url",
        backend.url,
        "--token",
        "secret-but-wrong",
        "--meeting",
        meeting.id,
    )
    assert code == 2
    assert err.startswith("connvo-agent: ") and "UNAUTHORIZED" in err
    assert "Traceback" not in err and "secret-but-wrong" not in err + out


async def test_unreachable_backend_is_one_clear_line(backend: Backend):
    code, _, err = await connvo_agent(
        "join",
        "--url",
        "http://127.0.0.1:9",
        "--token",
        "t",
        "--meeting",
        "m",
    )
    assert code == 2 and "cannot connect" in err and "Traceback" not in err


async def test_demo_json_reports_every_bot_ok():
    code, out, err = await connvo_agent("demo", "--participants", "3", "--duration", "2", "--json")
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["ok"] is True and report["meetingId"]
    assert len(report["participants"]) == 3
    for bot in report["participants"]:
        assert set(bot) == {
            "userId",
            "peers_connected",
            "chat_sent",
            "chat_received",
            "audio_frames_received",
            "video_frames_received",
            "join_ms",
        }
        assert bot["peers_connected"] == 2 and bot["chat_received"] == 2


def test_options_never_show_their_token():
    target = JoinTarget("http://x", "tok-secret", "m")
    for options in (
        BotOptions(target),
        TranscriberOptions(target),
        RecordOptions(target, out=Path("out")),
    ):
        assert "tok-secret" not in repr(options)
