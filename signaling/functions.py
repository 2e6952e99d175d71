"""The catalogue of Connvo functions: path, args model, result shape, and whether a retry is safe.

Both sides of the wire read this table: the client to validate what it sends and receives, the
dev backend to validate what it is sent and what it answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import TypeAdapter

from signaling import models as m

Kind = Literal["query", "mutation", "action"]


@dataclass(frozen=True)
class Function:
    path: str
    args: type[m.Args]
    result: Any
    retry_safe: bool
    """True when running the call twice has the effect of running it once."""
    kind: Kind
    """As the deployment declares it: only queries can be subscribed to (the sync protocol)."""

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def result_adapter(self) -> TypeAdapter[Any]:
        return _adapter(self.result)


_adapters: dict[Any, TypeAdapter[Any]] = {}


def _adapter(shape: Any) -> TypeAdapter[Any]:
    if shape not in _adapters:
        _adapters[shape] = TypeAdapter(shape)
    return _adapters[shape]


class EmptyArgs(m.Args):
    pass


_W = "meetings/webrtc/index/"
_L = "meetings/lifecycle/"
_Q = "meetings/queries/"
_T = "transcripts/ingestion/"

# Callers name these objects, never a path: a typo is an AttributeError at import.
INITIALIZE_WEBRTC_ROOM = Function(
    _W + "initializeWebRTCRoom", m.InitializeRoomArgs, m.RoomConfig, True, kind="action"
)
CREATE_WEBRTC_SESSION = Function(
    _W + "createWebRTCSession", m.SessionArgs, m.CreateSessionResult, True, kind="mutation"
)
EXCHANGE_SESSION_DESCRIPTION = Function(
    _W + "exchangeSessionDescription", m.ExchangeDescriptionArgs, None, False, kind="mutation"
)
EXCHANGE_ICE_CANDIDATE = Function(
    _W + "exchangeICECandidate", m.ExchangeCandidateArgs, None, False, kind="mutation"
)
GET_PENDING_SIGNALS = Function(
    _W + "getPendingSignals", m.PendingSignalsArgs, list[m.Signal], True, kind="query"
)
MARK_SIGNALS_PROCESSED = Function(
    _W + "markSignalsProcessed", m.MarkProcessedArgs, None, True, kind="mutation"
)
GET_ACTIVE_SESSIONS = Function(
    _W + "getActiveSessions", m.MeetingArgs, list[m.ActiveSession], True, kind="query"
)
UPDATE_SESSION_STATE = Function(
    _W + "updateSessionState", m.UpdateSessionStateArgs, None, True, kind="mutation"
)
CLOSE_SESSION = Function(_W + "closeSession", m.SessionArgs, None, True, kind="mutation")
HANDLE_CONNECTION_FAILURE = Function(
    _W + "handleConnectionFailure",
    m.ConnectionFailureArgs,
    m.ConnectionFailureResult,
    False,
    kind="action",
)
MONITOR_CONNECTION_QUALITY = Function(
    _W + "monitorConnectionQuality", m.QualityArgs, m.QualityResult, True, kind="action"
)
GENERATE_PARTICIPANT_ACCESS_TOKEN = Function(
    _W + "generateParticipantAccessToken", m.AccessTokenArgs, m.AccessToken, True, kind="action"
)
CREATE_MEETING = Function(
    _L + "createMeeting", m.CreateMeetingArgs, m.CreateMeetingResult, False, kind="mutation"
)
ADD_PARTICIPANT = Function(
    _L + "addParticipant", m.AddParticipantArgs, m.AddParticipantResult, False, kind="mutation"
)
START_MEETING = Function(
    _L + "startMeeting", m.MeetingArgs, m.StartMeetingResult, False, kind="mutation"
)
END_MEETING = Function(_L + "endMeeting", m.MeetingArgs, m.EndMeetingResult, False, kind="mutation")
JOIN_MEETING = Function(
    _L + "joinMeeting", m.MeetingArgs, m.JoinMeetingResult, True, kind="mutation"
)
LEAVE_MEETING = Function(_L + "leaveMeeting", m.MeetingArgs, m.Success, True, kind="mutation")
GET_MEETING_CONNECTION_INFO = Function(
    _L + "getMeetingConnectionInfo", m.MeetingArgs, m.MeetingConnectionInfo, True, kind="query"
)
GET_MEETING = Function(_Q + "getMeeting", m.MeetingArgs, m.Meeting | None, True, kind="query")
LIST_MEETING_PARTICIPANTS = Function(
    _Q + "listMeetingParticipants", m.MeetingArgs, list[m.MeetingParticipant], True, kind="query"
)
GET_CURRENT_USER = Function(
    "users/queries/getCurrentUser", EmptyArgs, m.User | None, True, kind="query"
)
INGEST_TRANSCRIPT_CHUNK = Function(
    _T + "ingestTranscriptChunk", m.TranscriptChunkArgs, m.IngestResult, False, kind="mutation"
)
GET_TRANSCRIPT_CHUNKS = Function(
    _T + "getTranscriptChunks", m.TranscriptChunksArgs, list[m.TranscriptChunk], True, kind="query"
)

FUNCTIONS: dict[str, Function] = {
    f.path: f for f in list(globals().values()) if isinstance(f, Function)
}
"""Every function above, by path (the dev backend serves exactly these)."""
