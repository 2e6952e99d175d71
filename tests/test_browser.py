"""The meeting page in a real browser: Debian's Chromium (installed by scripts/setup.sh), driven
by Playwright, with fake camera and microphone, meeting real aiortc bots.

Peer traffic stays on loopback: Chromium gathers no loopback candidates of its own, so the page
is opened with `?ice=relay` and reaches the bots through a real coturn on 127.0.0.1 (the dev
backend hands its TURN server out in the room's iceServers); the bots gather on 127.0.0.1 only.
Chromium runs with its background networking off, so it sends nothing anywhere else.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from conftest import Backend, Meeting, answer_to_another_offer
from lanes import require_marker
from playwright.async_api import Browser, Page, async_playwright, expect

from agent.events import ChatMessage, ParticipantLeft
from agent.ice import IceOptions
from agent.media.sources import Outgoing
from agent.room import JoinRequest, Room
from signaling.devserver.store import Store

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(180),
    pytest.mark.asyncio(loop_scope="module"),  # the loop of the module's Chromium
]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
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


@pytest.fixture
def web(turn_backend: tuple[object, Backend]) -> Backend:
    """The session's dev backend whose rooms hand out a real coturn on loopback."""
    return turn_backend[1]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chromium() -> AsyncIterator[Browser]:
    """One Chromium (and Playwright driver) for the module; each test opens its own contexts."""
    require_marker("browser", "Chromium")
    if not Path(CHROMIUM).exists():
        raise RuntimeError("Chromium is not installed: run scripts/setup.sh")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        await browser.close()


@pytest_asyncio.fixture(loop_scope="module")
async def browser(chromium: Browser) -> AsyncIterator[Browser]:
    """The module's Chromium; the contexts a test opened (its tabs) are closed after it, as
    closing the browser did."""
    yield chromium
    for context in chromium.contexts:
        await context.close()


async def open_page(browser: Browser, web: Backend, member, path: str = "/") -> Page:
    """A page signed in as `member`."""
    context = await browser.new_context(viewport={"width": 1280, "height": 720})
    page = await context.new_page()
    page.requested = []  # every URL the page asked for, from the start
    context.on("request", lambda r: page.requested.append(r.url))
    page.on("console", lambda m: print(f"[page {m.type}] {m.text}") if m.type != "debug" else None)
    await page.goto(web.url + "/")
    await sign_in(page, member.name)
    await page.goto(web.url + path)
    return page


async def sign_in(page: Page, name: str) -> None:
    """Through the page's own endpoint, as its sign-in form does."""
    await page.evaluate(
        """async (name) => {
            const r = await fetch('/dev/signin', {
                method: 'POST',
                headers: {'Content-Type': 'application/json'},
                body: JSON.stringify({name}),
            });
            localStorage.setItem('connvo.session', JSON.stringify(await r.json()));
        }""",
        name,
    )


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


def quality_reports(web: Backend, meeting: Meeting, user_id: str) -> list[dict]:
    """What the dev backend stored from monitorConnectionQuality for `user_id`."""
    store = Store(web.server.data_dir / "connvo.sqlite3")
    try:
        with store.transaction() as tx:
            rows = tx.find("connectionMetrics", meetingId=meeting.id)
    finally:
        store.close()
    return [r for r in rows if r["userId"] == user_id]


def signals_to(web: Backend, meeting: Meeting, user_id: str) -> list[dict]:
    """The descriptions stored for `user_id`, handled or not."""
    store = Store(web.server.data_dir / "connvo.sqlite3")
    try:
        with store.transaction() as tx:
            rows = tx.find("webrtcSignals", meetingId=meeting.id, toUserId=user_id)
    finally:
        store.close()
    return [r for r in rows if r["type"] == "sdp"]


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
        await until(lambda: quality_reports(web, meeting, meeting[0].user_id))
        for report in quality_reports(web, meeting, meeting[0].user_id):
            stats = report["stats"]
            assert set(stats) == {"bitrate", "packetLoss", "latency", "jitter"}
            assert stats["bitrate"] > 10_000  # bits/s of audio and video
            assert 0 <= stats["packetLoss"] <= 100 and 0 <= stats["latency"] < 1000
        assert all(r.startswith((web.url, "data:", "blob:")) for r in page.requested)
        assert any(r.endswith("/web/meet.js") for r in page.requested)
        if page_first and os.environ.get("UPDATE_SCREENSHOT") == "1":
            await page.screenshot(path=SCREENSHOT)
    finally:
        for b in bots:
            await b.leave()
    await expect(page.locator("#grid .tile")).to_have_count(1, timeout=30_000)  # only "you"


async def meet_one_bot(browser, web, meeting, b: Room, page_first: bool) -> Page:
    """The page and the bot `b` in `meeting`, connected; the later one offered."""
    page = await join_page(browser, web, meeting) if page_first else None
    await b.join()
    page = page or await join_page(browser, web, meeting)
    await until(lambda: (p := page_peer(b, meeting)) is not None and p.state == "connected")
    assert page_peer(b, meeting).offerer == page_first
    return page


ORDERS = pytest.mark.parametrize("page_first", [True, False], ids=["page-first", "bot-first"])


@ORDERS
async def test_chat_off_shows_no_panel_and_opens_no_channel(web, browser, page_first):
    meeting = await web.meeting(2, chat=False, screenSharing=False)
    b = bot(meeting, 1)
    try:
        page = await meet_one_bot(browser, web, meeting, b, page_first)
        for hidden in ("#chat", "#chat-toggle", "#share"):
            await expect(page.locator(hidden)).to_be_hidden()
        assert page_peer(b, meeting).channel is None and page_peer(b, meeting).pc.sctp is None
        channels = await page.evaluate(
            "[...window.connvo.mesh.peers.values()].map(p => p.channel && p.channel.label)"
        )
        assert channels == [None]
        mlines = await page.evaluate(
            "[...window.connvo.mesh.peers.values()][0].pc.getTransceivers().length"
        )
        assert mlines == 2  # audio and camera: no screen m-line without screenSharing
    finally:
        await b.leave()


@ORDERS
async def test_screen_share_and_camera_off_reach_the_bots(web, browser, page_first):
    meeting = await web.meeting(2, screenSharing=True)
    b = bot(meeting, 1)
    try:
        page = await meet_one_bot(browser, web, meeting, b, page_first)
        peer = page_peer(b, meeting)
        await until(lambda: peer.frames_received("video") > 5)

        await page.get_by_role("button", name="Present screen").click()
        await expect(page.get_by_role("button", name="Stop presenting")).to_be_visible()
        await until(lambda: any(t.label == "screen" and t.frames_received > 3 for t in peer.tracks))

        await page.get_by_role("button", name="Camera off").click()
        await expect(page.locator(".tile.self")).to_have_class(re.compile(r"\boff\b"))
        camera = next(t for t in peer.tracks if t.label == "camera")
        await asyncio.sleep(1.0)  # frames already on their way
        stopped = camera.frames_received
        await asyncio.sleep(1.5)
        assert camera.frames_received == stopped
        await page.keyboard.press("Control+e")  # Meet's shortcut, as the button
        await expect(page.get_by_role("button", name="Camera off")).to_be_visible()
        await until(lambda: camera.frames_received > stopped + 5)
    finally:
        await b.leave()


async def test_leave_closes_the_session_and_a_rejoin_meets_the_bots_again(web, browser):
    meeting = await web.meeting(2)
    page = await join_page(browser, web, meeting)
    async with bot(meeting, 1) as b:
        inbox = b.events()
        await until(lambda: (p := page_peer(b, meeting)) is not None and p.state == "connected")
        first_session = page_peer(b, meeting).session_id

        await page.get_by_role("button", name="Leave").click()
        await expect(page.locator("#left-reason")).to_have_text("You left the meeting.")
        async with asyncio.timeout(15):
            async for event in inbox:
                if isinstance(event, ParticipantLeft) and event.user_id == meeting[0].user_id:
                    break
        sessions = await meeting.host.api.active_sessions(meeting.id)
        assert [s.userId for s in sessions] == [meeting[1].user_id]
        people = await meeting.host.api.meeting_participants(meeting.id)
        host = next(p for p in people if p.userId == meeting[0].user_id)
        assert host.presence == "left"

        await page.get_by_role("button", name="Rejoin").click()
        await expect(page.locator("#grid .tile[data-state='connected']")).to_have_count(1)
        await until(lambda: (p := page_peer(b, meeting)) is not None and p.state == "connected")
        assert page_peer(b, meeting).session_id != first_session


@pytest.mark.parametrize(
    "case, expected",
    [
        ("not started", "This meeting is not active"),
        ("full", "This meeting is full: it takes 2 participants"),
        ("getstream", "This meeting runs on GetStream"),
        ("not invited", "You are not a participant of this meeting"),
        ("no such meeting", "You are not a participant of this meeting"),
    ],
)
async def test_a_meeting_that_cannot_be_joined_says_why(web, browser, case, expected):
    overrides = {"full": {"maxParticipants": 2}, "getstream": {"provider": "getstream"}}
    meeting = await web.meeting(3, start=case != "not started", **overrides.get(case, {}))
    bots = [bot(meeting, 1), bot(meeting, 2)] if case == "full" else []
    for b in bots:
        await b.join()
    try:
        member, target = meeting[0], meeting.id
        if case == "not invited":
            member = web.member()
        elif case == "no such meeting":
            target = "mtg_" + "0" * 26
        page = await open_page(browser, web, member, f"/meet/{target}?ice=relay")
        if case in ("not started", "full", "getstream"):
            await page.get_by_role("button", name="Join now").click()
        await expect(page.locator("#error")).to_contain_text(expected)
        await expect(page.locator("#room")).to_be_hidden()
        active = await meeting.host.api.active_sessions(meeting.id)
        assert member.user_id not in {s.userId for s in active}  # refused: no session left
    finally:
        for b in bots:
            await b.leave()


async def test_sign_in_create_invite_and_join_from_the_list(web, browser):
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(web.url + "/")
    name = web.unique("person")
    await page.get_by_placeholder("Your name").fill(name)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#who")).to_have_text(f"Signed in as {name}")

    await page.get_by_placeholder("Title of a new meeting").fill("Design review")
    await page.get_by_role("button", name="Create and start").click()
    row = page.locator("#list tr", has_text="Design review")
    await expect(row.locator(".state")).to_have_text("active")
    guest = web.unique("bot")
    await row.get_by_placeholder("Invite by name").fill(guest)
    await row.get_by_role("button", name="Invite").click()
    await expect(row.locator(".count")).to_have_text("2")

    meeting_id = await row.get_attribute("data-meeting-id")
    token, guest_id = web.user(guest)
    people = await web.api(token).meeting_participants(meeting_id)
    assert guest_id in {p.userId for p in people}

    await row.get_by_role("link", name="Join").click()
    await expect(page).to_have_url(re.compile(rf"/meet/{meeting_id}$"))
    await expect(page.locator("#title")).to_have_text("Design review")


@pytest.mark.parametrize(
    "case, status",
    [
        ("a name", 200),
        ("markup in the name", 400),
        ("not JSON", 415),  # a form or plain-text POST from another site
        ("too large", 413),
        ("an admin", 403),
        ("a rebound host name", 403),  # DNS rebinding: a site whose name points here
    ],
)
async def test_sign_in_refuses_what_only_another_site_would_send(web, case, status):
    web.user("dev-admin", admin=True)
    body: dict = {"name": web.unique("person")}
    headers = {"Content-Type": "application/json"}
    if case == "markup in the name":
        body = {"name": "<img src=x onerror=alert(1)>"}
    elif case == "not JSON":
        headers = {"Content-Type": "text/plain"}
    elif case == "too large":
        body = {"name": "x" * 5000}
    elif case == "an admin":
        body = {"name": "dev-admin"}
    elif case == "a rebound host name":
        headers["Host"] = "attacker.example"
    async with httpx.AsyncClient(base_url=web.url, trust_env=False) as client:
        answer = await client.post("/dev/signin", json=body, headers=headers)
    assert answer.status_code == status, answer.text
    if status == 200:
        assert (await web.api(answer.json()["token"]).current_user()).workosUserId == body["name"]
    else:
        assert "token" not in answer.json() and answer.json()["error"]


async def test_a_hostile_participant_cannot_break_the_page(web, browser):
    """Junk signals and junk chat from other participants are dropped; the page goes on."""
    meeting = await web.meeting(3)
    page = await join_page(browser, web, meeting)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    hostile, target = meeting[1].api, meeting[0].user_id
    session = "f" * 32
    await hostile.create_session(meeting.id, session)
    m_line = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    junk_descriptions = [
        {"type": "offer", "sdp": "v=0\r\n" + m_line * 9},  # too many m-lines
        {"type": "offer", "sdp": "v=0\r\n" + m_line + "a=x" * 30_000},  # over 64 KiB
        {"type": "offer", "sdp": "v=0\r\n" + m_line + "a=garbage\r\n"},  # unparsable
        {"type": "answer", "sdp": "v=0\r\n" + m_line},  # an answer to nothing
        {"type": "pranswer", "sdp": "v=0\r\n" + m_line},
    ]
    for description in junk_descriptions:
        await hostile.send_description(meeting.id, session, description, target)
    for i in range(100):  # candidates for sessions that never offer, some oversized
        candidate = {"candidate": "candidate:" + "x" * (10 if i % 2 else 5000), "sdpMid": "0"}
        await hostile.send_candidate(meeting.id, f"{i:032x}", candidate, target)

    async with bot(meeting, 2) as b:
        await until(lambda: (p := page_peer(b, meeting)) is not None and p.state == "connected")
        await until(lambda: page_peer(b, meeting).chat_open)
        channel = page_peer(b, meeting).channel
        channel.send(b"\x00\x01binary")
        channel.send("not json")
        channel.send('{"type": "chat", "id": "1", "from": "x", "text": "' + "y" * 17_000 + '"}')
        spoofed = {"type": "chat", "id": "2", "from": meeting[1].user_id, "text": "who am I"}
        channel.send(json.dumps(spoofed))
        line = page.locator("#messages li", has_text="who am I")
        await expect(line).to_contain_text(meeting[2].name)  # the connection's user, not `from`
        await expect(page.locator("#messages li")).to_have_count(1)
        dropped = await page.evaluate(
            "[...window.connvo.mesh.peers.values()].map(p => p.chatDropped ?? 0)"
        )
        assert sum(dropped) == 3
    early = await page.evaluate("window.connvo.mesh.early.size")
    assert early <= 32
    assert errors == []


async def test_closing_the_tab_leaves_and_a_second_tab_replaces_the_first(web, browser):
    meeting = await web.meeting(2)
    async with bot(meeting, 1) as b:
        inbox = b.events()
        first = await join_page(browser, web, meeting)
        await until(lambda: (p := page_peer(b, meeting)) is not None and p.state == "connected")
        session = page_peer(b, meeting).session_id

        second = await join_page(browser, web, meeting)  # the same user, in another tab
        await expect(first.locator("#left-reason")).to_contain_text("from another tab")
        # the first tab's peer may be gone before the second's arrives: None meanwhile
        await until(lambda: (p := page_peer(b, meeting)) is not None and p.session_id != session)
        await until(lambda: page_peer(b, meeting).state == "connected")
        await expect(second.locator("#grid .tile[data-state='connected']")).to_have_count(1)

        await second.context.close()  # the tab goes away without Leave
        async with asyncio.timeout(10):
            async for event in inbox:
                if isinstance(event, ParticipantLeft) and event.user_id == meeting[0].user_id:
                    break
        assert [s.userId for s in await b.api.active_sessions(meeting.id)] == [b.user_id]


async def test_a_page_over_plain_http_from_elsewhere_joins_to_watch(web):
    """Opened by a name that is not loopback over http (as from another machine), the page is
    not a secure context: no camera or microphone, but it still joins, sees and hears. The name
    resolves to 127.0.0.1 inside Chromium, so nothing leaves the machine."""
    meeting = await web.meeting(2)
    port = web.url.rsplit(":", 1)[1]
    rules = "--host-resolver-rules=MAP meet.test 127.0.0.1"
    async with bot(meeting, 1) as b, async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=[*FLAGS, rules])
        page = await browser.new_page()
        await page.goto(f"http://meet.test:{port}/")
        assert not await page.evaluate("isSecureContext")
        await page.evaluate(  # /dev/signin answers addresses only: a token from here
            "(me) => localStorage.setItem('connvo.session', JSON.stringify(me))",
            {"token": meeting[0].token, "userId": meeting[0].user_id, "name": meeting[0].name},
        )
        await page.goto(f"http://meet.test:{port}/meet/{meeting.id}?ice=relay")
        await expect(page.locator("#lobby-note")).to_contain_text("only on a secure page")
        await page.get_by_role("button", name="Join now").click()
        await expect(page.locator("#grid .tile[data-state='connected']")).to_have_count(1)
        first = await frames_decoded(page)
        await asyncio.sleep(1.0)
        assert await frames_decoded(page) > first
        await until(lambda: page_peer(b, meeting) is not None)
        assert page_peer(b, meeting).frames_received("video") == 0
        await browser.close()


async def test_two_pages_meet_each_other(web, browser):
    """Page to page: trickled candidates and the empty end-of-candidates both ways."""
    meeting = await web.meeting(2)
    first = await join_page(browser, web, meeting, 0)
    second = await join_page(browser, web, meeting, 1)
    for page, other in ((first, meeting[1]), (second, meeting[0])):
        tile = page.locator("#grid .tile[data-state='connected']")
        await expect(tile).to_have_count(1, timeout=30_000)
        await expect(tile.locator(".name")).to_have_text(other.name)
    before = await frames_decoded(first), await frames_decoded(second)
    await asyncio.sleep(1.5)
    assert await frames_decoded(first) > before[0] > 0
    assert await frames_decoded(second) > before[1] > 0
    await second.locator("#chat-text").fill("page to page")
    await second.locator("#chat-form button").click()
    line = first.locator("#messages li", has_text="page to page")
    await expect(line).to_contain_text(meeting[1].name)


async def test_a_crashed_session_goes_stale_and_a_killed_bot_is_dropped(web, browser):
    """A session that never answers is given up after 10 s and offered to again only after a
    back-off; a bot killed without leaving is dropped once silent for 15 s (its session stays
    active)."""
    meeting = await web.meeting(3)
    crashed = "c" * 32
    await meeting[1].api.create_session(meeting.id, crashed)
    killed = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "agent", "join", "--url", web.url, "--meeting", meeting.id),
        *("--ice-address", "127.0.0.1", "--send", "audio,video", "--duration", "120"),
        env={**os.environ, "CONNVO_TOKEN": meeting[2].token},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(30):
            while meeting[2].user_id not in {
                s.userId for s in await meeting.host.api.active_sessions(meeting.id)
            }:
                await asyncio.sleep(0.2)
        page = await join_page(browser, web, meeting)  # the newest: it offers to both
        await expect(page.locator("#grid .tile[data-state='connected']")).to_have_count(1)
        await page.evaluate("window.connvo.mesh.staleRetry = 6000")  # 30 s by default
        stale = "(s) => window.connvo.mesh.stale.has(s)"
        await page.wait_for_function(stale, arg=crashed, timeout=15_000)
        mine = await page.evaluate("window.connvo.mesh.sessionId")

        def offers() -> int:
            return sum(s["sessionId"] == mine for s in signals_to(web, meeting, meeting[1].user_id))

        await asyncio.sleep(4)  # session lists come and go: no offer before the back-off
        assert offers() == 1
        await until(lambda: offers() == 2, timeout=10)  # then one more try, and only one
        await asyncio.sleep(3)
        assert offers() == 2

        killed.kill()  # no leave, no closeSession
        await expect(page.locator("#grid .tile")).to_have_count(1, timeout=30_000)  # only "you"
        active = await meeting.host.api.active_sessions(meeting.id)
        assert meeting[2].user_id in {s.userId for s in active}  # still listed: dead all the same
    finally:
        if killed.returncode is None:
            killed.kill()
        await killed.wait()


async def test_pages_carry_their_policy_and_serve_nothing_else(web):
    async with httpx.AsyncClient(base_url=web.url, trust_env=False) as client:
        for path in ("/", "/meet/mtg_x", "/web/meet.js", "/web/style.css"):
            answer = await client.get(path)
            assert answer.status_code == 200, path
            policy = answer.headers["content-security-policy"]
            assert "default-src 'self'" in policy and "form-action 'none'" in policy
        for path in ("/web/../pages.py", "/web/%2e%2e/pages.py", "/web/nothing.js"):
            assert (await client.get(path)).status_code == 404, path


async def test_an_answer_meant_for_another_tab_of_the_user_is_ignored(web, browser):
    """Answers are addressed to users: when two tabs of one user offer at once, each reads both
    answers. The one stored before this tab's offer is the other tab's (here: a real answer of
    aiortc to another offer, sent as the bot's), and must not be taken."""
    meeting = await web.meeting(2)
    async with bot(meeting, 1) as b:
        other_tab = await answer_to_another_offer()
        await b.api.send_description(meeting.id, b.session_id, other_tab, meeting[0].user_id)

        page = await join_page(browser, web, meeting)  # newer: it offers, then reads both
        await until(lambda: (p := page_peer(b, meeting)) is not None and p.state == "connected")
        await expect(page.locator("#grid .tile[data-state='connected']")).to_have_count(1)


async def test_without_devices_the_page_still_sends_audio_and_says_the_camera_is_off(web):
    """A page that may not open devices, meeting a bot that sends nothing (as a recorder):
    its silence keeps the connection alive both ways."""
    meeting = await web.meeting(2)
    flags = [f for f in FLAGS if f != "--use-fake-ui-for-media-stream"]
    async with (
        async_playwright() as p,
        Room(
            meeting[1].api.url,
            meeting[1].token,
            meeting.id,
            ice=IceOptions.loopback(),
            api=meeting[1].api,
        ) as b,
    ):
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=flags)
        page = await join_page(browser, web, meeting)
        await expect(page.locator("#cam")).to_have_text("Camera on")  # i.e. off now
        await until(lambda: (p := page_peer(b, meeting)) is not None and p.state == "connected")
        await until(lambda: page_peer(b, meeting).frames_received("audio") > 25)
        await browser.close()


async def test_the_page_says_when_the_server_is_gone_and_when_it_is_back(web, browser):
    meeting = await web.meeting(2)
    async with bot(meeting, 1) as b:
        page = await join_page(browser, web, meeting)
        await until(lambda: (p := page_peer(b, meeting)) is not None and p.state == "connected")
        web.server.stop()
        try:
            note = page.locator("#server-note")
            await expect(note).to_contain_text("cannot be reached", timeout=15_000)
            await expect(page.locator("#grid .tile[data-state='connected']")).to_have_count(1)
        finally:
            web.server.start()
        await expect(note).to_be_hidden(timeout=15_000)


async def test_a_camera_turned_off_while_it_opens_is_never_sent(web, browser):
    """Cameras take a while to open; a person who turned it off meanwhile sends nothing."""
    meeting = await web.meeting(2)
    context = await browser.new_context()
    await context.add_init_script(
        """const open = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
        navigator.mediaDevices.getUserMedia = async (c) => {
            await new Promise((r) => setTimeout(r, 1200));
            return open(c);
        };"""
    )
    page = await context.new_page()
    await page.goto(web.url + "/")
    await sign_in(page, meeting[0].name)
    await page.goto(f"{web.url}/meet/{meeting.id}?ice=relay")
    await page.get_by_role("button", name="Camera on").click()  # before it has opened
    await expect(page.get_by_role("button", name="Camera off")).to_be_visible()
    await page.get_by_role("button", name="Join now").click()
    async with bot(meeting, 1) as b:
        await until(lambda: (p := page_peer(b, meeting)) is not None and p.state == "connected")
        await until(lambda: page_peer(b, meeting).frames_received("audio") > 25)
        assert page_peer(b, meeting).frames_received("video") == 0
        for _ in range(4):  # on, off, on, off, faster than the camera opens
            await page.locator("#cam").click()
        await asyncio.sleep(3)
        await expect(page.locator("#cam")).to_have_text("Camera on")  # i.e. off now
        assert page_peer(b, meeting).frames_received("video") == 0
        assert await page.evaluate("window.connvo.mesh.media.camera === null")
        await page.locator("#cam").click()  # and on for good: it is sent
        await until(lambda: page_peer(b, meeting).frames_received("video") > 5)
