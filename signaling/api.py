"""Typed calls to the Connvo functions used by the agent, the workers and the load tester."""

from __future__ import annotations

from typing import Any

from signaling import functions as fn
from signaling import models as m
from signaling.client import DEFAULT_RETRY, CallObserver, ConvexClient, RetryPolicy, Transport
from signaling.functions import Function


class ConnvoAPI:
    """One user's view of a Connvo deployment. Cheap to create: the HTTP pool is shared."""

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        http: Transport | None = None,
        ca_file: str | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        observe: CallObserver | None = None,
    ) -> None:
        self.client = ConvexClient(
            url, token, http=http, ca_file=ca_file, retry=retry, observe=observe
        )

    def __repr__(self) -> str:
        return f"ConnvoAPI({self.client!r})"

    @property
    def url(self) -> str:
        return self.client.url

    async def _call(self, function: Function, **args: Any) -> Any:
        return await self.client.call(function, {k: v for k, v in args.items() if v is not None})

    # --- the room and the mesh -------------------------------------------------------------

    async def initialize_room(
        self, meeting_id: str, max_participants: int | None = None
    ) -> m.RoomConfig:
        return await self._call(
            fn.INITIALIZE_WEBRTC_ROOM, meetingId=meeting_id, maxParticipants=max_participants
        )

    async def create_session(self, meeting_id: str, session_id: str) -> m.CreateSessionResult:
        return await self._call(
            fn.CREATE_WEBRTC_SESSION, meetingId=meeting_id, sessionId=session_id
        )

    async def send_description(
        self,
        meeting_id: str,
        session_id: str,
        description: m.SessionDescription | dict[str, Any],
        target_user_id: str,
    ) -> None:
        await self._call(
            fn.EXCHANGE_SESSION_DESCRIPTION,
            meetingId=meeting_id,
            sessionId=session_id,
            description=description,
            targetUserId=target_user_id,
        )

    async def send_candidate(
        self,
        meeting_id: str,
        session_id: str,
        candidate: m.IceCandidate | dict[str, Any],
        target_user_id: str,
    ) -> None:
        await self._call(
            fn.EXCHANGE_ICE_CANDIDATE,
            meetingId=meeting_id,
            sessionId=session_id,
            candidate=candidate,
            targetUserId=target_user_id,
        )

    async def pending_signals(
        self, meeting_id: str, session_id: str | None = None, last_signal_id: str | None = None
    ) -> list[m.Signal]:
        return await self._call(
            fn.GET_PENDING_SIGNALS,
            meetingId=meeting_id,
            sessionId=session_id,
            lastSignalId=last_signal_id,
        )

    async def mark_processed(self, signal_ids: list[str]) -> None:
        await self._call(fn.MARK_SIGNALS_PROCESSED, signalIds=signal_ids)

    async def active_sessions(self, meeting_id: str) -> list[m.ActiveSession]:
        return await self._call(fn.GET_ACTIVE_SESSIONS, meetingId=meeting_id)

    async def update_session_state(
        self,
        meeting_id: str,
        session_id: str,
        state: m.SessionState,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        await self._call(
            fn.UPDATE_SESSION_STATE,
            meetingId=meeting_id,
            sessionId=session_id,
            state=state,
            metadata=metadata,
        )

    async def close_session(self, meeting_id: str, session_id: str) -> None:
        await self._call(fn.CLOSE_SESSION, meetingId=meeting_id, sessionId=session_id)

    async def report_failure(
        self,
        meeting_id: str,
        session_id: str,
        error_type: m.FailureType,
        details: str | None = None,
    ) -> m.ConnectionFailureResult:
        return await self._call(
            fn.HANDLE_CONNECTION_FAILURE,
            meetingId=meeting_id,
            sessionId=session_id,
            errorType=error_type,
            errorDetails=details,
        )

    async def report_quality(
        self, meeting_id: str, session_id: str, stats: m.QualityStats | dict[str, float]
    ) -> m.QualityResult:
        return await self._call(
            fn.MONITOR_CONNECTION_QUALITY, meetingId=meeting_id, sessionId=session_id, stats=stats
        )

    async def access_token(self, meeting_id: str, session_id: str | None = None) -> m.AccessToken:
        return await self._call(
            fn.GENERATE_PARTICIPANT_ACCESS_TOKEN, meetingId=meeting_id, sessionId=session_id
        )

    # --- meeting lifecycle -----------------------------------------------------------------

    async def create_meeting(self, title: str, **options: Any) -> m.CreateMeetingResult:
        return await self._call(fn.CREATE_MEETING, title=title, **options)

    async def add_participant(
        self, meeting_id: str, user_id: str, role: m.Role = "participant"
    ) -> m.AddParticipantResult:
        return await self._call(fn.ADD_PARTICIPANT, meetingId=meeting_id, userId=user_id, role=role)

    async def start_meeting(self, meeting_id: str) -> m.StartMeetingResult:
        return await self._call(fn.START_MEETING, meetingId=meeting_id)

    async def end_meeting(self, meeting_id: str) -> m.EndMeetingResult:
        return await self._call(fn.END_MEETING, meetingId=meeting_id)

    async def join_meeting(self, meeting_id: str) -> m.JoinMeetingResult:
        return await self._call(fn.JOIN_MEETING, meetingId=meeting_id)

    async def leave_meeting(self, meeting_id: str) -> m.Success:
        return await self._call(fn.LEAVE_MEETING, meetingId=meeting_id)

    async def connection_info(self, meeting_id: str) -> m.MeetingConnectionInfo:
        return await self._call(fn.GET_MEETING_CONNECTION_INFO, meetingId=meeting_id)

    async def get_meeting(self, meeting_id: str) -> m.Meeting | None:
        return await self._call(fn.GET_MEETING, meetingId=meeting_id)

    async def meeting_participants(self, meeting_id: str) -> list[m.MeetingParticipant]:
        return await self._call(fn.LIST_MEETING_PARTICIPANTS, meetingId=meeting_id)

    async def current_user(self) -> m.User | None:
        return await self._call(fn.GET_CURRENT_USER)

    # --- transcripts ------------------------------------------------------------------------

    async def ingest_transcript(self, chunk: m.TranscriptChunkArgs) -> m.IngestResult:
        return await self.client.call(fn.INGEST_TRANSCRIPT_CHUNK, chunk)

    async def transcript_chunks(
        self, meeting_id: str, from_sequence: int | None = None, limit: int | None = None
    ) -> list[m.TranscriptChunk]:
        return await self._call(
            fn.GET_TRANSCRIPT_CHUNKS,
            meetingId=meeting_id,
            fromSequence=from_sequence,
            limit=limit,
        )

    # --- the dev backend only ----------------------------------------------------------------

    async def configure_dev_room(self, meeting_id: str, **overrides: Any) -> Any:
        """Choose a meeting's room flags on the dev backend (`dev/configureRoom`; not in Connvo)."""
        return await self.client.run("dev/configureRoom", {"meetingId": meeting_id, **overrides})
