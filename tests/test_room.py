"""The agent as a real WebRTC peer: real dev backend over HTTP, real aiortc peers on loopback."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from conftest import answer_to_another_offer

from agent.demo import _meeting
from agent.errors import FeatureDisabled, MeetingFull, UnsupportedProvider
from agent.events import ChatMessage, ParticipantJoined, ParticipantLeft, TrackReceived
from agent.ice import IceOptions
from agent.media.sources import Outgoing
from agent.pump import PollSettings
from agent.room import JoinRequest, Room, RoomSettings
from signaling.errors import MeetingNotActive, Unauthorized

FAST = RoomSettings(poll=PollSettings(fast=0.05, idle=0.2), discovery_interval=0.5)


def room(meeting, index: int, settings: RoomSettings = FAST, **request) -> Room:
    member = meeting[index]
    return Room(
        member.api.url,
        member.token,
        meeting.id,
        request=JoinRequest(**request),
        ice=IceOptions.loopback(),
        settings=settings,
        api=member.api,
    )


async def until(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def connected_to(r: Room, others: list[Room]) -> bool:
    return {o.user_id for o in others} <= {p.user_id for p in r.connected_peers()}


async def test_four_participant_mesh_exchanges_chat_and_both_media(backend):
    report = await _meeting(backend.server, 4, 2.0, FAST, quiet=True)
    assert report.ok, report
    assert len(report.participants) == 4
    for p in report.participants:
        assert p.peers_connected == 3
        assert p.chat_received == 3
        assert p.audio_frames_received > 0 and p.video_frames_received > 0
        assert p.join_ms is not None and p.join_ms > 0


async def test_chat_off_opens_no_data_channel_and_refuses_sending(backend):
    meeting = await backend.meeting(2, chat=False)
    async with room(meeting, 0) as a, room(meeting, 1) as b:
        await until(lambda: connected_to(a, [b]) and connected_to(b, [a]))
        for r in (a, b):
            peer = r.connected_peers()[0]
            assert peer.channel is None and peer.pc.sctp is None
        with pytest.raises(FeatureDisabled, match="chat"):
            await a.send_chat("hello")


async def test_chat_asked_for_in_a_room_without_chat_is_refused_by_name(backend):
    meeting = await backend.meeting(2, chat=False)
    with pytest.raises(FeatureDisabled, match="`chat`"):
        await room(meeting, 0, chat=True).join()
    assert await meeting.host.api.active_sessions(meeting.id) == []


async def test_chat_on_delivers_messages_with_sender(backend):
    meeting = await backend.meeting(2, chat=True)
    a, b = room(meeting, 0), room(meeting, 1)
    inbox = b.events()
    async with a, b:
        await until(lambda: connected_to(a, [b]))
        sent = await a.send_chat("hi there")
        async with asyncio.timeout(10):
            async for event in inbox:
                if isinstance(event, ChatMessage):
                    break
    assert (event.text, event.sender, event.id) == ("hi there", a.user_id, sent.id)


@pytest.mark.parametrize(
    "flag, request_", [("recording", "record"), ("transcription", "transcribe")]
)
async def test_recording_and_transcription_need_their_flag(backend, flag, request_):
    off = await backend.meeting(2, **{flag: False})
    with pytest.raises(FeatureDisabled, match=f"`{flag}`"):
        await room(off, 1, **{request_: True, "receive": frozenset()}).join()

    on = await backend.meeting(2, **{flag: True})
    speaker = room(on, 0, outgoing=Outgoing.synthetic(audio=True, video=True))
    worker = room(on, 1, **{request_: True, "receive": frozenset()})
    async with speaker, worker:
        await until(
            lambda: any(
                t.frames_received > 5
                for p in worker.peers.values()
                for t in p.tracks
                if t.kind == "audio"
            )
        )
        kinds = {t.kind for p in worker.peers.values() for t in p.tracks}
    assert kinds == ({"audio", "video"} if flag == "recording" else {"audio"})


async def test_screen_share_needs_its_flag_and_arrives_labelled(backend):
    off = await backend.meeting(2, screenSharing=False)
    with pytest.raises(FeatureDisabled, match="`screenSharing`"):
        await room(off, 0, outgoing=Outgoing.synthetic(screen=True), screen_share=True).join()

    on = await backend.meeting(2, screenSharing=True)
    sharer = room(on, 0, outgoing=Outgoing.synthetic(screen=True), screen_share=True)
    viewer = room(on, 1)
    async with sharer, viewer:
        # Frames on the screen m-line do not flow yet (see the open issue); its negotiation does.
        await until(
            lambda: any(t.label == "screen" for p in viewer.peers.values() for t in p.tracks)
        )
        labels = sorted(t.label for p in viewer.peers.values() for t in p.tracks)
    assert labels == ["audio", "camera", "screen"]


async def test_full_meeting_is_refused_and_leaves_no_session(backend):
    meeting = await backend.meeting(3, maxParticipants=2)
    async with room(meeting, 0), room(meeting, 1):
        with pytest.raises(MeetingFull, match="maxParticipants is 2"):
            await room(meeting, 2).join()
        sessions = await meeting.host.api.active_sessions(meeting.id)
    assert meeting[2].user_id not in {s.userId for s in sessions}
    assert len(sessions) == 2


async def test_stale_session_times_out_without_failing_the_join(backend):
    meeting = await backend.meeting(3)
    await meeting[2].api.create_session(meeting.id, "crashed-client-session")
    settings = RoomSettings(poll=FAST.poll, discovery_interval=0.5, answer_timeout=1.0)
    async with room(meeting, 0, settings) as a, room(meeting, 1, settings) as b:
        await until(lambda: connected_to(b, [a]))
        await until(lambda: meeting[2].user_id not in b.peers)
        assert b._mesh.is_stale("crashed-client-session")
        await asyncio.sleep(1.2)  # two rediscoveries: not offered again before stale_retry
        assert meeting[2].user_id not in b.peers


@pytest.mark.slow
async def test_a_stale_session_is_offered_to_again_after_a_doubling_back_off(backend):
    meeting = await backend.meeting(2)
    await meeting[1].api.create_session(meeting.id, "crashed-client-session")
    settings = RoomSettings(
        poll=FAST.poll,
        discovery_interval=0.5,
        quality_interval=0.5,
        answer_timeout=0.5,
        stale_retry=1.0,
    )
    async with room(meeting, 0, settings):
        # offers at 0, ~1.5 (0.5 + 1), ~4 (+ 0.5 + 2); the next at ~8.5 (+ 0.5 + 4)
        await until_offered(meeting[1], meeting.id, 3)
        await asyncio.sleep(2.0)  # past the third: none sooner
    offers = await offer_times(meeting[1], meeting.id)
    gaps = [later - earlier for earlier, later in itertools.pairwise(offers)]
    assert len(offers) == 3, gaps
    first, second = (settings.answer_timeout + settings.stale_retry * 2**n - 0.05 for n in (0, 1))
    assert gaps[0] > first and gaps[1] > second, gaps  # ms timestamps


async def offer_times(member, meeting_id: str) -> list[float]:
    """When the offers addressed to `member` were stored (s)."""
    signals = await member.api.pending_signals(meeting_id)
    return [s.timestamp / 1000 for s in signals if s.type == "sdp" and s.data.type == "offer"]


async def until_offered(member, meeting_id: str, count: int, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while len(await offer_times(member, meeting_id)) < count:
            await asyncio.sleep(0.1)


async def test_participant_leaving_and_rejoining_is_seen_as_such(backend):
    meeting = await backend.meeting(2)
    a = room(meeting, 0)
    events = a.events()
    async with a:
        b1 = room(meeting, 1)
        async with b1:
            await until(lambda: connected_to(a, [b1]))
        await until(lambda: b1.user_id not in a.peers)
        async with room(meeting, 1) as b2:
            await until(lambda: connected_to(a, [b2]))
            assert a.peers[b2.user_id].session_id == b2.session_id != b1.session_id
    seen = []
    async for event in events:
        if isinstance(event, ParticipantJoined | ParticipantLeft):
            seen.append((type(event).__name__, event.session_id))
    assert seen[:3] == [
        ("ParticipantJoined", b1.session_id),
        ("ParticipantLeft", b1.session_id),
        ("ParticipantJoined", b2.session_id),
    ]


async def test_tracks_are_async_iterators_of_frames(backend):
    meeting = await backend.meeting(2)
    sender = room(meeting, 0, outgoing=Outgoing.synthetic())
    receiver = room(meeting, 1)
    events = receiver.events()
    async with sender, receiver:
        async with asyncio.timeout(15):
            async for event in events:
                if isinstance(event, TrackReceived) and event.track.kind == "video":
                    break
            frames = []
            async for frame in event.track.frames():
                frames.append(frame)
                if len(frames) == 3:
                    break
    assert [(f.width, f.height) for f in frames] == [(320, 240)] * 3


async def test_bad_token_inactive_meeting_and_sfu_rooms_fail_clearly(backend):
    meeting = await backend.meeting(2, start=False)
    with pytest.raises(MeetingNotActive):
        await room(meeting, 0).join()
    with pytest.raises(Unauthorized) as bad:
        await Room(backend.url, "not-a-token", meeting.id).join()
    assert "not-a-token" not in str(bad.value)
    sfu = await backend.meeting(2, provider="getstream")
    with pytest.raises(UnsupportedProvider, match="getstream"):
        await room(sfu, 0).join()


async def test_glare_both_sides_offering_at_once_ends_in_one_connection(backend):
    meeting = await backend.meeting(2)
    audio = {"outgoing": Outgoing.synthetic(audio=True, video=False)}
    async with room(meeting, 0, **audio) as a, room(meeting, 1, **audio) as b:
        await until(lambda: connected_to(a, [b]) and connected_to(b, [a]))
        pa, pb = a.peers[b.user_id], b.peers[a.user_id]
        first = pa.pc
        await asyncio.gather(pa.offer(), pb.offer())  # a renegotiation from both ends at once
        await until(
            lambda: (
                connected_to(a, [b])
                and connected_to(b, [a])
                and pa.pc is not first
                and pa.pc.signalingState == pb.pc.signalingState == "stable"
            )
        )
        # one connection: each side's remote description is the other side's local one
        assert pa.pc.remoteDescription.sdp == pb.pc.localDescription.sdp
        assert pb.pc.remoteDescription.sdp == pa.pc.localDescription.sdp
        assert a.peers[b.user_id] is pa and b.peers[a.user_id] is pb
        await until(lambda: len(pa.tracks) == len(pb.tracks) == 1)  # the old ones went with it
        assert [t.kind for t in pa.tracks + pb.tracks] == ["audio", "audio"]


async def test_an_answer_meant_for_another_session_of_the_user_is_ignored(backend):
    """Answers are addressed to users: when two processes of one user offer at once, each
    reads both answers. The one stored before this one's offer (here: a real aiortc answer to
    another offer, sent as the other bot's) is the other process's, and must not be taken."""
    meeting = await backend.meeting(2)
    async with room(meeting, 1) as older:
        meant_elsewhere = await answer_to_another_offer()
        await older.api.send_description(
            meeting.id, older.session_id, meant_elsewhere, meeting[0].user_id
        )
        async with room(meeting, 0) as newer:  # offers, then reads both answers
            await until(lambda: connected_to(newer, [older]), timeout=8)
