"""The dev backend against BACKEND.md (and the real Convex functions it summarises): every
function's answer and its refusals, over real HTTP, through the typed client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from conftest import Backend

from agent.cli import main as cli
from signaling import errors as e
from signaling.api import ConnvoAPI
from signaling.client import NO_RETRY
from signaling.devserver import DevServer, DevServerError
from signaling.devserver.auth import ISSUER, load_secret, mint_token
from signaling.devserver.store import new_id
from signaling.models import IceServer, RoomFeatures, SessionDescription, TranscriptChunkArgs

W = "meetings/webrtc/index/"
T0 = 1_700_000_123_456  # a transcript start time (epoch ms)
DEFAULT_FEATURES = RoomFeatures(
    chat=True, recording=False, transcription=True, screenSharing=True, maxParticipants=4
)


def chunk(
    meeting_id: str,
    text: str,
    confidence: float = 0.5,
    start: float = T0,
    end: float = T0 + 1,
    **more: Any,
) -> TranscriptChunkArgs:
    return TranscriptChunkArgs(
        meetingId=meeting_id, text=text, confidence=confidence, startTime=start, endTime=end, **more
    )


async def refused(
    kind: type[e.ApplicationError], call: Awaitable[Any], message: str | None = None
) -> e.ApplicationError:
    """The typed refusal `call` ends with; checks its class, its code and (part of) its text."""
    with pytest.raises(kind) as info:
        await call
    assert type(info.value) is kind
    assert info.value.code == kind.code
    if message is not None:
        assert message in info.value.message
    return info.value


def post(url: str, path: str, body: bytes, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers["Content-Type"] = "application/json"
    with httpx.Client(trust_env=False, timeout=10) as http:
        return http.post(f"{url}/api/run/{path}", content=body, headers=headers)


@pytest.fixture(scope="module")
def configured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """A second backend with ICE servers configured and a tiny transcript rate limit."""
    server = DevServer(
        tmp_path_factory.mktemp("configured"),
        stun_urls=("stun:127.0.0.1:3478",),
        turn_url="turn:127.0.0.1:3478?transport=udp",
        turn_username="dev",
        turn_credential="turn-secret",
        transcript_rate=3,
    )
    with server:
        yield Backend(server)


# --- authentication --------------------------------------------------------------------------


def _foreign_token(backend: Backend, **claims: Any) -> str:
    now = int(time.time())
    claims = {"sub": "ghost", "iss": ISSUER, "iat": now, "exp": now + 600, **claims}
    return jwt.encode(claims, load_secret(backend.server.data_dir), algorithm="HS256")


def _bad_tokens(backend: Backend) -> dict[str, tuple[str, str]]:
    """name: (token, what the refusal says)"""
    good = backend.server.token("alice")
    return {
        "garbage": ("not-a-jwt", "Invalid authentication token"),
        "tampered": (good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"), "Invalid"),
        "other secret": (
            jwt.encode({"sub": "alice", "iss": ISSUER, "exp": time.time() + 60}, "x" * 32),
            "Invalid authentication token",
        ),
        "expired": (mint_token(backend.server.data_dir, "alice", ttl=-60), "expired"),
        "not provisioned": (_foreign_token(backend), "User not provisioned"),
    }


async def test_calls_without_a_token_are_unauthorized(backend: Backend) -> None:
    meeting = await backend.meeting(1)
    anonymous = backend.api(None)
    await refused(e.Unauthorized, anonymous.active_sessions(meeting.id), "Authentication required")
    await refused(e.Unauthorized, anonymous.initialize_room(meeting.id), "Authentication required")
    await refused(e.Unauthorized, anonymous.mark_processed([]), "Authentication required")


async def test_bad_tokens_are_unauthorized_and_never_repeated(backend: Backend) -> None:
    meeting = await backend.meeting(1)
    for name, (token, says) in _bad_tokens(backend).items():
        error = await refused(e.Unauthorized, backend.api(token).get_meeting(meeting.id), says)
        assert token not in str(error), name
        body = f'{{"args": {{"meetingId": "{meeting.id}"}}}}'.encode()
        raw = post(backend.url, "meetings/queries/getMeeting", body, token)
        assert raw.status_code == 400 and raw.json()["errorData"]["code"] == "UNAUTHORIZED", name
        assert token not in raw.text, name


async def test_current_user(backend: Backend) -> None:
    token, user_id = backend.user("carol")
    me = await backend.api(token).current_user()
    assert me is not None
    assert (me.id, me.workosUserId, me.displayName, me.orgRole) == (
        user_id,
        "carol",
        "carol",
        "member",
    )
    assert me.isActive and me.email
    admin_token, _ = backend.user("dave", admin=True)
    admin = await backend.api(admin_token).current_user()
    assert admin is not None and admin.orgRole == "admin"
    assert await backend.api(None).current_user() is None  # logged out: null, not an error
    await refused(e.Unauthorized, backend.api("nonsense").current_user())
    assert await backend.api(_foreign_token(backend)).current_user() is None


def test_cli_token_is_a_working_token(backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["token", "--data", str(backend.server.data_dir), "--user", "eve", "--admin"]) == 0
    token = capsys.readouterr().out.strip()
    me = asyncio.run(backend.api(token).current_user())
    assert me is not None and me.workosUserId == "eve" and me.orgRole == "admin"


# --- meeting lifecycle -----------------------------------------------------------------------


async def test_create_meeting(backend: Backend) -> None:
    host = backend.member()
    created = await host.api.create_meeting(
        "  Planning  ", description="d", meetingType="small-group"
    )
    assert created.videoProvider == "webrtc" and created.webrtcReady
    assert created.features.model_dump() == {
        "recording": False,
        "transcription": True,
        "maxParticipants": 4,
    }
    meeting = await host.api.get_meeting(created.meetingId)
    assert meeting is not None
    assert (meeting.title, meeting.state, meeting.organizerId) == (
        "Planning",
        "scheduled",
        host.user_id,
    )
    assert (meeting.userRole, meeting.userPresence, meeting.participantCount) == (
        "host",
        "invited",
        1,
    )


async def test_create_meeting_for_an_admin_picks_getstream(backend: Backend) -> None:
    admin = backend.member(admin=True)
    created = await admin.api.create_meeting("big", recordingEnabled=True)
    assert (created.videoProvider, created.webrtcReady) == ("getstream", False)
    assert created.features.model_dump() == {
        "recording": True,
        "transcription": True,
        "maxParticipants": 10,
    }


async def test_create_meeting_refusals(backend: Backend) -> None:
    host = backend.member()
    await refused(e.InvalidArgs, host.api.create_meeting("   "), "title cannot be empty")
    await refused(e.InvalidArgs, host.api.create_meeting("t", scheduledAt=1000), "in the past")
    await refused(e.InvalidArgs, host.api.create_meeting("t", maxParticipants=-1), "at least 1")
    await refused(e.Unauthorized, backend.api(None).create_meeting("t"), "requires organizerId")
    await refused(
        e.InvalidArgs, host.api.client.run("meetings/lifecycle/createMeeting", {}), "title"
    )


async def test_create_meeting_without_a_token_takes_the_organizer_on_trust(
    backend: Backend,
) -> None:
    """The real mutation lets an unauthenticated caller name the organizer."""
    organizer = backend.member()
    created = await backend.api(None).create_meeting("t", organizerId=organizer.user_id)
    meeting = await organizer.api.get_meeting(created.meetingId)
    assert meeting is not None and meeting.userRole == "host"
    missing = new_id("users")
    await refused(e.NotFound, backend.api(None).create_meeting("t", organizerId=missing))


async def test_add_participant(backend: Backend) -> None:
    meeting = await backend.meeting(2, start=False)
    newcomer, outsider = backend.member(), backend.member()
    added = await meeting.host.api.add_participant(meeting.id, newcomer.user_id, "co-host")
    assert added.success and added.participantId
    people = await newcomer.api.meeting_participants(meeting.id)
    assert [(p.userId, p.role, p.presence) for p in people] == [
        (meeting.host.user_id, "host", "invited"),
        (meeting[1].user_id, "participant", "invited"),
        (newcomer.user_id, "participant", "invited"),  # co-host is stored as participant
    ]
    assert people[0].user.displayName == meeting.host.name
    view = await meeting.host.api.get_meeting(meeting.id)
    assert view is not None and view.participantCount == 3

    api = meeting.host.api
    error = await refused(
        e.InsufficientPermissions,
        meeting[1].api.add_participant(meeting.id, outsider.user_id),
        "Requires host role",
    )
    assert error.metadata == {"requiredRole": "host", "currentRole": "participant"}
    await refused(
        e.Forbidden,
        outsider.api.add_participant(meeting.id, outsider.user_id),
        "Access denied: Not a meeting participant",
    )
    await refused(e.InvalidArgs, api.add_participant(meeting.id, newcomer.user_id), "already")
    await refused(e.NotFound, api.add_participant(meeting.id, new_id("users")), "User with ID")
    await refused(e.InvalidArgs, api.add_participant(meeting.id, "bob"), 'v.id("users")')
    bad_role = {"meetingId": meeting.id, "userId": outsider.user_id, "role": "boss"}
    await refused(
        e.InvalidArgs, api.client.run("meetings/lifecycle/addParticipant", bad_role), "role"
    )


async def test_start_and_end_meeting(backend: Backend) -> None:
    meeting = await backend.meeting(2, start=False)
    host, guest, outsider = meeting.host.api, meeting[1].api, backend.member().api
    await refused(e.InvalidArgs, host.end_meeting(meeting.id), "Can only end active meetings")
    await refused(e.InsufficientPermissions, guest.start_meeting(meeting.id), "Requires host")
    await refused(e.Forbidden, outsider.start_meeting(meeting.id))

    started = await host.start_meeting(meeting.id)
    assert (started.success, started.webrtcReady, started.videoProvider) == (True, True, "webrtc")
    assert started.roomInfo is not None and started.roomInfo.iceServers == []
    await refused(e.InvalidArgs, host.start_meeting(meeting.id), "already active")
    await refused(e.InsufficientPermissions, guest.end_meeting(meeting.id), "Requires host")

    ended = await host.end_meeting(meeting.id)
    assert ended.success and ended.duration is not None and ended.duration >= 0
    view = await guest.get_meeting(meeting.id)
    assert view is not None and view.state == "concluded"
    await refused(e.InvalidArgs, host.start_meeting(meeting.id), "concluded or cancelled")
    newcomer = backend.member()
    await refused(e.InvalidArgs, host.add_participant(meeting.id, newcomer.user_id), "concluded")


async def test_join_and_leave_record_presence(backend: Backend) -> None:
    meeting = await backend.meeting(2, start=False)
    guest = meeting[1].api
    # As the real mutation: VALIDATION_ERROR, not MEETING_NOT_ACTIVE (the room's join names it).
    await refused(e.InvalidArgs, guest.join_meeting(meeting.id), "Cannot join inactive meeting")
    await meeting.host.api.start_meeting(meeting.id)
    joined = await guest.join_meeting(meeting.id)
    assert joined.success and joined.webrtcReady
    view = await guest.get_meeting(meeting.id)
    assert view is not None and (view.userRole, view.userPresence) == ("participant", "joined")
    assert (await guest.leave_meeting(meeting.id)).success
    people = await meeting.host.api.meeting_participants(meeting.id)
    assert people[1].presence == "left" and people[1].joinedAt and people[1].leftAt
    await refused(e.Forbidden, backend.member().api.join_meeting(meeting.id))
    await refused(e.Forbidden, backend.member().api.leave_meeting(meeting.id))


async def test_queries_need_participation(backend: Backend) -> None:
    meeting = await backend.meeting(2)
    outsider = backend.member().api
    await refused(e.Forbidden, outsider.get_meeting(meeting.id))
    await refused(e.Forbidden, outsider.meeting_participants(meeting.id))
    await refused(e.Forbidden, outsider.get_meeting(new_id("meetings")))  # no such meeting
    await refused(e.InvalidArgs, outsider.get_meeting("m1"), "meetingId")


async def test_connection_info(backend: Backend) -> None:
    meeting = await backend.meeting(2, start=False)
    await refused(e.InvalidArgs, meeting.host.api.connection_info(meeting.id), "not active")
    await meeting.host.api.start_meeting(meeting.id)
    info = await meeting[1].api.connection_info(meeting.id)
    assert (info.success, info.videoProvider) == (True, "webrtc")
    assert info.connectionInfo.roomId == f"webrtc_{meeting.id}"
    assert info.connectionInfo.iceServers == []
    assert info.features.model_dump() == {
        "recording": False,
        "transcription": True,
        "maxParticipants": 4,
    }
    await refused(e.Forbidden, backend.member().api.connection_info(meeting.id))


# --- rooms -----------------------------------------------------------------------------------


async def test_initialize_room_defaults(backend: Backend) -> None:
    meeting = await backend.meeting(2, start=False)  # any meeting state will do
    room = await meeting[1].api.initialize_room(meeting.id)
    assert room.success and room.provider == "webrtc"
    assert room.roomId.startswith(f"webrtc_{meeting.id}_")
    assert room.iceServers == []  # nothing that leaves the machine
    assert room.features == DEFAULT_FEATURES
    smaller = await meeting.host.api.initialize_room(meeting.id, max_participants=2)
    assert smaller.features.maxParticipants == 2
    capped = await meeting.host.api.initialize_room(meeting.id, max_participants=10)
    assert (capped.provider, capped.features.maxParticipants) == ("webrtc", 4)


async def test_initialize_room_refusals(backend: Backend) -> None:
    meeting = await backend.meeting(1)
    await refused(e.Forbidden, backend.member().api.initialize_room(meeting.id))
    await refused(e.Unauthorized, backend.api(None).initialize_room(meeting.id))
    args = {"meetingId": meeting.id, "maxParticipants": "four"}
    await refused(
        e.InvalidArgs,
        meeting.host.api.client.run(W + "initializeWebRTCRoom", args),
        "maxParticipants",
    )


async def test_admins_get_getstream_for_large_rooms(backend: Backend) -> None:
    meeting = await backend.meeting(2, admin_host=True)
    small = await meeting.host.api.initialize_room(meeting.id)
    assert small.provider == "webrtc"
    large = await meeting.host.api.initialize_room(meeting.id, max_participants=6)
    assert large.provider == "getstream" and large.roomId.startswith(f"stream_{meeting.id}_")
    assert large.iceServers is None
    assert large.features == RoomFeatures(
        chat=True, recording=True, transcription=True, screenSharing=True, maxParticipants=6
    )
    by_member = await meeting[1].api.initialize_room(meeting.id, max_participants=6)
    assert (by_member.provider, by_member.features.maxParticipants) == ("webrtc", 4)


async def test_configure_room_sets_every_flag(backend: Backend) -> None:
    meeting = await backend.meeting(3)
    host, guest = meeting.host.api, meeting[1].api
    flags = {
        "chat": False,
        "recording": True,
        "transcription": False,
        "screenSharing": False,
        "maxParticipants": 6,
    }
    answer = await host.configure_dev_room(meeting.id, **flags)
    assert answer == {"success": True, "overrides": flags}
    room = await guest.initialize_room(meeting.id)
    assert room.provider == "webrtc" and room.features == RoomFeatures(**flags)
    info = await guest.connection_info(meeting.id)
    assert info.features.model_dump() == {
        "recording": True,
        "transcription": False,
        "maxParticipants": 6,
    }

    await host.configure_dev_room(meeting.id, provider="getstream", maxParticipants=2)
    room = await guest.initialize_room(meeting.id)
    assert room.provider == "getstream" and room.iceServers is None
    assert (room.features.chat, room.features.maxParticipants) == (False, 2)
    assert (await guest.connection_info(meeting.id)).videoProvider == "getstream"

    await host.configure_dev_room(meeting.id, reset=True)
    assert (await guest.initialize_room(meeting.id)).features == DEFAULT_FEATURES


async def test_configure_room_is_for_the_host(backend: Backend) -> None:
    meeting = await backend.meeting(2)
    await refused(
        e.InsufficientPermissions, meeting[1].api.configure_dev_room(meeting.id, chat=False)
    )
    await refused(e.Forbidden, backend.member().api.configure_dev_room(meeting.id, chat=False))
    await refused(e.Unauthorized, backend.api(None).configure_dev_room(meeting.id, chat=False))
    host = meeting.host.api
    await refused(e.InvalidArgs, host.configure_dev_room(meeting.id, maxParticipants=0))
    await refused(e.InvalidArgs, host.configure_dev_room(meeting.id, chats=False), "chats")
    await refused(e.InvalidArgs, host.configure_dev_room(meeting.id, provider="zoom"), "provider")
    assert (await meeting[1].api.initialize_room(meeting.id)).features == DEFAULT_FEATURES


async def test_ice_servers_come_from_the_settings(configured: Backend) -> None:
    meeting = await configured.meeting(2, start=False)
    expected = [
        IceServer(urls="stun:127.0.0.1:3478"),
        IceServer(
            urls="turn:127.0.0.1:3478?transport=udp", username="dev", credential="turn-secret"
        ),
    ]
    started = await meeting.host.api.start_meeting(meeting.id)
    assert started.roomInfo is not None and started.roomInfo.iceServers == expected
    assert (await meeting[1].api.initialize_room(meeting.id)).iceServers == expected
    assert (await meeting[1].api.connection_info(meeting.id)).connectionInfo.iceServers == expected


async def test_access_token(backend: Backend) -> None:
    meeting = await backend.meeting(3, roles=("participant", "observer"), start=False)
    host, guest, observer = (member.api for member in meeting.members)
    await meeting.host.api.initialize_room(meeting.id)
    await refused(e.InvalidArgs, guest.access_token(meeting.id), "inactive meeting")
    await meeting.host.api.start_meeting(meeting.id)

    mine = await host.access_token(meeting.id, session_id="s-1")
    room = await host.initialize_room(meeting.id)  # tokens follow the newest room
    mine = await host.access_token(meeting.id, session_id="s-1")
    assert (mine.success, mine.provider, mine.roomId, mine.participantId) == (
        True,
        "webrtc",
        room.roomId,
        "s-1",
    )
    assert mine.token.startswith(f"webrtc_session_{meeting.host.user_id}_")
    assert mine.permissions.model_dump() == {
        "canKick": True,
        "canMute": True,
        "canRecord": False,  # webrtc rooms do not record
        "canShare": True,
    }
    theirs = await guest.access_token(meeting.id)
    assert theirs.participantId.startswith(f"{meeting[1].user_id}_")
    assert not (theirs.permissions.canKick or theirs.permissions.canMute)
    await refused(e.InvalidArgs, observer.access_token(meeting.id), "Observers cannot")
    await refused(e.Forbidden, backend.member().api.access_token(meeting.id))


async def test_access_token_needs_a_room(backend: Backend) -> None:
    meeting = await backend.meeting(1)
    await refused(e.InvalidArgs, meeting.host.api.access_token(meeting.id), "video room")


async def test_connection_failure(backend: Backend) -> None:
    meeting = await backend.meeting(2)
    api = meeting.host.api
    no_room = await api.report_failure(meeting.id, "s", "ice_failed")
    assert (no_room.retryRecommended, no_room.fallbackProvider) == (False, None)

    await api.initialize_room(meeting.id)
    await api.create_session(meeting.id, "s")
    ice = await api.report_failure(meeting.id, "s", "ice_failed", "no candidate pair")
    assert (ice.success, ice.retryRecommended, ice.fallbackProvider) == (True, True, None)
    assert await api.active_sessions(meeting.id) == []  # failed is not active
    media = await api.report_failure(meeting.id, "s", "media_failed")
    assert (media.retryRecommended, media.fallbackProvider) == (False, None)

    await api.configure_dev_room(meeting.id, provider="getstream")
    await api.initialize_room(meeting.id)
    stream = await api.report_failure(meeting.id, "s", "connection_timeout")
    assert (stream.retryRecommended, stream.fallbackProvider) == (False, "webrtc")
    await refused(e.Forbidden, backend.member().api.report_failure(meeting.id, "s", "ice_failed"))
    args = {"meetingId": meeting.id, "sessionId": "s", "errorType": "cosmic_rays"}
    await refused(e.InvalidArgs, api.client.run(W + "handleConnectionFailure", args), "errorType")


QUALITY_CASES = [
    # (bitrate, packetLoss, latency, jitter) -> quality, shouldFallback
    ((500_000, 0, 50, 10), "excellent", False),
    ((500_000, 0.5, 100, 30), "excellent", False),  # the thresholds are strict
    ((500_000, 0.6, 50, 10), "good", False),
    ((500_000, 0, 101, 10), "good", False),
    ((500_000, 2.1, 50, 10), "fair", False),
    ((500_000, 0, 151, 10), "fair", False),
    ((500_000, 0, 50, 31), "fair", False),
    ((500_000, 5.1, 50, 10), "poor", True),
    ((500_000, 0, 301, 10), "poor", True),
    ((500_000, 0, 50, 51), "poor", True),
    ((99_999, 0, 50, 10), "fair", False),  # a low bitrate turns excellent into fair
    ((99_999, 0.6, 50, 10), "good", False),  # and leaves the others alone
]


async def test_connection_quality_thresholds(backend: Backend) -> None:
    meeting = await backend.meeting(1)
    api = meeting.host.api
    for (bitrate, loss, latency, jitter), quality, fallback in QUALITY_CASES:
        stats = {"bitrate": bitrate, "packetLoss": loss, "latency": latency, "jitter": jitter}
        answer = await api.report_quality(meeting.id, "s", stats)
        assert (answer.quality, answer.shouldFallback) == (quality, fallback), stats
        assert bool(answer.recommendations) == (quality != "excellent"), stats
    await refused(e.Forbidden, backend.member().api.report_quality(meeting.id, "s", stats))
    bad = {"meetingId": meeting.id, "sessionId": "s", "stats": {"bitrate": 1}}
    await refused(e.InvalidArgs, api.client.run(W + "monitorConnectionQuality", bad), "stats")


# --- sessions --------------------------------------------------------------------------------


async def test_sessions(backend: Backend) -> None:
    meeting = await backend.meeting(2)
    a, b = meeting.members
    created = await a.api.create_session(meeting.id, "s-a")
    assert (created.sessionId, created.success) == ("s-a", True)
    await a.api.update_session_state(meeting.id, "s-a", "connected")
    again = await a.api.create_session(meeting.id, "s-a")  # idempotent: state kept
    assert again.sessionId == "s-a"
    await b.api.create_session(meeting.id, "s-b")
    sessions = await b.api.active_sessions(meeting.id)
    # grouped by state: connecting first, then connected
    assert [(s.sessionId, s.userId, s.state) for s in sessions] == [
        ("s-b", b.user_id, "connecting"),
        ("s-a", a.user_id, "connected"),
    ]
    assert sessions[1].user.id == a.user_id and sessions[1].user.displayName == a.name
    assert sessions[0].meetingId == meeting.id and sessions[0].createdAt > 0

    await refused(
        e.NotFound, b.api.update_session_state(meeting.id, "s-a", "closed"), "WebRTC session"
    )
    await a.api.update_session_state(meeting.id, "s-a", "disconnected", {"reason": "test"})
    people = await a.api.meeting_participants(meeting.id)
    assert [(p.webrtcConnected, p.webrtcSessionCount) for p in people] == [(False, 1), (False, 1)]
    await b.api.close_session(meeting.id, "s-a")  # not b's: nothing happens
    await b.api.close_session(meeting.id, "s-b")
    (left,) = await a.api.active_sessions(meeting.id)
    assert (left.sessionId, left.state, left.metadata) == (
        "s-a",
        "disconnected",
        {"reason": "test"},
    )
    view = await a.api.get_meeting(meeting.id)
    assert view is not None and view.activeWebRTCSessions == 1


async def test_session_refusals(backend: Backend) -> None:
    meeting = await backend.meeting(1, start=False)
    api = meeting.host.api
    await refused(e.InvalidArgs, api.create_session(meeting.id, "s"), "inactive meeting")
    outsider = backend.member().api
    await refused(e.Forbidden, outsider.create_session(meeting.id, "s"))
    await refused(e.Forbidden, outsider.active_sessions(meeting.id))
    await refused(e.Forbidden, outsider.update_session_state(meeting.id, "s", "connected"))
    await refused(e.Forbidden, outsider.close_session(meeting.id, "s"))
    bad_state = {"meetingId": meeting.id, "sessionId": "s", "state": "sleeping"}
    await refused(e.InvalidArgs, api.client.run(W + "updateSessionState", bad_state), "state")


# --- signals ---------------------------------------------------------------------------------


def offer(sdp: str) -> dict[str, str]:
    return {"type": "offer", "sdp": sdp}


async def test_signals_are_addressed_to_users(backend: Backend) -> None:
    meeting = await backend.meeting(3)
    a, b, c = meeting.members
    candidate = {
        "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    }
    await a.api.send_description(meeting.id, "sa", offer("a->b"), b.user_id)
    await a.api.send_candidate(meeting.id, "sa", candidate, b.user_id)
    untargeted = {"meetingId": meeting.id, "sessionId": "sa", "description": offer("to nobody")}
    assert await a.api.client.run(W + "exchangeSessionDescription", untargeted) is None

    got = await b.api.pending_signals(meeting.id)
    assert [(s.type, s.fromUserId, s.sessionId) for s in got] == [
        ("sdp", a.user_id, "sa"),
        ("ice", a.user_id, "sa"),
    ]
    assert got[0].data == SessionDescription(type="offer", sdp="a->b")
    assert got[1].data.model_dump(exclude_none=True) == candidate
    assert got[0].timestamp <= got[1].timestamp
    assert await a.api.pending_signals(meeting.id) == []  # the untargeted one reaches nobody
    assert await c.api.pending_signals(meeting.id) == []


async def test_signals_stay_until_their_reader_marks_them(backend: Backend) -> None:
    meeting = await backend.meeting(3)
    a, b, c = meeting.members
    for i in range(3):
        await a.api.send_description(meeting.id, "sa", offer(f"n{i}"), b.user_id)
    ids = [s.id for s in await b.api.pending_signals(meeting.id)]
    assert [s.id for s in await b.api.pending_signals(meeting.id)] == ids  # still there
    await c.api.mark_processed(ids)  # not c's: ignored
    await a.api.mark_processed(ids)  # nor the sender's
    await b.api.mark_processed([new_id("webrtcSignals")])  # unknown ids: ignored
    assert [s.id for s in await b.api.pending_signals(meeting.id)] == ids
    await b.api.mark_processed(ids[:2])
    assert [s.id for s in await b.api.pending_signals(meeting.id)] == ids[2:]
    await refused(e.InvalidArgs, b.api.mark_processed(["x"]), "signalIds")
    await refused(e.Unauthorized, backend.api(None).mark_processed(ids))


async def test_at_most_50_signals_oldest_first(backend: Backend) -> None:
    meeting = await backend.meeting(2)
    a, b = meeting.members
    for i in range(60):
        await a.api.send_description(meeting.id, "sa", offer(f"n{i}"), b.user_id)
    first = await b.api.pending_signals(meeting.id)
    assert [s.data.sdp for s in first] == [f"n{i}" for i in range(50)]
    await b.api.mark_processed([s.id for s in first])
    rest = await b.api.pending_signals(meeting.id)
    assert [s.data.sdp for s in rest] == [f"n{i}" for i in range(50, 60)]


async def test_filters_apply_to_the_200_oldest(backend: Backend) -> None:
    """sessionId filters the 200 oldest unprocessed signals, not the whole mailbox."""
    meeting = await backend.meeting(2)
    a, b = meeting.members
    await asyncio.gather(
        *(a.api.send_description(meeting.id, "old", offer(f"o{i}"), b.user_id) for i in range(200))
    )
    for i in range(3):
        await a.api.send_description(meeting.id, "new", offer(f"n{i}"), b.user_id)
    assert await b.api.pending_signals(meeting.id, session_id="new") == []
    for _ in range(4):
        batch = await b.api.pending_signals(meeting.id, session_id="old")
        await b.api.mark_processed([s.id for s in batch])
    fresh = await b.api.pending_signals(meeting.id, session_id="new")
    assert [s.data.sdp for s in fresh] == ["n0", "n1", "n2"]


async def test_last_signal_id_compares_as_a_string(backend: Backend) -> None:
    meeting = await backend.meeting(2)
    a, b = meeting.members
    for i in range(12):
        session = "even" if i % 2 == 0 else "odd"
        await a.api.send_description(meeting.id, session, offer(f"n{i}"), b.user_id)
    everything = await b.api.pending_signals(meeting.id)
    pivot = sorted(s.id for s in everything)[5]
    after = await b.api.pending_signals(meeting.id, last_signal_id=pivot)
    assert [s.id for s in after] == [s.id for s in everything if s.id > pivot]
    assert len(after) == 6
    odd = await b.api.pending_signals(meeting.id, session_id="odd", last_signal_id=pivot)
    assert [s.id for s in odd] == [s.id for s in after if s.sessionId == "odd"]
    await refused(e.InvalidArgs, b.api.pending_signals(meeting.id, last_signal_id="x"))


async def test_signal_refusals(backend: Backend) -> None:
    meeting = await backend.meeting(2)
    outsider = backend.member().api
    target = meeting[1].user_id
    await refused(e.Forbidden, outsider.send_description(meeting.id, "s", offer("x"), target))
    await refused(e.Forbidden, outsider.send_candidate(meeting.id, "s", {"candidate": ""}, target))
    await refused(e.Forbidden, outsider.pending_signals(meeting.id))
    api = meeting.host.api
    bad = {"meetingId": meeting.id, "sessionId": "s", "description": {"type": "hello", "sdp": ""}}
    await refused(e.InvalidArgs, api.client.run(W + "exchangeSessionDescription", bad), "type")
    await refused(e.InvalidArgs, api.send_description(meeting.id, "s", offer("x"), "bob"), "target")


# --- transcripts -----------------------------------------------------------------------------


async def test_transcript_chunks(backend: Backend) -> None:
    meeting = await backend.meeting(2)
    host, guest = meeting.host.api, meeting[1].api
    first = await host.ingest_transcript(
        chunk(meeting.id, "  hello   world ", 0.9, T0, T0 + 1500, speakerId=meeting.host.user_id)
    )
    assert (first.success, first.sequence, first.bucketMs) == (True, 1, T0 // 300_000 * 300_000)
    assert first.rateLimitRemaining == 49
    second = await guest.ingest_transcript(chunk(meeting.id, "second", 1.0, T0 + 2000, T0 + 2500))
    third = await host.ingest_transcript(
        chunk(meeting.id, "third one", 0.0, T0 + 3000, T0 + 3500, language="de", isInterim=True)
    )
    assert (second.sequence, third.sequence) == (2, 3)

    chunks = await guest.transcript_chunks(meeting.id)
    assert [(c.sequence, c.text, c.wordCount, c.language) for c in chunks] == [
        (1, "hello   world", 2, "en"),
        (2, "second", 1, "en"),
        (3, "third one", 2, "de"),
    ]
    assert (chunks[0].startMs, chunks[0].endMs, chunks[0].speakerId) == (
        T0,
        T0 + 1500,
        meeting.host.user_id,
    )
    page = await guest.transcript_chunks(meeting.id, from_sequence=1, limit=1)
    assert [c.sequence for c in page] == [2]
    await refused(e.Forbidden, backend.member().api.transcript_chunks(meeting.id))


async def test_transcript_refusals(backend: Backend) -> None:
    meeting = await backend.meeting(1)
    api = meeting.host.api
    cases = [
        (("   ", 0.5, T0, T0 + 1), "cannot be empty"),
        (("x" * 10_001, 0.5, T0, T0 + 1), "too long"),
        (("hi", 1.01, T0, T0 + 1), "Confidence must be between 0 and 1"),
        (("hi", -0.1, T0, T0 + 1), "Confidence"),
        (("hi", 0.5, T0, T0), "Start time must be before end time"),
    ]
    for args, says in cases:
        await refused(e.InvalidArgs, api.ingest_transcript(chunk(meeting.id, *args)), says)
    assert (await api.ingest_transcript(chunk(meeting.id, "x" * 10_000))).success
    outsider = backend.member().api
    await refused(e.Forbidden, outsider.ingest_transcript(chunk(meeting.id, "hi")))
    scheduled = await backend.meeting(1, start=False)
    await refused(
        e.MeetingNotActive,
        scheduled.host.api.ingest_transcript(chunk(scheduled.id, "hi")),
        "Meeting is not currently active",
    )
    await api.end_meeting(meeting.id)
    await refused(e.MeetingNotActive, api.ingest_transcript(chunk(meeting.id, "hi")))


async def _until_refused(api: ConnvoAPI, meeting_id: str, limit: int) -> e.ApplicationError:
    """Posts chunks until the limiter refuses one; checks the window's answers on the way."""
    answers: list[int] = []
    with pytest.raises(e.RateLimitExceeded) as info:
        for i in range(2 * limit + 1):  # a window may turn over once meanwhile
            answer = await api.ingest_transcript(chunk(meeting_id, f"w{i}"))
            answers.append(answer.rateLimitRemaining)
    assert answers[-limit:] == list(range(limit - 1, -1, -1))  # the refused window, counted down
    return info.value


async def test_transcript_rate_limit(configured: Backend) -> None:
    meeting = await configured.meeting(2)
    api = configured.api(meeting.host.token, retry=NO_RETRY)
    before_ms = time.time() * 1000
    refusal = await _until_refused(api, meeting.id, 3)
    assert refusal.code == "RATE_LIMIT_EXCEEDED"
    assert "Rate limit exceeded for transcriptIngestion" in refusal.message
    # the metadata the real limiter answers (BACKEND.md): fixed one-minute windows
    meta = refusal.metadata
    assert set(meta) == {"action", "limit", "resetTime", "retryAfterSeconds", "windowStart"}
    assert (meta["action"], meta["limit"]) == ("transcriptIngestion", 3)
    assert meta["windowStart"] % 60_000 == 0 and meta["resetTime"] == meta["windowStart"] + 60_000
    assert meta["windowStart"] <= time.time() * 1000 and meta["resetTime"] > before_ms
    assert 1 <= meta["retryAfterSeconds"] <= 60
    assert f"Try again in {meta['retryAfterSeconds']} seconds." in refusal.message
    # the limit is per user: the other participant still has all of it
    other = await meeting[1].api.ingest_transcript(chunk(meeting.id, "mine"))
    assert other.rateLimitRemaining == 2


async def test_the_transcript_limit_defaults_to_the_real_one(backend: Backend) -> None:
    """50 chunks per user per minute, as observed on Connvo (BACKEND.md)."""
    meeting = await backend.meeting(1)
    api = backend.api(meeting.host.token, retry=NO_RETRY)
    refusal = await _until_refused(api, meeting.id, 50)
    assert refusal.metadata["limit"] == 50


# --- the transport ---------------------------------------------------------------------------


def _assert_convex_error(response: httpx.Response, code: str, *mentions: str) -> dict[str, Any]:
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"status", "errorMessage", "errorData"} and body["status"] == "error"
    data = body["errorData"]
    assert data["code"] == code and data["message"] == body["errorMessage"]
    assert isinstance(data["statusCode"], int)
    for mention in mentions:
        assert mention in body["errorMessage"]
    return data


async def test_transport_errors_are_convex_shaped(backend: Backend) -> None:
    meeting = await backend.meeting(1)
    token, url = meeting.host.token, backend.url
    unknown = post(url, "meetings/nope/doesNotExist", b'{"args": {}}', token)
    _assert_convex_error(unknown, "NOT_FOUND", "meetings/nope/doesNotExist")
    _assert_convex_error(
        post(url, W + "getActiveSessions", b'{"args": {', token), "VALIDATION_ERROR", "JSON"
    )
    _assert_convex_error(post(url, W + "getActiveSessions", b"[1]", token), "VALIDATION_ERROR")
    _assert_convex_error(
        post(url, W + "getActiveSessions", b'{"args": 3}', token), "VALIDATION_ERROR", "args"
    )
    missing = post(url, W + "getActiveSessions", b'{"args": {}}', token)
    assert _assert_convex_error(missing, "VALIDATION_ERROR", "meetingId")["metadata"] == {
        "field": "meetingId"
    }
    extra = f'{{"args": {{"meetingId": "{meeting.id}", "meetingID": "x"}}}}'.encode()
    _assert_convex_error(
        post(url, W + "getActiveSessions", extra, token), "VALIDATION_ERROR", "meetingID"
    )
    typed = f'{{"args": {{"meetingId": "{meeting.id}", "sessionId": 7}}}}'.encode()
    _assert_convex_error(
        post(url, W + "createWebRTCSession", typed, token), "VALIDATION_ERROR", "sessionId"
    )
    with_format = f'{{"args": {{"meetingId": "{meeting.id}"}}, "format": "json"}}'.encode()
    ok = post(url, W + "getActiveSessions", with_format, token)
    assert ok.status_code == 200 and ok.json() == {"status": "success", "value": []}
    refused_ = post(url, W + "getActiveSessions", with_format, backend.member().token)
    _assert_convex_error(refused_, "FORBIDDEN", "Not a meeting participant")


async def test_unknown_paths_through_the_client(backend: Backend) -> None:
    api = backend.member().api
    await refused(e.NotFound, api.client.run("dev/nothing", {}), "Could not find public function")


def test_tokens_never_reach_the_log(tmp_path: Path) -> None:
    # The access log on, as `connvo-agent serve` runs by default: every request is in the log.
    with DevServer(tmp_path / "data", access_log=True) as server:
        token = server.token("logged")
        post(server.url, "users/queries/getCurrentUser", b'{"args": {}}', token)
        post(server.url, "users/queries/getCurrentUser", b'{"args": {}}', token + "x")
    log = server.log_path.read_text()
    assert log.count('"POST /api/run/users/queries/getCurrentUser HTTP/1.1"') == 2
    assert token not in log
    assert load_secret(server.data_dir).decode() not in log


# --- the process -----------------------------------------------------------------------------


async def test_restart_with_the_same_data_loses_nothing(tmp_path: Path) -> None:
    with DevServer(tmp_path / "data") as server:
        before = Backend(server)
        meeting = await before.meeting(2, chat=False)
        host, guest = meeting.members
        await host.api.send_description(meeting.id, "s", offer("kept"), guest.user_id)
        await host.api.ingest_transcript(chunk(meeting.id, "kept"))
        url = server.url
        await asyncio.to_thread(server.restart)  # a new process, on the same port
        assert server.url == url

        again = ConnvoAPI(server.url, host.token)  # tokens survive: the secret is in the dir
        view = await again.get_meeting(meeting.id)
        assert view is not None and view.state == "active" and view.participantCount == 2
        (signal,) = await ConnvoAPI(server.url, guest.token).pending_signals(meeting.id)
        assert signal.data.sdp == "kept"
        assert [c.text for c in await again.transcript_chunks(meeting.id)] == ["kept"]
        assert (await again.initialize_room(meeting.id)).features.chat is False
        nxt = await again.ingest_transcript(chunk(meeting.id, "next"))
        assert nxt.sequence == 2


def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    server = DevServer(tmp_path, transcript_rate="many", startup_timeout=20)  # type: ignore[arg-type]
    with pytest.raises(DevServerError, match="exited with code 2") as info:
        server.start()
    assert "--transcript-rate" in str(info.value)
