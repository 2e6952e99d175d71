"""One load bot (agent/load/bot.py) against a real dev backend and a real participant process:
what its record says of a peer that dies mid-stay."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time

from agent.load.bot import LoadBot, MeetingState
from agent.load.config import BotSpec, LoadConfig, MeetingPlan
from agent.load.http import LoadHTTP


async def test_the_video_of_a_peer_dropped_as_unreachable_is_frozen_to_the_end(backend):
    meeting = await backend.meeting(2)
    peer = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "agent", "join", "--url", backend.url, "--meeting", meeting.id),
        *("--token", meeting[1].token, "--ice-address", "127.0.0.1", "--poll-fast", "0.05"),
        *("--send", "audio,video", "--duration", "60"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    config = LoadConfig(meetings=1, participants=2, media="av", duration=8, chat=False)
    spec = BotSpec(0, 0, meeting[0].token, 0.0)
    plan = MeetingPlan(0, meeting.id, backend.url, (spec, BotSpec(1, 0, "", 0.0)))
    http = LoadHTTP(None)
    bot = LoadBot(spec, MeetingState(plan), config, "test", http)
    bot.room.settings = dataclasses.replace(bot.room.settings, dead_after=2, quality_interval=0.5)
    try:
        run = asyncio.create_task(bot.run(time.time()))
        async with asyncio.timeout(30):
            while not bot.record.ok:
                await asyncio.sleep(0.1)
        await asyncio.sleep(1)
        peer.kill()  # no leave, no closeSession: the bot drops it when it has been silent 2 s
        record = await asyncio.wait_for(run, 30)
    finally:
        if peer.returncode is None:
            peer.kill()
        await peer.wait()
        await http.aclose()
    assert meeting[1].user_id not in bot.room.peers
    video = record.streams[meeting[1].user_id]["video"]
    assert video["freeze_count"] >= 1
    assert 5 < video["freeze_time_s"] <= 8  # from its death (a second into the stay) to the end
    assert video["freeze_ratio"] > 0.5
