"""`ok` only when it is true: a `join` bot says per peer what happened, and fails (exit 1, one
line on stderr each) when a participant who was there never connected, lost its connection and
had not recovered by the end, or stopped sending it media."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import pytest
from conftest import Backend
from test_cli import connvo_agent
from test_room import room, until

from agent.media.sources import Outgoing
from agent.presence import Ledger, problems


def _join(backend: Backend, member, meeting_id: str, *extra: str) -> tuple[str, ...]:
    return (
        "join",
        *("--url", backend.url, "--token", member.token, "--meeting", meeting_id),
        *("--send", "audio,video", "--json"),
        *extra,
    )


def _summary(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


async def test_a_clean_meeting_is_ok_and_says_per_peer_what_happened(backend: Backend):
    meeting = await backend.meeting(2)
    async with room(meeting, 0, outgoing=Outgoing.synthetic()):
        code, out, err = await connvo_agent(
            *_join(backend, meeting[1], meeting.id, "--ice-address", "127.0.0.1"),
            "--duration",
            "4",
        )
    assert code == 0 and err.count("connvo-agent join:") == 0, err
    summary = _summary(out)
    (peer,) = summary["participants"]
    assert summary["ok"] is True
    assert (
        peer["userId"] == meeting[0].user_id and peer["connected"] and peer["state"] == "connected"
    )
    assert 0 < peer["connected_s"] <= summary["seconds"]
    assert peer["frames"] > 0 and peer["longest_media_gap_s"] < 2


@pytest.mark.slow
async def test_bots_that_can_never_reach_each_other_are_not_ok(backend: Backend):
    """One gathers on 127.0.0.1 only, the other on ::1 only: descriptions are exchanged, ICE
    has no pair to try, as for two hosts that each offer only their own loopback."""
    meeting = await backend.meeting(2)
    first, second = await asyncio.gather(
        connvo_agent(
            *_join(backend, meeting[0], meeting.id, "--ice-address", "127.0.0.1"), "--duration", "8"
        ),
        connvo_agent(
            *_join(backend, meeting[1], meeting.id, "--ice-address", "::1"), "--duration", "8"
        ),
    )
    for (code, out, err), other in ((first, meeting[1]), (second, meeting[0])):
        summary = _summary(out)
        assert code == 1 and summary["ok"] is False, (out, err)
        assert f"connvo-agent join: never connected to {other.user_id}" in err
        (peer,) = summary["participants"]
        assert peer["connected"] is False and peer["connected_s"] == 0
        assert peer["frames"] == 0 and peer["state"] != "connected"


@pytest.mark.slow
async def test_a_peer_killed_mid_meeting_makes_the_survivor_not_ok(backend: Backend):
    meeting = await backend.meeting(2)
    victim = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        *_join(backend, meeting[0], meeting.id, "--ice-address", "127.0.0.1"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        survivor = asyncio.create_task(
            connvo_agent(
                *_join(backend, meeting[1], meeting.id, "--ice-address", "127.0.0.1"),
                "--duration",
                "14",
            )
        )
        assert victim.stdout is not None
        async with asyncio.timeout(30):
            while b"participant joined" not in await victim.stdout.readline():
                pass
        await asyncio.sleep(2)  # media flows for a while
        victim.send_signal(signal.SIGKILL)  # no leave: its session stays active
        code, out, err = await survivor
    finally:
        if victim.returncode is None:
            victim.kill()
        await victim.wait()
    summary = _summary(out)
    assert code == 1 and summary["ok"] is False, err
    (peer,) = summary["participants"]
    assert peer["connected"] is True and peer["frames"] > 0
    assert peer["longest_media_gap_s"] > 5
    line = f"no media from {meeting[0].user_id}"
    assert line in err or f"lost the connection to {meeting[0].user_id}" in err, err


@pytest.mark.slow
async def test_a_peer_that_leaves_is_no_problem(backend: Backend):
    meeting = await backend.meeting(2)
    bot = asyncio.create_task(
        connvo_agent(
            *_join(backend, meeting[1], meeting.id, "--ice-address", "127.0.0.1"), "--duration", "8"
        )
    )
    async with room(meeting, 0, outgoing=Outgoing.synthetic()) as partner:
        await until(lambda: len(partner.connected_peers()) == 1, timeout=20)
        await asyncio.sleep(1)
    code, out, err = await bot
    summary = _summary(out)
    assert code == 0 and summary["ok"] is True, err
    (peer,) = summary["participants"]
    assert peer["connected"] is True and peer["state"] == "left"


def test_the_ledger_tells_who_was_there_and_what_became_of_them():
    ledger = Ledger()
    ledger.transition("stale", "no answer")  # a crashed client's session: never there
    ledger.transition("fine", "connecting")
    ledger.transition("fine", "connected")
    ledger.transition("gone", "connecting")
    ledger.transition("gone", "connected")
    ledger.dropped("gone", "left")
    ledger.transition("lost", "connecting")
    ledger.transition("lost", "connected")
    ledger.transition("lost", "failed")
    ledger.dropped("lost", "left")
    ledger.transition("never", "connecting")
    ledger.transition("never", "failed")
    by_user = {o.user_id: o for o in ledger.outcomes()}
    assert not by_user["stale"].there and by_user["stale"].problem is None
    assert by_user["fine"].problem is None and by_user["gone"].state == "left"
    assert by_user["gone"].problem is None and by_user["gone"].connected_s >= 0
    assert by_user["lost"].state == "failed, then left"
    assert problems(ledger.outcomes()) == [
        "lost the connection to lost (failed, then left) and it had not come back",
        "never connected to never (its connection ended failed)",
    ]
