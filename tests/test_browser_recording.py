"""A Chromium page's media recorded (the fixtures of test_browser.py: Debian's Chromium with a fake
camera and microphone, reaching the recorder through coturn on loopback): the file holds the
video codec the browser sent, as its own getStats names it, and decodes over the whole stay."""

from __future__ import annotations

import asyncio
import contextlib

import aiortc.codecs
import pytest
from playwright.async_api import Page
from test_browser import browser as browser  # the fixtures
from test_browser import chromium as chromium
from test_browser import join_page
from test_browser import web as web
from test_recorder import audio_end, close_to, decode, files_of, first_video_is_a_keyframe

from agent.ice import IceOptions
from agent.room import Room
from agent.workers.recorder import Recorder, request

pytestmark = [
    pytest.mark.browser,
    pytest.mark.turn,
    pytest.mark.speech,
    pytest.mark.timeout(180),
    pytest.mark.asyncio(loop_scope="module"),  # the loop of the module's Chromium
]


async def sent_video_codec(page: Page) -> str:
    """What the page's outbound video is encoded with, e.g. "VP8" or "H264"."""
    return await page.evaluate(
        """async () => {
            for (const peer of window.connvo.mesh.peers.values()) {
                if (!peer.pc) continue;
                const stats = [...(await peer.pc.getStats()).values()];
                const out = stats.find(s => s.type === 'outbound-rtp' && s.kind === 'video');
                const codec = out && stats.find(s => s.id === out.codecId);
                if (codec) return codec.mimeType.split('/')[1];
            }
            return null;
        }"""
    )


@pytest.mark.parametrize(("format", "offered"), [("mkv", "VP8"), ("mkv", "H264"), ("ts", "H264")])
async def test_a_chromium_page_is_recorded_with_the_codec_it_sent(
    web, browser, tmp_path, monkeypatch, format, offered
):
    """The recorder joins after the page, so it offers; Chromium answers with the offer's first
    codec (aiortc's table reordered for H.264; Debian's Chromium encodes H.264)."""
    if offered == "H264":
        table = aiortc.codecs.CODECS["video"]
        monkeypatch.setitem(aiortc.codecs.CODECS, "video", [*table[2:], *table[:2]])
    meeting = await web.meeting(2, recording=True)
    page = await join_page(browser, web, meeting)
    member = meeting[1]
    room = Room(
        member.api.url,
        member.token,
        meeting.id,
        request=request(format),
        ice=IceOptions.loopback(),
        api=member.api,
    )
    task = asyncio.create_task(Recorder(room, tmp_path, format=format).run())
    user = meeting[0].user_id
    try:
        await _until(lambda: any(f["duration"] > 5 for f in files_of(tmp_path, user)), 60)
        sent = await sent_video_codec(page)
        await page.close()
        await _until(lambda: all(f["complete"] for f in files_of(tmp_path, user)), 30)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    (entry,) = [f for f in files_of(tmp_path, user) if f["kind"] == "participant"]
    print(entry, f"page sent {sent}")
    path = tmp_path / entry["file"]
    if format == "mkv":
        assert entry["video"]["codec"] == sent and entry["audio"]["codec"] == "opus"
        assert first_video_is_a_keyframe(path)
    assert sent == offered
    audio, video_frames = decode(path)
    assert close_to(audio_end(path), entry["duration"]) and len(audio) > 0
    assert video_frames > 5 * entry["duration"]


async def _until(condition, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.2)
