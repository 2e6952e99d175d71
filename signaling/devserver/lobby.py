"""The meeting page's own dev functions (`dev/myMeetings`, `dev/invite`): what Connvo's web app
does through functions the agent does not use. Only the dev backend has them."""

from __future__ import annotations

from pydantic import Field

from signaling import models as m
from signaling.devserver import meetings
from signaling.devserver.auth import upsert_user
from signaling.devserver.guards import Ctx, assert_meeting_access, require_host, require_identity
from signaling.devserver.store import Doc
from signaling.functions import EmptyArgs

USER_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""Dev user names: what `connvo-agent token --user` and the page's sign-in accept."""


MAX_LISTED = 100


class MyMeetingsResult(m.Result):
    meetingId: str
    title: str
    state: str
    role: str
    participantCount: int


def my_meetings(ctx: Ctx, args: EmptyArgs) -> list[Doc]:
    """The meetings the caller takes part in that have not ended, newest first."""
    user = require_identity(ctx)
    answer: list[Doc] = []
    for part in ctx.tx.find("meetingParticipants", userId=user["_id"], newest_first=True):
        meeting = ctx.tx.get("meetings", part["meetingId"])
        if meeting is None or meeting["state"] in ("concluded", "cancelled"):
            continue
        if len(answer) == MAX_LISTED:
            break
        answer.append(
            {
                "meetingId": meeting["_id"],
                "title": meeting["title"],
                "state": meeting["state"],
                "role": part["role"],
                "participantCount": meeting.get("participantCount", 1),
            }
        )
    return answer


class InviteArgs(m.Args):
    meetingId: str
    name: str = Field(pattern=USER_NAME)


class InviteResult(m.Result):
    userId: str
    success: bool


def invite(ctx: Ctx, args: InviteArgs) -> Doc:
    """Adds the dev user `name` (created if new) as a participant, so a bot started with
    `connvo-agent token --user NAME` can join: addParticipant wants a userId nobody can look up
    by name through Connvo's API."""
    require_host(assert_meeting_access(ctx, args.meetingId))
    user_id = upsert_user(ctx.tx, args.name, None)
    if ctx.tx.first("meetingParticipants", meetingId=args.meetingId, userId=user_id) is None:
        add = m.AddParticipantArgs(meetingId=args.meetingId, userId=user_id, role="participant")
        meetings.add_participant(ctx, add)
    return {"userId": user_id, "success": True}
