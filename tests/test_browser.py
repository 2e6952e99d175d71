"""The meeting page in a real browser: Debian's Chromium (installed by scripts/setup.sh), driven
by Playwright, with fake camera and microphone, meeting real aiortc bots.

Peer traffic stays on loopback: Chromium gathers no loopback candidates of its own, so the page
is opened with `?ice=relay` and reaches the bots through a real coturn on 127.0.0.1 (the dev
backend hands its TURN server out in the room's iceServers); the bots gather on 127.0.0.1 only.
Chromium runs with its background networking off, so it sends nothing anywhere else.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from conftest import Backend, Meeting
from playwright.async_api import Browser, Page, async_playwright, expect
from turnserver import coturn

from agent.events import ChatMessage
from agent.ice import IceOptions
from agent.media.sources import Outgoing
from agent.room import JoinRequest, Room
from signaling.devserver import DevServer

pytestmark = pytest.mark.timeout(180)

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-features=WebRtcHideLocalIpsWithMdns,MediaRouter",
]
SCREENSHOT = Path(__file__).parent.parent / "docs" / "meeting-page.png"
"""Taken again by the page-first test when UPDATE_SCREENSHOT=1."""


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """A dev backend whose rooms hand out a real coturn on loopback."""
    if shutil.which("chromium") is None:
        raise RuntimeError("Chromium is not installed: run scripts/setup.sh")
    workdir = tmp_path_factory.mktemp("browser")
    with (
        coturn(workdir) as turn,
        DevServer(
            workdir / "data",
            turn_url=turn.url,
            turn_username=turn.username,
            turn_credential=turn.credential,
        ) as server,
    ):
        yield Backend(server)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        await browser.close()


async def open_page(browser: Browser, web: Backend, member, path: str = "/") -> Page:
    """A page signed in as `member` (through the page's own sign-in endpoint)."""
    context = await browser.new_context(viewport={"width": 1280, "height": 720})
    page = await context.new_page()
    page.on("console", lambda m: print(f"[page {m.type}] {m.text}") if m.type != "debug" else None)
    await page.goto(web.url + "/")
    await page.evaluate(
        """async (name) => {
            const r = await fetch('/dev/signin', {method: 'POST', body: JSON.stringify({name})});
            localStorage.setItem('connvo.session', JSON.stringify(await r.json()));
        }""",
        member.name,
    )
    await page.goto(web.url + path)
    return page


async def join_page(browser: Browser, web: Backend, meeting: Meeting, index: int = 0) -> Page:
    page = await open_page(browser, web, meeting[index], f"/meet/{meeting.id}?ice=relay")
    await page.get_by_role("button", name="Join now").click()
    await expect(page.locator("#room")).to_be_visible()
    return page


def bot(meeting: Meeting, index: int) -> Room:
    member = meeting[index]
    return Room(
        member.api.url,
        member.token,
        meeting.id,
        request=JoinRequest(outgoing=Outgoing.synthetic(audio=True, video=True)),
        ice=IceOptions.loopback(),
        api=member.api,
    )


async def until(condition, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.1)


async def frames_decoded(page: Page) -> int:
    return await page.evaluate(
        """async () => {
            let n = 0;
            for (const peer of window.connvo.mesh.peers.values()) {
                if (!peer.pc) continue;
                (await peer.pc.getStats()).forEach(s => {
                    if (s.type === 'inbound-rtp' && s.kind === 'video') n += s.framesDecoded ?? 0;
                });
            }
            return n;
        }"""
    )


def page_peer(room: Room, meeting: Meeting):
    return room.peers.get(meeting[0].user_id)


async def next_chat(inbox) -> ChatMessage:
    async with asyncio.timeout(15):
        async for event in inbox:
            if isinstance(event, ChatMessage):
                return event
    raise AssertionError("no chat")


@pytest.mark.parametrize("page_first", [True, False], ids=["page-first", "bots-first"])
async def test_page_and_two_bots_meet_chat_and_exchange_media(web, browser, page_first):
    meeting = await web.meeting(3, title="Standup with bots")
    bots = [bot(meeting, 1), bot(meeting, 2)]
    inboxes = [b.events() for b in bots]
    page = None
    if page_first:
        page = await join_page(browser, web, meeting)
    for b in bots:
        await b.join()
    try:
        page = page or await join_page(browser, web, meeting)
        tiles = page.locator("#grid .tile[data-state='connected']")
        await expect(tiles).to_have_count(2, timeout=30_000)
        for member in meeting.guests:
            await expect(page.locator("#grid .tile .name", has_text=member.name)).to_be_visible()

        # the browser decodes the bots' video; the bots receive the page's audio and video
        first = await frames_decoded(page)
        await until(lambda: all(page_peer(b, meeting) for b in bots))
        await asyncio.sleep(1.5)
        assert await frames_decoded(page) > first > 0
        for b in bots:
            peer = page_peer(b, meeting)
            await until(lambda p=peer: p.frames_received("audio") > 10)
            await until(lambda p=peer: p.frames_received("video") > 5)

        # chat both ways, with the sender told by the connection
        await page.locator("#chat-text").fill("hello bots")
        await page.locator("#chat-form button").click()
        for inbox in inboxes:
            message = await next_chat(inbox)
            assert (message.text, message.sender) == ("hello bots", meeting[0].user_id)
        await bots[0].send_chat("hello page")
        line = page.locator("#messages li", has_text="hello page")
        await expect(line).to_contain_text(meeting[1].name)

        # the page reports its quality, as the bots do
        stats = page.locator("#grid .tile:not(.self) .stats").first
        await expect(stats).to_contain_text("RTT", timeout=15_000)
        if page_first and os.environ.get("UPDATE_SCREENSHOT") == "1":
            await page.screenshot(path=SCREENSHOT)
    finally:
        for b in bots:
            await b.leave()
    await expect(page.locator("#grid .tile")).to_have_count(1, timeout=30_000)  # only "you"
