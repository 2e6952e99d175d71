"""One load bot (agent/load/loadbot.py) against a real dev backend and a real participant process:
what its record says of a peer that dies mid-stay, and of one that comes back."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from agent.load.backend import CallLog
from agent.load.config import BotSpec, LoadConfig, MeetingPlan
from agent.load.http import LoadHTTP
from agent.load.loadbot import BotRecord, LoadBot, MeetingState

pytestmark = pytest.mark.slow  # each stays 8 or 12 s to see a peer die (and come back)


async def participant(backend, meeting) -> asyncio.subprocess.Process:
    """meeting[1], sending audio and video from its own process."""
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "agent", "join", "--url", backend.url, "--meeting", meeting.id),
        *("--token", meeting[1].token, "--ice-address", "127.0.0.1", "--poll-fast", "0.05"),
        *("--send", "audio,video", "--duration", "60"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


@asynccontextmanager
async def load_bot(
    backend, meeting, duration: float
) -> AsyncIterator[tuple[LoadBot, asyncio.Task]]:
    """meeting[0] as a load bot staying `duration` s (a silent peer is dropped after 2 s), once
    connected; the task answers its record."""
    config = LoadConfig(meetings=1, participants=2, media="av", duration=duration, chat=False)
    spec = BotSpec(0, 0, meeting[0].token, 0.0)
    plan = MeetingPlan(0, meeting.id, backend.url, (spec, BotSpec(1, 0, "", 0.0)))
    http = LoadHTTP(None)
    bot = LoadBot(spec, MeetingState(plan), config, "test", http, CallLog())
    bot.room.settings = dataclasses.replace(bot.room.settings, dead_after=2, quality_interval=0.5)
    try:
        run = asyncio.create_task(bot.run(time.time()))
        async with asyncio.timeout(30):
            while not bot.record.ok:
                await asyncio.sleep(0.1)
        yield bot, run
    finally:
        await http.aclose()


async def stopped(*peers: asyncio.subprocess.Process) -> None:
    for peer in peers:
        if peer.returncode is None:
            peer.kill()
        await peer.wait()


async def test_the_video_of_a_peer_dropped_as_unreachable_is_frozen_to_the_end(backend):
    meeting = await backend.meeting(2)
    peer = await participant(backend, meeting)
    try:
        async with load_bot(backend, meeting, 8) as (bot, run):
            await asyncio.sleep(1)
            peer.kill()  # no leave, no closeSession: the bot drops it when it has been silent 2 s
            record: BotRecord = await asyncio.wait_for(run, 30)
    finally:
        await stopped(peer)
    assert meeting[1].user_id not in bot.room.peers
    video = record.streams[meeting[1].user_id]["video"]
    assert video["freeze_count"] >= 1
    assert 5 < video["freeze_time_s"] <= 8  # from its death (a second into the stay) to the end
    assert video["freeze_ratio"] > 0.5
    assert not record.ok  # a peer that died and never came back: not a success
    assert (record.failure_phase, record.failure_code) == ("in_meeting", "PEER_LOST")
    assert meeting[1].user_id in (record.failure_message or "")


async def test_a_peer_that_comes_back_was_frozen_only_while_it_was_gone(backend):
    meeting = await backend.meeting(2)
    peers = [await participant(backend, meeting)]
    try:
        async with load_bot(backend, meeting, 12) as (bot, run):
            await asyncio.sleep(1)
            peers[0].kill()  # dropped as unreachable 2 s later, then it comes back
            async with asyncio.timeout(15):
                while meeting[1].user_id in bot.room.peers:
                    await asyncio.sleep(0.1)
            peers.append(await participant(backend, meeting))
            record: BotRecord = await asyncio.wait_for(run, 40)
    finally:
        await stopped(*peers)
    videos = {k: v for k, v in record.streams[meeting[1].user_id].items() if k.startswith("video")}
    assert len(videos) == 2  # the one before and the one after
    before = videos["video"]
    assert before["freeze_count"] == 1
    assert 2 <= before["freeze_time_s"] < 8  # from its death to its return, not to the end
    assert sum(v["watched_s"] for v in videos.values()) <= 12.5  # no time counted twice
    assert record.ok, record.failure_message  # it came back: the meeting held
