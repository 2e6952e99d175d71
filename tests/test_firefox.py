"""The meeting page in Firefox meeting real aiortc bots: Debian's firefox-esr, headless, driven
through Marionette (tests/firefox.py), with fake camera and microphone. Firefox's WebRTC is
another implementation than Chromium's (its own ICE, NSS DTLS, usrsctp for data channels).

Firefox gathers candidates on every interface it sees, so the whole meeting (the dev backend,
Firefox, and the bots of this process) lives in a network namespace of the test's own whose
only interface is `lo` (tests/netns.py; root only, as CI runs): the page and the bots meet on
host candidates over that loopback, no relay, and nothing can leave it. Each test ends by
reading the namespace's counters.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from conftest import Backend, Meeting, Member
from firefox import Firefox
from netns import Namespace
from test_browser import bot, next_chat, page_peer, until  # the same bots and waits

from agent.room import Room
from signaling.convention import CHAT_BURST
from signaling.devserver import DevServer
from signaling.devserver.store import Store

pytestmark = [pytest.mark.browser, pytest.mark.netns, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def namespace() -> Iterator[Namespace]:
    """Entered by this thread for the module: what it starts and connects lives there."""
    with Namespace.made(f"connvo-ff-{os.getpid()}") as ns, ns.entered():
        yield ns


@pytest.fixture(scope="module")
def web(namespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """A dev backend inside the namespace; its rooms hand out no ICE servers."""
    with DevServer(tmp_path_factory.mktemp("firefox-backend")) as server:
        yield Backend(server)


@pytest.fixture(scope="module")
def firefox(web, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Firefox]:
    with Firefox.started(tmp_path_factory.mktemp("firefox"), origin=web.url) as browser:
        yield browser


@pytest.fixture(autouse=True)
def loopback_only(namespace) -> Iterator[None]:
    """After each test: the namespace has `lo` alone, it carried the meeting, and nothing in
    it (Firefox's background calls included) even tried to send anywhere else."""
    yield
    counters = namespace.counters()
    assert list(counters) == ["lo"], counters
    assert counters["lo"].tx_packets > 0
    assert namespace.unroutable() == 0


async def join_page(firefox: Firefox, web: Backend, meeting: Meeting) -> None:
    """The host's page, signed in and joined (without `?ice=relay`: host candidates)."""
    host = meeting.host
    session = {"token": host.token, "userId": host.user_id, "name": host.name}
    await firefox.open(web.url + "/")
    await firefox.js("localStorage.setItem('connvo.session', JSON.stringify(args[0]))", session)
    await firefox.open(f"{web.url}/meet/{meeting.id}")
    await firefox.js("document.getElementById('join').click()")
    await firefox.until("return !document.getElementById('room').hidden")


async def received(firefox: Firefox) -> dict[str, int]:
    """What the page decoded so far: video frames and audio samples."""
    return await firefox.js(
        """let video = 0, audio = 0;
        for (const peer of connvo.mesh.peers.values()) {
            if (!peer.pc) continue;
            (await peer.pc.getStats()).forEach((s) => {
                if (s.type !== 'inbound-rtp') return;
                if (s.kind === 'video') video += s.framesDecoded ?? 0;
                else audio += s.totalSamplesReceived ?? 0;
            });
        }
        return {video, audio};"""
    )


CONNECTED_TILES = "document.querySelectorAll(\"#grid .tile[data-state='connected']\").length"


def stored(web: Backend, table: str, meeting: Meeting, **where: str) -> list[dict]:
    """The dev backend's rows of `meeting` in `table`, as stored (signals handled or not)."""
    store = Store(web.server.data_dir / "connvo.sqlite3")
    try:
        with store.transaction() as tx:
            rows = tx.find(table, meetingId=meeting.id)
    finally:
        store.close()
    return [r for r in rows if all(r[k] == v for k, v in where.items())]


async def send_from_page(firefox: Firefox, text: str) -> None:
    """As a person does: typed in the chat box, sent with the form."""
    await firefox.js(
        """document.getElementById('chat-text').value = args[0];
        document.getElementById('chat-form').requestSubmit();""",
        text,
    )


async def shown_on_page(firefox: Firefox, text: str) -> str:
    """The chat line holding `text`, once it is shown."""
    return await firefox.until(
        """const lines = [...document.querySelectorAll('#messages li')];
        return lines.find((l) => l.textContent.includes(args[0]))?.textContent;""",
        text,
    )


async def media_flows_both_ways(firefox: Firefox, bots: list[Room], meeting: Meeting) -> None:
    first = await received(firefox)
    for b in bots:
        peer = page_peer(b, meeting)
        await until(lambda p=peer: p.frames_received("audio") > 10)
        await until(lambda p=peer: p.frames_received("video") > 5)
    later = await received(firefox)
    assert later["video"] > first["video"] > 0 and later["audio"] > first["audio"] > 0


def ends_of_candidates(web: Backend, meeting: Meeting, member: Member) -> list[int]:
    """Where the end-of-candidates stands among the page's candidates to `member`."""
    host = meeting.host.user_id
    sent = stored(
        web, "webrtcSignals", meeting, type="ice", fromUserId=host, toUserId=member.user_id
    )
    return [i - len(sent) for i, r in enumerate(sent) if not r["data"]["candidate"]]


@pytest.mark.parametrize("page_first", [True, False], ids=["page-first", "bots-first"])
async def test_firefox_meets_two_bots_with_chat_audio_and_video(web, firefox, page_first):
    meeting = await web.meeting(3, title="Firefox and bots")
    bots = [bot(meeting, 1), bot(meeting, 2)]
    inboxes = [b.events() for b in bots]
    if page_first:
        await join_page(firefox, web, meeting)
    for b in bots:
        await b.join()
    try:
        if not page_first:
            await join_page(firefox, web, meeting)
        await firefox.until(f"return {CONNECTED_TILES} === 2")
        await until(
            lambda: all((p := page_peer(b, meeting)) and p.state == "connected" for b in bots)
        )
        assert all(page_peer(b, meeting).offerer == page_first for b in bots)
        await media_flows_both_ways(firefox, bots, meeting)

        # chat both ways, the sender told by the connection
        await send_from_page(firefox, "hello bots")
        for inbox in inboxes:
            message = await next_chat(inbox)
            assert (message.text, message.sender) == ("hello bots", meeting.host.user_id)
        await bots[0].send_chat("hello page")
        assert meeting[1].name in await shown_on_page(firefox, "hello page")

        # the page measures what arrives (Firefox counts bytes on its candidate pair only)
        # and reports it, as the bots do: peers it hears from are never taken for dead
        host = meeting.host.user_id
        await until(lambda: stored(web, "connectionMetrics", meeting, userId=host), timeout=15)
        reports = stored(web, "connectionMetrics", meeting, userId=host)
        assert all(r["stats"]["bitrate"] > 10_000 for r in reports), reports

        # one end-of-candidates per connection, the last of its candidates
        assert all(ends_of_candidates(web, meeting, m) == [-1] for m in meeting.guests)
    finally:
        for b in bots:
            await b.leave()
    await firefox.until("return document.querySelectorAll('#grid .tile').length === 1")


async def test_a_chat_burst_from_firefox_arrives_and_the_connection_holds(web, firefox):
    """500 messages at once from the page's data channel (Firefox's usrsctp) to a bot: every one
    arrives, read within the inbound budget (convention.CHAT_BURST, then CHAT_RATE a second) or
    counted as dropped."""
    meeting = await web.meeting(2)
    async with bot(meeting, 1) as b:
        await join_page(firefox, web, meeting)  # the newer: it offers, and opens the channel
        await until(lambda: (p := page_peer(b, meeting)) is not None and p.chat_open)
        peer = page_peer(b, meeting)
        await firefox.js("for (let i = 0; i < 500; i++) connvo.mesh.sendChat(`burst ${i}`);")
        await until(lambda: peer.chat_received + peer.chat_dropped == 500, timeout=20)
        assert CHAT_BURST <= peer.chat_received < 500 and peer.chat_dropped > 0
        assert peer.state == "connected" and page_peer(b, meeting) is peer
        assert await firefox.js(f"return {CONNECTED_TILES}") == 1
