"""`dev/configureRoom`: the one function the real backend does not have.

Tests need rooms the real backend would rarely hand out (no chat, recording on a free plan, a
limit of 2, getstream). The host stores overrides per meeting; initializeWebRTCRoom and
getMeetingConnectionInfo apply them over what the real rules decide.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from signaling import models as m
from signaling.devserver.guards import Ctx, assert_meeting_access, now_ms, require_host
from signaling.devserver.store import Doc, Tx

FLAGS = ("provider", "chat", "recording", "transcription", "screenSharing", "maxParticipants")


class ConfigureRoomArgs(m.Args):
    meetingId: str
    provider: m.Provider | None = None
    chat: bool | None = None
    recording: bool | None = None
    transcription: bool | None = None
    screenSharing: bool | None = None
    maxParticipants: int | None = Field(default=None, ge=1)
    reset: bool = False
    """Forget the earlier overrides of this meeting before applying these."""


class ConfigureRoomResult(m.Result):
    success: bool
    overrides: dict[str, Any]


def overrides(tx: Tx, meeting_id: str) -> Doc:
    row = tx.first("devRoomOverrides", meetingId=meeting_id)
    return {k: row[k] for k in FLAGS if row and k in row}


def configure_room(ctx: Ctx, args: ConfigureRoomArgs) -> Doc:
    require_host(assert_meeting_access(ctx, args.meetingId))
    given = {k: getattr(args, k) for k in FLAGS if getattr(args, k) is not None}
    row = ctx.tx.first("devRoomOverrides", meetingId=args.meetingId)
    if row is None:
        ctx.tx.insert("devRoomOverrides", {"meetingId": args.meetingId, **given})
    else:
        cleared = dict.fromkeys(FLAGS) if args.reset else {}
        ctx.tx.patch("devRoomOverrides", row["_id"], {**cleared, **given, "updatedAt": now_ms()})
    return {"success": True, "overrides": overrides(ctx.tx, args.meetingId)}
