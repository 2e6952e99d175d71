"""Meetings and users: convex/meetings/lifecycle.ts, meetings/queries.ts, users/queries.ts.

Only what the agent and its tests use: create, invite, start, end, join, leave, read.
"""

from __future__ import annotations

from signaling import models as m
from signaling.devserver import convex_error as err
from signaling.devserver.dev import overrides
from signaling.devserver.guards import (
    Ctx,
    assert_meeting_access,
    get_meeting,
    now_ms,
    require_host,
    require_identity,
    user_plan,
    user_ref,
)
from signaling.devserver.rooms import GETSTREAM_LIMIT, WEBRTC_LIMIT, ice_servers, select_provider
from signaling.devserver.signals import ACTIVE_STATES
from signaling.devserver.store import Doc
from signaling.functions import EmptyArgs

DEFAULT_DURATION_MS = 1_800_000
DEFAULT_MAX_PARTICIPANTS = 10


def _organizer(ctx: Ctx, args: m.CreateMeetingArgs) -> Doc:
    """The caller; without a token the real mutation takes `organizerId` on trust."""
    if ctx.subject is not None:
        return require_identity(ctx)
    if not args.organizerId:
        raise err.unauthorized("Unauthenticated meeting creation requires organizerId")
    organizer = ctx.tx.get("users", args.organizerId)
    if organizer is None:
        raise err.not_found("User", args.organizerId)
    return organizer


def _check_new_meeting(args: m.CreateMeetingArgs) -> None:
    if not args.title.strip():
        raise err.validation("Meeting title cannot be empty")
    if args.scheduledAt and args.scheduledAt < now_ms():
        raise err.validation("Cannot schedule meeting in the past")
    if args.maxParticipants and args.maxParticipants < 1:
        raise err.validation("Maximum participants must be at least 1")


def create_meeting(ctx: Ctx, args: m.CreateMeetingArgs) -> Doc:
    _check_new_meeting(args)
    organizer = _organizer(ctx, args)
    plan = user_plan(organizer)
    wanted = args.maxParticipants or DEFAULT_MAX_PARTICIPANTS  # 0 means "not given", as in JS
    recording = bool(args.recordingEnabled)
    provider = select_provider(plan, wanted, recording, args.meetingType)
    limit = min(wanted, WEBRTC_LIMIT if provider == "webrtc" else GETSTREAM_LIMIT)
    recording = recording and provider == "getstream"
    now = now_ms()
    meeting_id = ctx.tx.insert(
        "meetings",
        {
            "organizerId": organizer["_id"],
            "title": args.title.strip(),
            "description": args.description.strip() if args.description else None,
            "scheduledAt": args.scheduledAt,
            "duration": args.duration or DEFAULT_DURATION_MS,
            "webrtcEnabled": provider == "webrtc",
            "state": "scheduled",
            "participantCount": 1,
            "createdAt": now,
            "updatedAt": now,
        },
    )
    ctx.tx.insert(
        "meetingParticipants",
        {
            "meetingId": meeting_id,
            "userId": organizer["_id"],
            "role": "host",
            "presence": "invited",
            "createdAt": now,
        },
    )
    ctx.tx.insert(
        "meetingState",
        {"meetingId": meeting_id, "active": False, "recordingEnabled": recording, "updatedAt": now},
    )
    return {
        "meetingId": meeting_id,
        "webrtcReady": provider == "webrtc",
        "videoProvider": provider,
        "features": {"recording": recording, "transcription": True, "maxParticipants": limit},
    }


def add_participant(ctx: Ctx, args: m.AddParticipantArgs) -> Doc:
    require_host(assert_meeting_access(ctx, args.meetingId))
    if ctx.tx.first("meetingParticipants", meetingId=args.meetingId, userId=args.userId):
        raise err.validation("User is already a participant in this meeting")
    if ctx.tx.get("users", args.userId) is None:
        raise err.not_found("User", args.userId)
    meeting = get_meeting(ctx, args.meetingId)
    if meeting["state"] in ("concluded", "cancelled"):
        raise err.validation("Cannot add participants to concluded or cancelled meeting")
    participant_id = ctx.tx.insert(
        "meetingParticipants",
        {
            "meetingId": args.meetingId,
            "userId": args.userId,
            "role": "participant" if args.role == "co-host" else args.role,
            "presence": "invited",
            "createdAt": now_ms(),
        },
    )
    count = meeting.get("participantCount", 0) + 1
    ctx.tx.patch("meetings", args.meetingId, {"participantCount": count, "updatedAt": now_ms()})
    return {"participantId": participant_id, "success": True}


def _meeting_state(ctx: Ctx, meeting_id: str) -> Doc | None:
    return ctx.tx.first("meetingState", meetingId=meeting_id)


def start_meeting(ctx: Ctx, args: m.MeetingArgs) -> Doc:
    assert_meeting_access(ctx, args.meetingId, "host")
    meeting = get_meeting(ctx, args.meetingId)
    if meeting["state"] == "active":
        raise err.validation("Meeting is already active")
    if meeting["state"] in ("concluded", "cancelled"):
        raise err.validation("Cannot start a concluded or cancelled meeting")
    now = now_ms()
    ctx.tx.patch("meetings", args.meetingId, {"state": "active", "updatedAt": now})
    state = _meeting_state(ctx, args.meetingId)
    if state is not None:
        ctx.tx.patch(
            "meetingState", state["_id"], {"active": True, "startedAt": now, "updatedAt": now}
        )
    if meeting.get("webrtcEnabled"):
        room_info = {"iceServers": ice_servers(ctx.settings, blank_credentials=True)}
        return {
            "success": True,
            "webrtcReady": True,
            "videoProvider": "webrtc",
            "roomInfo": room_info,
        }
    return {"success": True, "webrtcReady": False, "videoProvider": "getstream"}


def end_meeting(ctx: Ctx, args: m.MeetingArgs) -> Doc:
    assert_meeting_access(ctx, args.meetingId, "host")
    if get_meeting(ctx, args.meetingId)["state"] != "active":
        raise err.validation("Can only end active meetings")
    now = now_ms()
    ctx.tx.patch("meetings", args.meetingId, {"state": "concluded", "updatedAt": now})
    state = _meeting_state(ctx, args.meetingId)
    duration = None
    if state is not None:
        duration = now - state["startedAt"] if state.get("startedAt") else None
        ctx.tx.patch(
            "meetingState", state["_id"], {"active": False, "endedAt": now, "updatedAt": now}
        )
    return {"success": True, "duration": duration}


def join_meeting(ctx: Ctx, args: m.MeetingArgs) -> Doc:
    participant = assert_meeting_access(ctx, args.meetingId)
    if get_meeting(ctx, args.meetingId)["state"] != "active":
        raise err.validation("Cannot join inactive meeting")
    ctx.tx.patch(
        "meetingParticipants", participant["_id"], {"presence": "joined", "joinedAt": now_ms()}
    )
    return {"success": True, "webrtcReady": True}


def leave_meeting(ctx: Ctx, args: m.MeetingArgs) -> Doc:
    participant = assert_meeting_access(ctx, args.meetingId)
    ctx.tx.patch(
        "meetingParticipants", participant["_id"], {"presence": "left", "leftAt": now_ms()}
    )
    return {"success": True}


def connection_info(ctx: Ctx, args: m.MeetingArgs) -> Doc:
    """The provider the meeting was last set to (at creation or by initializeWebRTCRoom), with
    dev/configureRoom's overrides applied on top."""
    assert_meeting_access(ctx, args.meetingId)
    meeting = get_meeting(ctx, args.meetingId)
    if meeting["state"] != "active":
        raise err.validation("Meeting is not active")
    state = _meeting_state(ctx, args.meetingId) or {}
    chosen = overrides(ctx.tx, args.meetingId)
    provider = chosen.get("provider") or ("webrtc" if meeting.get("webrtcEnabled") else "getstream")
    info: Doc
    if provider == "webrtc":
        info = {
            "roomId": f"webrtc_{args.meetingId}",
            "iceServers": ice_servers(ctx.settings, blank_credentials=True),
        }
    else:
        info = {"roomId": meeting.get("streamRoomId")}
    features = {
        "recording": bool(state.get("recordingEnabled")),
        "transcription": True,
        "maxParticipants": WEBRTC_LIMIT if provider == "webrtc" else GETSTREAM_LIMIT,
    }
    features.update({k: chosen[k] for k in features if k in chosen})
    return {
        "success": True,
        "videoProvider": provider,
        "connectionInfo": info,
        "features": features,
    }


def get_meeting_view(ctx: Ctx, args: m.MeetingArgs) -> Doc | None:
    participant = assert_meeting_access(ctx, args.meetingId)
    meeting = ctx.tx.get("meetings", args.meetingId)
    if meeting is None:
        return None
    active = ctx.tx.count("webrtcSessions", meetingId=args.meetingId, state=ACTIVE_STATES)
    return {
        **meeting,
        "userRole": participant["role"],
        "userPresence": participant["presence"],
        "activeWebRTCSessions": active,
    }


def list_participants(ctx: Ctx, args: m.MeetingArgs) -> list[Doc]:
    assert_meeting_access(ctx, args.meetingId)
    answer = []
    for participant in ctx.tx.find("meetingParticipants", meetingId=args.meetingId):
        user = ctx.tx.get("users", participant["userId"])
        if user is None:
            continue
        sessions = ctx.tx.find(
            "webrtcSessions", userId=participant["userId"], meetingId=args.meetingId
        )
        answer.append(
            {
                **participant,
                "user": user_ref(user),
                "webrtcConnected": any(s["state"] == "connected" for s in sessions),
                "webrtcSessionCount": len(sessions),
            }
        )
    return answer


def current_user(ctx: Ctx, args: EmptyArgs) -> Doc | None:
    """No token answers null rather than UNAUTHORIZED, so logged-out clients can ask."""
    if ctx.subject is None:
        return None
    return ctx.tx.first("users", workosUserId=ctx.subject)
