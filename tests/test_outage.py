"""A network outage between two participants longer than dead_after + answer_timeout: both
bots reach each other only through a real coturn (the session's, tests/conftest.py), which is
frozen (SIGSTOP) for the outage."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from conftest import Backend
from test_room import FAST, connected_to, until
from turnserver import Turn

from agent.events import ParticipantJoined, ParticipantLeft
from agent.ice import IceOptions
from agent.media.sources import Outgoing
from agent.room import JoinRequest, Room, RoomSettings

SHORT = RoomSettings(
    poll=FAST.poll,
    discovery_interval=0.5,
    quality_interval=0.5,
    dead_after=3,
    answer_timeout=2,
    stale_retry=2,
)
OUTAGE = 20.0
"""Long enough for the offerer's offer during the outage to go unanswered: after dead_after, the
dropped connection takes up to 5 s to close and a new one 5 s to give up gathering relay
candidates from the frozen TURN server, then answer_timeout."""


@pytest.mark.slow
async def test_two_bots_cut_off_for_longer_than_dead_after_reconnect(
    turn_backend: tuple[Turn, Backend],
):
    turn, backend = turn_backend
    meeting = await backend.meeting(2)
    relay = IceOptions(addresses=("127.0.0.1",), policy="relay")
    a, b = (
        Room(
            backend.url,
            m.token,
            meeting.id,
            request=JoinRequest(outgoing=Outgoing.synthetic(audio=True, video=False)),
            ice=relay,
            settings=SHORT,
            api=m.api,
        )
        for m in meeting.members
    )
    seen: list[tuple[str, str, str]] = []

    async def watch(r: Room) -> None:
        async for e in r.events():
            if isinstance(e, ParticipantJoined | ParticipantLeft):
                seen.append((r.user_id or "?", type(e).__name__, e.session_id))

    watchers = [asyncio.create_task(watch(r)) for r in (a, b)]
    await asyncio.sleep(0)  # subscribed before the join
    async with a, b:
        both = lambda: connected_to(a, [b]) and connected_to(b, [a])  # noqa: E731
        await until(both, timeout=20)
        os.kill(turn.pid, signal.SIGSTOP)
        cut = time.monotonic()
        try:
            # b joined last, so b offers; its offer goes unanswered: a is stale to it
            await until(lambda: b._mesh.is_stale(a.session_id), timeout=OUTAGE)
            stale_after = time.monotonic() - cut
            await asyncio.sleep(OUTAGE - stale_after)
            assert not both()
        finally:
            os.kill(turn.pid, signal.SIGCONT)
        back = time.monotonic()
        await until(both, timeout=30)
        took = time.monotonic() - back
        events = list(seen)
        assert not b._mesh.is_stale(a.session_id)  # the connection forgot it
    for w in watchers:
        w.cancel()
    print(f"stale {stale_after:.1f} s into the outage, reconnected {took:.1f} s after it")
    left = [s for s in events if s[1] == "ParticipantLeft"]
    assert {s[0] for s in left} == {a.user_id, b.user_id}  # both saw the other go
    assert events[-1][1] == "ParticipantJoined"
    assert took < 2 * SHORT.stale_retry + SHORT.answer_timeout + 2 * SHORT.quality_interval + 5
