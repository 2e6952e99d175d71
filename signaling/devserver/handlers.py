"""Every function the dev backend offers: the Connvo catalogue, each with its implementation,
and the dev-only `dev/*` functions. Implementations are registered by the catalogue's Function
objects, so a misspelt one is an AttributeError at import, and a catalogue entry without an
implementation fails at import too, not in some later test."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, TypeAdapter

from signaling import functions as fn
from signaling.devserver import dev, lobby, meetings, rooms, signals, transcripts
from signaling.devserver.guards import Ctx
from signaling.functions import FUNCTIONS, EmptyArgs, Function, Kind

Handler = Callable[[Ctx, Any], Any]

IMPLEMENTATIONS: dict[Function, Handler] = {
    fn.INITIALIZE_WEBRTC_ROOM: rooms.initialize_room,
    fn.CREATE_WEBRTC_SESSION: signals.create_session,
    fn.EXCHANGE_SESSION_DESCRIPTION: signals.exchange_description,
    fn.EXCHANGE_ICE_CANDIDATE: signals.exchange_candidate,
    fn.GET_PENDING_SIGNALS: signals.pending_signals,
    fn.MARK_SIGNALS_PROCESSED: signals.mark_processed,
    fn.GET_ACTIVE_SESSIONS: signals.active_sessions,
    fn.UPDATE_SESSION_STATE: signals.update_session_state,
    fn.CLOSE_SESSION: signals.close_session,
    fn.HANDLE_CONNECTION_FAILURE: rooms.handle_connection_failure,
    fn.MONITOR_CONNECTION_QUALITY: rooms.monitor_connection_quality,
    fn.GENERATE_PARTICIPANT_ACCESS_TOKEN: rooms.generate_access_token,
    fn.CREATE_MEETING: meetings.create_meeting,
    fn.ADD_PARTICIPANT: meetings.add_participant,
    fn.START_MEETING: meetings.start_meeting,
    fn.END_MEETING: meetings.end_meeting,
    fn.JOIN_MEETING: meetings.join_meeting,
    fn.LEAVE_MEETING: meetings.leave_meeting,
    fn.GET_MEETING_CONNECTION_INFO: meetings.connection_info,
    fn.GET_MEETING: meetings.get_meeting_view,
    fn.LIST_MEETING_PARTICIPANTS: meetings.list_participants,
    fn.GET_CURRENT_USER: meetings.current_user,
    fn.INGEST_TRANSCRIPT_CHUNK: transcripts.ingest_chunk,
    fn.GET_TRANSCRIPT_CHUNKS: transcripts.get_chunks,
}


@dataclass(frozen=True)
class Endpoint:
    path: str
    args: type[BaseModel]
    result: TypeAdapter[Any]
    handler: Handler
    kind: Kind


def _endpoints() -> dict[str, Endpoint]:
    missing = set(FUNCTIONS.values()) - IMPLEMENTATIONS.keys()
    if missing:
        raise RuntimeError(f"no dev implementation of: {sorted(f.path for f in missing)}")
    table = {
        f.path: Endpoint(f.path, f.args, f.result_adapter, handler, f.kind)
        for f, handler in IMPLEMENTATIONS.items()
    }
    table["dev/configureRoom"] = Endpoint(
        "dev/configureRoom",
        dev.ConfigureRoomArgs,
        TypeAdapter(dev.ConfigureRoomResult),
        dev.configure_room,
        "mutation",
    )
    table["dev/myMeetings"] = Endpoint(
        "dev/myMeetings",
        EmptyArgs,
        TypeAdapter(list[lobby.MyMeetingsResult]),
        lobby.my_meetings,
        "query",
    )
    table["dev/invite"] = Endpoint(
        "dev/invite", lobby.InviteArgs, TypeAdapter(lobby.InviteResult), lobby.invite, "mutation"
    )
    return table


ENDPOINTS: dict[str, Endpoint] = _endpoints()
