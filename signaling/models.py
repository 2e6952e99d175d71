"""Pydantic models of the Connvo functions we use, as published in connvo-openapi.yaml.

Args models forbid unknown fields (a typo must fail here, not on the server); result models
allow them, so a backend that grows a field does not break older agents.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Provider = Literal["webrtc", "getstream"]
SessionState = Literal["connecting", "connected", "disconnected", "failed", "closed"]
MeetingState = Literal["scheduled", "active", "concluded", "cancelled"]
Role = Literal["host", "co-host", "participant", "observer"]
QualityRating = Literal["excellent", "good", "fair", "poor"]
FailureType = Literal["ice_failed", "connection_timeout", "media_failed", "signaling_failed"]
Presence = Literal["invited", "joined", "left"]


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Result(BaseModel):
    model_config = ConfigDict(extra="allow")


# --- shared shapes ---------------------------------------------------------------------------


class IceServer(Result):
    urls: str | list[str]
    username: str | None = None
    credential: str | None = Field(default=None, repr=False)

    @property
    def url_list(self) -> list[str]:
        return [self.urls] if isinstance(self.urls, str) else list(self.urls)


class RoomFeatures(Result):
    chat: bool
    recording: bool
    transcription: bool
    screenSharing: bool
    maxParticipants: int


class MeetingFeatures(Result):
    recording: bool
    transcription: bool
    maxParticipants: int


class SessionDescription(Result):
    type: Literal["offer", "answer", "pranswer", "rollback"]
    sdp: str


class IceCandidate(Result):
    candidate: str
    sdpMLineIndex: int | None = None
    sdpMid: str | None = None
    usernameFragment: str | None = None


class QualityStats(Args):
    bitrate: float
    packetLoss: float
    latency: float
    jitter: float


class UserRef(Result):
    id: str = Field(alias="_id")
    displayName: str | None = None
    avatarUrl: str | None = None


class Success(Result):
    success: bool


# --- meetings/webrtc/index ---------------------------------------------------------------------


class MeetingArgs(Args):
    meetingId: str


class SessionArgs(MeetingArgs):
    sessionId: str


class InitializeRoomArgs(MeetingArgs):
    maxParticipants: int | None = None


class RoomConfig(Result):
    success: bool
    provider: Provider
    roomId: str
    iceServers: list[IceServer] | None = None
    features: RoomFeatures


class CreateSessionResult(Result):
    sessionId: str
    success: bool


class ExchangeDescriptionArgs(SessionArgs):
    description: SessionDescription
    targetUserId: str | None = None


class ExchangeCandidateArgs(SessionArgs):
    candidate: IceCandidate
    targetUserId: str | None = None


class PendingSignalsArgs(MeetingArgs):
    sessionId: str | None = None
    lastSignalId: str | None = None


class Signal(Result):
    id: str = Field(alias="_id")
    type: Literal["sdp", "ice"]
    fromUserId: str
    sessionId: str
    timestamp: float
    data: SessionDescription | IceCandidate


class MarkProcessedArgs(Args):
    signalIds: list[str]


class ActiveSession(Result):
    id: str = Field(alias="_id")
    creationTime: float = Field(alias="_creationTime")
    meetingId: str
    userId: str
    sessionId: str
    state: SessionState
    createdAt: float
    updatedAt: float
    user: UserRef
    connectionQuality: QualityRating | None = None
    lastMetricsAt: float | None = None
    metadata: dict[str, Any] | None = None


class UpdateSessionStateArgs(SessionArgs):
    state: SessionState
    metadata: dict[str, Any] | None = None


class ConnectionFailureArgs(SessionArgs):
    errorType: FailureType
    errorDetails: str | None = None


class ConnectionFailureResult(Result):
    success: bool
    retryRecommended: bool
    fallbackProvider: Provider | None = None


class QualityArgs(SessionArgs):
    stats: QualityStats


class QualityResult(Result):
    quality: QualityRating
    recommendations: list[str]
    shouldFallback: bool


class AccessTokenArgs(MeetingArgs):
    sessionId: str | None = None


class Permissions(Result):
    canKick: bool
    canMute: bool
    canRecord: bool
    canShare: bool


class AccessToken(Result):
    success: bool
    participantId: str
    provider: Provider
    roomId: str
    token: str = Field(repr=False)
    permissions: Permissions


# --- meetings/lifecycle, meetings/queries, users ---------------------------------------------


class CreateMeetingArgs(Args):
    title: str
    description: str | None = None
    scheduledAt: float | None = None
    duration: float | None = None
    participantEmails: list[str] | None = None
    recordingEnabled: bool | None = None
    transcriptionEnabled: bool | None = None
    meetingType: Literal["one-on-one", "small-group", "large-meeting", "webinar"] | None = None
    maxParticipants: int | None = None
    organizerId: str | None = None


class CreateMeetingResult(Result):
    meetingId: str
    webrtcReady: bool
    videoProvider: Provider
    features: MeetingFeatures


class AddParticipantArgs(MeetingArgs):
    userId: str
    role: Role


class AddParticipantResult(Result):
    participantId: str
    success: bool


class RoomInfo(Result):
    iceServers: list[IceServer] | None = None
    roomId: str | None = None


class StartMeetingResult(Result):
    success: bool
    webrtcReady: bool
    videoProvider: Provider
    roomInfo: RoomInfo | None = None


class EndMeetingResult(Result):
    success: bool
    duration: float | None = None


class JoinMeetingResult(Result):
    success: bool
    webrtcReady: bool


class ConnectionInfo(RoomInfo):
    streamToken: str | None = Field(default=None, repr=False)


class MeetingConnectionInfo(Result):
    success: bool
    videoProvider: Provider
    connectionInfo: ConnectionInfo
    features: MeetingFeatures


class Meeting(Result):
    id: str = Field(alias="_id")
    creationTime: float = Field(alias="_creationTime")
    organizerId: str
    title: str
    state: MeetingState
    activeWebRTCSessions: int
    createdAt: float
    updatedAt: float
    userRole: Literal["host", "participant", "observer"]
    userPresence: Presence
    description: str | None = None
    scheduledAt: float | None = None
    duration: float | None = None
    participantCount: int | None = None


class MeetingParticipant(Result):
    id: str = Field(alias="_id")
    creationTime: float = Field(alias="_creationTime")
    meetingId: str
    userId: str
    role: Literal["host", "participant", "observer"]
    presence: Presence
    createdAt: float
    user: UserRef
    webrtcConnected: bool
    webrtcSessionCount: int
    joinedAt: float | None = None
    leftAt: float | None = None


class User(Result):
    id: str = Field(alias="_id")
    creationTime: float = Field(alias="_creationTime")
    email: str
    isActive: bool
    workosUserId: str
    createdAt: float
    updatedAt: float
    displayName: str | None = None
    orgRole: str | None = None


# --- transcripts/ingestion ---------------------------------------------------------------------


class TranscriptChunkArgs(MeetingArgs):
    """A transcript chunk, as the transcriber makes it, the spool keeps it (JSON, these names) and
    ingestTranscriptChunk takes it: one shape end to end. Times are epoch ms."""

    text: str
    confidence: float
    startTime: float
    endTime: float
    speakerId: str | None = None
    language: str | None = None
    isInterim: bool | None = None


class IngestResult(Result):
    success: bool
    sequence: int
    bucketMs: float
    rateLimitRemaining: float


class TranscriptChunksArgs(MeetingArgs):
    bucketMs: float | None = None
    fromSequence: int | None = None
    limit: int | None = None


class TranscriptChunk(Result):
    id: str = Field(alias="_id")
    sequence: int
    text: str
    confidence: float
    startMs: float
    endMs: float
    wordCount: int
    createdAt: float
    speakerId: str | None = None
    language: str | None = None
