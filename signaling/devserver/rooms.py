"""Video rooms: convex/meetings/webrtc/rooms.ts and convex/lib/videoProviders.ts.

The provider rules, room ids, features and tokens follow the real backend; the ICE servers
come from the settings (none by default) instead of the real deployment's public STUN servers.
"""

from __future__ import annotations

import secrets

from signaling import models as m
from signaling.devserver import convex_error as err
from signaling.devserver.dev import overrides
from signaling.devserver.guards import (
    Ctx,
    assert_meeting_access,
    get_meeting,
    now_ms,
    require_identity,
    user_plan,
)
from signaling.devserver.settings import Settings
from signaling.devserver.store import Doc

WEBRTC_LIMIT = 4
GETSTREAM_LIMIT = 100
ROOM_FLAGS = ("chat", "recording", "transcription", "screenSharing", "maxParticipants")


def ice_servers(settings: Settings, *, blank_credentials: bool = False) -> list[Doc]:
    """STUN entries, then one TURN entry as the real deployment adds it from its environment
    (startMeeting and getMeetingConnectionInfo fill a missing username/credential with "")."""
    servers: list[Doc] = [{"urls": url} for url in settings.stun_urls]
    if settings.turn_url:
        turn: Doc = {"urls": settings.turn_url}
        for key, value in (
            ("username", settings.turn_username),
            ("credential", settings.turn_credential),
        ):
            if value is not None or blank_credentials:
                turn[key] = value or ""
        servers.append(turn)
    return servers


def select_provider(
    plan: str, participant_count: int, recording: bool = False, meeting_type: str | None = None
) -> str:
    """VideoProviderFactory.selectProvider: paid plans get GetStream for large or recorded
    meetings; everything else is the free peer-to-peer mesh."""
    large = participant_count > WEBRTC_LIMIT or meeting_type in ("large-meeting", "webinar")
    return "getstream" if plan == "paid" and (large or recording) else "webrtc"


def create_room(ctx: Ctx, provider: str, meeting_id: str, max_participants: int, plan: str) -> Doc:
    """The room a provider's createRoom answers (GetStream's call is not created here)."""
    if provider == "webrtc":
        return {
            "roomId": f"webrtc_{meeting_id}_{now_ms()}",
            "provider": "webrtc",
            "iceServers": ice_servers(ctx.settings),
            "features": {
                "recording": False,
                "transcription": True,
                "maxParticipants": min(max_participants, WEBRTC_LIMIT),
                "screenSharing": True,
                "chat": True,
            },
        }
    return {
        "roomId": f"stream_{meeting_id}_{now_ms()}",
        "provider": "getstream",
        "features": {
            "recording": plan == "paid",
            "transcription": True,
            "maxParticipants": min(max_participants, GETSTREAM_LIMIT),
            "screenSharing": True,
            "chat": True,
        },
    }


def initialize_room(ctx: Ctx, args: m.InitializeRoomArgs) -> Doc:
    """Any meeting state will do. The meeting type is not consulted: the real action passes
    only the requested maxParticipants to the provider choice."""
    user = require_identity(ctx)
    assert_meeting_access(ctx, args.meetingId)
    get_meeting(ctx, args.meetingId)
    plan = user_plan(user)
    requested = WEBRTC_LIMIT if args.maxParticipants is None else args.maxParticipants
    chosen = overrides(ctx.tx, args.meetingId)
    provider = chosen.get("provider") or select_provider(plan, requested)
    room = create_room(ctx, provider, args.meetingId, requested, plan)
    room["features"].update({k: chosen[k] for k in ROOM_FLAGS if k in chosen})
    _store_room(ctx, args.meetingId, room)
    return {**room, "success": True}


def _store_room(ctx: Ctx, meeting_id: str, room: Doc) -> None:
    now = now_ms()
    ctx.tx.patch(
        "meetings",
        meeting_id,
        {
            "streamRoomId": room["roomId"],
            "webrtcEnabled": room["provider"] == "webrtc",
            "updatedAt": now,
        },
    )
    ctx.tx.insert(
        "videoRoomConfigs", {"meetingId": meeting_id, **room, "createdAt": now, "updatedAt": now}
    )


def latest_room(ctx: Ctx, meeting_id: str) -> Doc | None:
    """The newest stored room. (The real query asks for a unique row although every
    initializeWebRTCRoom call adds one, and fails once there are two.)"""
    return ctx.tx.latest("videoRoomConfigs", meetingId=meeting_id)


def generate_access_token(ctx: Ctx, args: m.AccessTokenArgs) -> Doc:
    require_identity(ctx)
    participant = assert_meeting_access(ctx, args.meetingId)
    meeting = get_meeting(ctx, args.meetingId)
    if meeting["state"] != "active":
        raise err.validation("Cannot generate token for inactive meeting")
    room = latest_room(ctx, args.meetingId)
    if room is None:
        raise err.validation("Meeting does not have a video room configured")
    if participant["role"] == "observer":
        raise err.validation(
            "Observers cannot generate participant tokens for active video participation"
        )
    user_id, role, features = participant["userId"], participant["role"], room["features"]
    if room["provider"] == "webrtc":
        token = f"webrtc_session_{user_id}_{now_ms()}"
    else:
        token = f"devstream_{secrets.token_urlsafe(24)}"  # GetStream would sign a JWT
    return {
        "token": token,
        "provider": room["provider"],
        "roomId": room["roomId"],
        "participantId": args.sessionId or f"{user_id}_{now_ms()}",
        "permissions": {
            "canRecord": role == "host" and features["recording"],
            "canMute": role == "host",
            "canKick": role == "host",
            "canShare": features["screenSharing"],
        },
        "success": True,
    }


def handle_connection_failure(ctx: Ctx, args: m.ConnectionFailureArgs) -> Doc:
    """Marks the (meeting, sessionId) session failed, whoever owns it, as the real action does."""
    user = require_identity(ctx)
    assert_meeting_access(ctx, args.meetingId)
    session = ctx.tx.first("webrtcSessions", meetingId=args.meetingId, sessionId=args.sessionId)
    if session is not None:
        metadata = {
            "errorType": args.errorType,
            "errorDetails": args.errorDetails or "",
            "failedAt": now_ms(),
        }
        ctx.tx.patch(
            "webrtcSessions",
            session["_id"],
            {"state": "failed", "metadata": metadata, "updatedAt": now_ms()},
        )
    room = latest_room(ctx, args.meetingId)
    retry, fallback = False, None
    if room and room["provider"] == "webrtc" and args.errorType == "ice_failed":
        retry = True
    elif room and room["provider"] == "getstream":
        small = room["features"]["maxParticipants"] <= WEBRTC_LIMIT
        if user_plan(user) == "free" or small:
            fallback = "webrtc"
    return {"success": True, "retryRecommended": retry, "fallbackProvider": fallback}


def monitor_connection_quality(ctx: Ctx, args: m.QualityArgs) -> Doc:
    user = require_identity(ctx)
    assert_meeting_access(ctx, args.meetingId)
    quality, recommendations, fallback = assess(args.stats)
    now = now_ms()
    ctx.tx.insert(
        "connectionMetrics",
        {
            "meetingId": args.meetingId,
            "sessionId": args.sessionId,
            "userId": user["_id"],
            "quality": quality,
            "stats": args.stats.model_dump(),
            "timestamp": now,
            "createdAt": now,
        },
    )
    return {"quality": quality, "recommendations": recommendations, "shouldFallback": fallback}


def assess(stats: m.QualityStats) -> tuple[str, list[str], bool]:
    """The real thresholds, in the units the client sends (percent, ms, bits/s)."""
    quality, notes, fallback = "excellent", [], False
    if stats.packetLoss > 5 or stats.latency > 300 or stats.jitter > 50:
        quality, fallback = "poor", True
        notes += [
            "Consider switching to a more stable connection",
            "Close other applications using bandwidth",
        ]
    elif stats.packetLoss > 2 or stats.latency > 150 or stats.jitter > 30:
        quality = "fair"
        notes.append("Check your internet connection stability")
    elif stats.packetLoss > 0.5 or stats.latency > 100:
        quality = "good"
        notes.append("Connection is stable but could be improved")
    if stats.bitrate < 100_000:
        quality = "fair" if quality == "excellent" else quality
        notes.append("Low bitrate detected - check bandwidth availability")
    return quality, notes, fallback
