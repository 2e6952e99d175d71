"""Who is calling and what they may touch: convex/auth/guards.ts, read the same way."""

from __future__ import annotations

import time
from dataclasses import dataclass

from signaling.devserver import convex_error as err
from signaling.devserver.settings import Settings
from signaling.devserver.store import Doc, Tx


@dataclass(frozen=True)
class Ctx:
    """What a function runs with: its transaction, the server's settings and the verified
    token subject (None when the request carried no token)."""

    tx: Tx
    settings: Settings
    subject: str | None


def now_ms() -> int:
    return int(time.time() * 1000)


def require_identity(ctx: Ctx) -> Doc:
    """The caller's user document; UNAUTHORIZED without a token or a provisioned user."""
    if ctx.subject is None:
        raise err.unauthorized("Authentication required")
    user = ctx.tx.first("users", workosUserId=ctx.subject)
    if user is None:
        raise err.unauthorized("User not provisioned. Please complete sign-in and try again.")
    return user


def assert_meeting_access(ctx: Ctx, meeting_id: str, required_role: str | None = None) -> Doc:
    """The caller's meetingParticipants row; FORBIDDEN when there is none."""
    user = require_identity(ctx)
    participant = ctx.tx.first("meetingParticipants", meetingId=meeting_id, userId=user["_id"])
    if participant is None:
        raise err.forbidden(
            "Access denied: Not a meeting participant",
            {"meetingId": meeting_id, "userId": user["_id"]},
        )
    if required_role and participant["role"] != required_role:
        raise err.insufficient_permissions(required_role, participant["role"])
    return participant


def require_host(participant: Doc) -> None:
    """addParticipant's (and dev/configureRoom's) own host check."""
    if participant["role"] != "host":
        raise err.insufficient_permissions("host", participant["role"])


def get_meeting(ctx: Ctx, meeting_id: str) -> Doc:
    meeting = ctx.tx.get("meetings", meeting_id)
    if meeting is None:
        raise err.not_found("Meeting", meeting_id)
    return meeting


def user_plan(user: Doc) -> str:
    """convex/lib/videoProviders.ts getUserPlan: org admins are "paid", everyone else "free"."""
    return "paid" if user.get("orgRole") == "admin" else "free"


def user_ref(user: Doc) -> Doc:
    return {k: user[k] for k in ("_id", "displayName", "avatarUrl") if k in user}
