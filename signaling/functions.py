"""The catalogue of Connvo functions: path, args model, result shape, and whether a retry is safe.

Both sides of the wire read this table: the client to validate what it sends and receives, the
dev backend to validate what it is sent and what it answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from signaling import models as m


@dataclass(frozen=True)
class Function:
    path: str
    args: type[m.Args]
    result: Any
    retry_safe: bool
    """True when running the call twice has the effect of running it once."""

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
_T = "transcripts/ingestion/"

FUNCTIONS: dict[str, Function] = {
    f.path: f
    for f in [
        Function(_W + "initializeWebRTCRoom", m.InitializeRoomArgs, m.Room, True),
        Function(_W + "createWebRTCSession", m.SessionArgs, m.CreateSessionResult, True),
        Function(_W + "exchangeSessionDescription", m.ExchangeDescriptionArgs, None, False),
        Function(_W + "exchangeICECandidate", m.ExchangeCandidateArgs, None, False),
        Function(_W + "getPendingSignals", m.PendingSignalsArgs, list[m.Signal], True),
        Function(_W + "markSignalsProcessed", m.MarkProcessedArgs, None, True),
        Function(_W + "getActiveSessions", m.MeetingArgs, list[m.ActiveSession], True),
        Function(_W + "updateSessionState", m.UpdateSessionStateArgs, None, True),
        Function(_W + "closeSession", m.SessionArgs, None, True),
        Function(
            _W + "handleConnectionFailure",
            m.ConnectionFailureArgs,
            m.ConnectionFailureResult,
            False,
        ),
        Function(_W + "monitorConnectionQuality", m.QualityArgs, m.QualityResult, True),
        Function(_W + "generateParticipantAccessToken", m.AccessTokenArgs, m.AccessToken, True),
        Function(_L + "createMeeting", m.CreateMeetingArgs, m.CreateMeetingResult, False),
        Function(_L + "addParticipant", m.AddParticipantArgs, m.AddParticipantResult, False),
        Function(_L + "startMeeting", m.MeetingArgs, m.StartMeetingResult, False),
        Function(_L + "endMeeting", m.MeetingArgs, m.EndMeetingResult, False),
        Function(_L + "joinMeeting", m.MeetingArgs, m.JoinMeetingResult, True),
        Function(_L + "leaveMeeting", m.MeetingArgs, m.Success, True),
        Function(_L + "getMeetingConnectionInfo", m.MeetingArgs, m.MeetingConnectionInfo, True),
        Function("meetings/queries/getMeeting", m.MeetingArgs, m.Meeting | None, True),
        Function(
            "meetings/queries/listMeetingParticipants",
            m.MeetingArgs,
            list[m.MeetingParticipant],
            True,
        ),
        Function("users/queries/getCurrentUser", EmptyArgs, m.User | None, True),
        Function(_T + "ingestTranscriptChunk", m.TranscriptChunkArgs, m.IngestResult, False),
        Function(_T + "getTranscriptChunks", m.TranscriptChunksArgs, list[m.TranscriptChunk], True),
    ]
}
