"""A burst of chat between the meeting page (real Chromium, through coturn) and a bot (issue 18):
2,000 small messages sent in one go, either way, while media flows. The receiver takes what its
chat budget allows and counts the rest dropped; both connections stay `connected` throughout,
and media goes on both ways afterwards."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from test_browser import (  # noqa: F401  (fixtures)
    bot,
    browser,
    chromium,
    frames_decoded,
    join_page,
    page_peer,
    until,
    web,
)

from agent.chat import Budget
from agent.events import ChatMessage
from agent.peer import Peer
from agent.room import Room
from signaling.convention import CHAT_BURST, CHAT_RATE

pytestmark = [
    pytest.mark.browser,
    pytest.mark.turn,
    pytest.mark.timeout(180),
    pytest.mark.asyncio(loop_scope="module"),  # the loop of the module's Chromium
]

BURST = 2000

WATCH = """() => {
    const peer = [...window.connvo.mesh.peers.values()][0];
    const watched = (window.burst = {peer, pc: peer.pc, changes: [], received: 0});
    const {pc} = peer;
    const note = () => watched.changes.push(`${pc.connectionState}/${pc.iceConnectionState}`);
    peer.pc.addEventListener("connectionstatechange", note);
    peer.pc.addEventListener("iceconnectionstatechange", note);
    window.connvo.mesh.addEventListener("chat", () => watched.received++);
}"""
WATCHED = """() => {
    const {peer, pc, changes, received} = window.burst;
    return {same: peer.pc === pc && window.connvo.mesh.peers.get(peer.userId) === peer,
            state: pc.connectionState, changes, received, dropped: peer.chatDropped};
}"""
SEND = """(n) => {
    const {peer} = window.burst;
    const from = window.connvo.mesh.me.userId;
    for (let i = 0; i < n; i++) {
        const message = {type: "chat", id: `b${i}`, from, text: `m${i}`, ts: Date.now()};
        peer.channel.send(JSON.stringify(message));
    }
}"""


class Watched:
    """The bot's side of the connection from now on: every state it goes through."""

    def __init__(self, peer: Peer) -> None:
        assert peer.pc is not None
        self.peer, self.pc, self.changes = peer, peer.pc, []
        for event in ("connectionstatechange", "iceconnectionstatechange"):
            self.pc.on(event, self._note)

    def _note(self) -> None:
        self.changes.append(f"{self.pc.connectionState}/{self.pc.iceConnectionState}")

    def stayed(self) -> bool:
        """Connected once: never left `connected`, never replaced (no restart hides a break)."""
        return self.peer.pc is self.pc and self.peer.state == "connected" and not self.changes


@asynccontextmanager
async def meeting_with_media(web, browser) -> AsyncIterator[tuple]:  # noqa: F811
    """The page and a bot, connected, chat open and media flowing both ways; watched."""
    meeting = await web.meeting(2)
    page = await join_page(browser, web, meeting)
    async with bot(meeting, 1) as b:
        await until(lambda: (p := page_peer(b, meeting)) is not None and p.chat_open)
        peer = page_peer(b, meeting)
        await until(lambda: peer.frames_received("video") > 5)
        await page.wait_for_function(
            "() => window.connvo.mesh.peers.values().next().value?.channel?.readyState === 'open'"
        )
        assert await frames_decoded(page) > 0
        await page.evaluate(WATCH)
        yield page, b, Watched(peer)


async def echo(room: Room, inbox: AsyncIterator) -> None:
    """What `connvo-agent join --echo` does: each message taken goes back."""
    async for event in inbox:
        if isinstance(event, ChatMessage):
            await room.send_chat("echo: " + event.text)


async def page_side(page) -> dict:
    return await page.evaluate(WATCHED)


async def drained(count, total: int, started: float) -> float:
    """Seconds from `started` until `count()` (taken + dropped) reaches `total`."""
    async with asyncio.timeout(60):
        while await count() < total:
            await asyncio.sleep(0.1)
    return time.monotonic() - started


def within_budget(taken: int, seconds: float) -> bool:
    return min(BURST, CHAT_BURST) <= taken <= CHAT_BURST + CHAT_RATE * seconds + 1


async def media_goes_on(page, peer: Peer) -> None:
    """Both ways: the page decodes more of the bot's video, the bot gets more of the page's."""
    decoded = await frames_decoded(page)
    audio, video = peer.frames_received("audio"), peer.frames_received("video")
    await until(lambda: peer.frames_received("audio") > audio + 25, timeout=15)
    await until(lambda: peer.frames_received("video") > video + 5, timeout=15)
    assert await frames_decoded(page) > decoded + 5


async def connected_once(page, watched: Watched) -> None:
    side = await page_side(page)
    assert watched.stayed(), watched.changes
    assert side["same"] and side["state"] == "connected" and side["changes"] == [], side


async def test_a_burst_from_the_page_costs_no_connection_and_no_media(web, browser):  # noqa: F811
    async with meeting_with_media(web, browser) as (page, b, watched):
        peer = watched.peer
        echoing = asyncio.create_task(echo(b, b.events()))
        started = time.monotonic()
        await page.evaluate(SEND, BURST)

        async def taken() -> int:
            return peer.chat_received + peer.chat_dropped

        seconds = await drained(taken, BURST, started)
        print(f"bot took {peer.chat_received}, dropped {peer.chat_dropped} in {seconds:.1f} s")

        async def echoed() -> int:
            side = await page_side(page)
            return side["received"] + side["dropped"]

        await drained(echoed, peer.chat_sent, started)  # every echo reached the page
        await media_goes_on(page, peer)
        echoing.cancel()
        await connected_once(page, watched)
        assert within_budget(peer.chat_received, seconds)


async def test_a_burst_from_a_bot_costs_no_connection_and_no_media(web, browser):  # noqa: F811
    async with meeting_with_media(web, browser) as (page, b, watched):
        started = time.monotonic()
        for i in range(BURST):
            await b.send_chat(f"m{i}")
        assert watched.peer.chat_sent == BURST

        async def taken() -> int:
            side = await page_side(page)
            return side["received"] + side["dropped"]

        seconds = await drained(taken, BURST, started)
        side = await page_side(page)
        print(f"page took {side['received']}, dropped {side['dropped']} in {seconds:.1f} s")
        await media_goes_on(page, watched.peer)
        await connected_once(page, watched)
        assert within_budget(side["received"], seconds)


def test_the_budget_takes_a_burst_then_its_rate(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    budget = Budget()
    assert sum(budget.take() for _ in range(2 * CHAT_BURST)) == CHAT_BURST
    clock[0] += 1.0
    assert sum(budget.take() for _ in range(2 * CHAT_BURST)) == CHAT_RATE
    clock[0] += 3600.0  # a quiet hour refills it to the burst, no further
    assert sum(budget.take() for _ in range(2 * CHAT_BURST)) == CHAT_BURST
