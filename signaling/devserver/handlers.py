"""Every function the dev backend offers: the Connvo catalogue, each with its implementation,
and the dev-only `dev/*` functions. A catalogue entry without an implementation (or the other
way round) fails at import, not in some later test."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, TypeAdapter

from signaling.devserver import dev, meetings, rooms, signals, transcripts
from signaling.devserver.guards import Ctx
from signaling.functions import FUNCTIONS

Handler = Callable[[Ctx, Any], Any]

_W = "meetings/webrtc/index/"
_L = "meetings/lifecycle/"
_T = "transcripts/ingestion/"

IMPLEMENTATIONS: dict[str, Handler] = {
    _W + "initializeWebRTCRoom": rooms.initialize_room,
    _W + "createWebRTCSession": signals.create_session,
    _W + "exchangeSessionDescription": signals.exchange_description,
    _W + "exchangeICECandidate": signals.exchange_candidate,
    _W + "getPendingSignals": signals.pending_signals,
    _W + "markSignalsProcessed": signals.mark_processed,
    _W + "getActiveSessions": signals.active_sessions,
    _W + "updateSessionState": signals.update_session_state,
    _W + "closeSession": signals.close_session,
    _W + "handleConnectionFailure": rooms.handle_connection_failure,
    _W + "monitorConnectionQuality": rooms.monitor_connection_quality,
    _W + "generateParticipantAccessToken": rooms.generate_access_token,
    _L + "createMeeting": meetings.create_meeting,
    _L + "addParticipant": meetings.add_participant,
    _L + "startMeeting": meetings.start_meeting,
    _L + "endMeeting": meetings.end_meeting,
    _L + "joinMeeting": meetings.join_meeting,
    _L + "leaveMeeting": meetings.leave_meeting,
    _L + "getMeetingConnectionInfo": meetings.connection_info,
    "meetings/queries/getMeeting": meetings.get_meeting_view,
    "meetings/queries/listMeetingParticipants": meetings.list_participants,
    "users/queries/getCurrentUser": meetings.current_user,
    _T + "ingestTranscriptChunk": transcripts.ingest_chunk,
    _T + "getTranscriptChunks": transcripts.get_chunks,
}


@dataclass(frozen=True)
class Endpoint:
    path: str
    args: type[BaseModel]
    result: TypeAdapter[Any]
    handler: Handler


def _endpoints() -> dict[str, Endpoint]:
    missing = FUNCTIONS.keys() ^ IMPLEMENTATIONS.keys()
    if missing:
        raise RuntimeError(f"catalogue and dev backend disagree on: {sorted(missing)}")
    table = {
        path: Endpoint(path, fn.args, fn.result_adapter, IMPLEMENTATIONS[path])
        for path, fn in FUNCTIONS.items()
    }
    table["dev/configureRoom"] = Endpoint(
        "dev/configureRoom",
        dev.ConfigureRoomArgs,
        TypeAdapter(dev.ConfigureRoomResult),
        dev.configure_room,
    )
    return table


ENDPOINTS: dict[str, Endpoint] = _endpoints()
