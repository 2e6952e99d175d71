"""Sessions and signals of the webrtc provider: convex/meetings/webrtc/signaling.ts.

Signals are addressed to users, not sessions; one without a target is stored and never read.
A reader gets its unprocessed signals oldest first, 200 read and at most 50 answered, until it
marks them processed.
"""

from __future__ import annotations

from typing import Any

from signaling import models as m
from signaling.devserver import convex_error as err
from signaling.devserver.guards import (
    Ctx,
    assert_meeting_access,
    get_meeting,
    now_ms,
    require_identity,
    user_ref,
)
from signaling.devserver.store import Doc

READ_LIMIT = 200
ANSWER_LIMIT = 50
ACTIVE_STATES = ("connecting", "connected", "disconnected")


def create_session(ctx: Ctx, args: m.SessionArgs) -> Doc:
    participant = assert_meeting_access(ctx, args.meetingId)
    require_identity(ctx)
    if get_meeting(ctx, args.meetingId)["state"] != "active":
        raise err.validation("Cannot create WebRTC session for inactive meeting")
    found = ctx.tx.first("webrtcSessions", meetingId=args.meetingId, sessionId=args.sessionId)
    if found is None:
        now = now_ms()
        ctx.tx.insert(
            "webrtcSessions",
            {
                "meetingId": args.meetingId,
                "sessionId": args.sessionId,
                "userId": participant["userId"],
                "state": "connecting",
                "createdAt": now,
                "updatedAt": now,
            },
        )
    return {"sessionId": args.sessionId, "success": True}


def _store_signal(ctx: Ctx, args: Any, kind: str, data: Doc) -> None:
    participant = assert_meeting_access(ctx, args.meetingId)
    ctx.tx.insert(
        "webrtcSignals",
        {
            "meetingId": args.meetingId,
            "sessionId": args.sessionId,
            "fromUserId": participant["userId"],
            "toUserId": args.targetUserId,
            "type": kind,
            "data": data,
            "timestamp": now_ms(),
            "processed": False,
        },
    )


def exchange_description(ctx: Ctx, args: m.ExchangeDescriptionArgs) -> None:
    data = {"type": args.description.type, "sdp": args.description.sdp}
    _store_signal(ctx, args, "sdp", data)


def exchange_candidate(ctx: Ctx, args: m.ExchangeCandidateArgs) -> None:
    fields = ("candidate", "sdpMLineIndex", "sdpMid", "usernameFragment")
    data = {k: getattr(args.candidate, k) for k in fields if getattr(args.candidate, k) is not None}
    _store_signal(ctx, args, "ice", data)


def pending_signals(ctx: Ctx, args: m.PendingSignalsArgs) -> list[Doc]:
    participant = assert_meeting_access(ctx, args.meetingId)
    signals = ctx.tx.find(
        "webrtcSignals",
        limit=READ_LIMIT,
        meetingId=args.meetingId,
        toUserId=participant["userId"],
        processed=False,
    )
    if args.sessionId:
        signals = [s for s in signals if s["sessionId"] == args.sessionId]
    if args.lastSignalId:
        signals = [s for s in signals if s["_id"] > args.lastSignalId]
    keys = ("_id", "sessionId", "fromUserId", "type", "data", "timestamp")
    return [{k: s[k] for k in keys} for s in signals[:ANSWER_LIMIT]]


def mark_processed(ctx: Ctx, args: m.MarkProcessedArgs) -> None:
    """Other users' signals (and unknown ids) are skipped without a word."""
    user = require_identity(ctx)
    for signal_id in args.signalIds:
        signal = ctx.tx.get("webrtcSignals", signal_id)
        if signal is not None and signal.get("toUserId") == user["_id"]:
            ctx.tx.patch("webrtcSignals", signal_id, {"processed": True})


def _own_session(ctx: Ctx, meeting_id: str, session_id: str) -> Doc | None:
    participant = assert_meeting_access(ctx, meeting_id)
    mine = ctx.tx.find("webrtcSessions", userId=participant["userId"], meetingId=meeting_id)
    return next((s for s in mine if s["sessionId"] == session_id), None)


def update_session_state(ctx: Ctx, args: m.UpdateSessionStateArgs) -> None:
    session = _own_session(ctx, args.meetingId, args.sessionId)
    if session is None:
        raise err.not_found("WebRTC session not found")
    ctx.tx.patch(
        "webrtcSessions",
        session["_id"],
        {"state": args.state, "metadata": args.metadata, "updatedAt": now_ms()},
    )


def close_session(ctx: Ctx, args: m.SessionArgs) -> None:
    session = _own_session(ctx, args.meetingId, args.sessionId)
    if session is not None:
        ctx.tx.patch("webrtcSessions", session["_id"], {"state": "closed", "updatedAt": now_ms()})


def active_sessions(ctx: Ctx, args: m.MeetingArgs) -> list[Doc]:
    """Grouped by state (connecting, connected, disconnected), each group oldest first, as the
    real query unions one index scan per state."""
    assert_meeting_access(ctx, args.meetingId)
    answer = []
    for state in ACTIVE_STATES:
        for session in ctx.tx.find("webrtcSessions", meetingId=args.meetingId, state=state):
            user = ctx.tx.get("users", session["userId"])
            if user is not None:
                answer.append({**session, "user": user_ref(user)})
    return answer
