"""Join and leave one meeting: the Room owns the session, the peers, the signal pump, the events.

    async with Room(url, token, meeting_id, outgoing=Outgoing.synthetic()) as room:
        async for event in room.events():
            ...

The mesh convention it follows is written in README.md ("The mesh convention").
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any

from agent import aiortc_patches, quality
from agent.errors import FeatureDisabled, MeetingFull, UnsupportedProvider
from agent.events import ChatMessage, Event, ParticipantJoined, ParticipantLeft
from agent.features import Plan, plan
from agent.ice import ICE_ADDRESSES, IceOptions
from agent.media.counting import COUNTED, ReceiveTally
from agent.media.sources import Outgoing
from agent.peer import Mesh, Peer, new_chat
from agent.pump import PollSettings, SignalPump
from signaling.api import ConnvoAPI
from signaling.errors import ConnvoError, InvalidArgs, MeetingNotActive
from signaling.models import (
    ActiveSession,
    IceCandidate,
    SessionDescription,
    Signal,
)
from signaling.models import (
    Room as RoomConfig,
)

log = logging.getLogger(__name__)

CLOSE_GRACE = 1.0


@dataclass(frozen=True)
class RoomSettings:
    poll: PollSettings = field(default_factory=PollSettings)
    discovery_interval: float = 5.0
    """How often the session list is read again, to find peers and notice who left."""
    answer_timeout: float = 10.0
    """An offer unanswered this long is a stale session: dropped, the join goes on."""
    quality_interval: float = 5.0
    max_participants: int | None = None


@dataclass(frozen=True)
class JoinRequest:
    """What this participant sends and consumes; checked against the room's flags on join."""

    outgoing: Outgoing = field(default_factory=Outgoing)
    chat: bool | None = None
    screen_share: bool = False
    receive: frozenset[str] = frozenset({"audio", "video"})
    record: bool = False
    transcribe: bool = False
    decode: bool = True
    """False: remote media is counted (frames, bytes), never decoded; see agent.media.counting."""


@dataclass(frozen=True)
class JoinTarget:
    """Where and how a participant joins: the deployment, the user's token, the meeting, ICE
    and polling. Every command that joins (bots, workers) takes one."""

    url: str
    token: str = field(repr=False)  # never in logs or tracebacks
    meeting_id: str
    ice: IceOptions = field(default_factory=IceOptions)
    settings: RoomSettings = field(default_factory=RoomSettings)

    def room(self, request: JoinRequest) -> Room:
        return Room(
            self.url,
            self.token,
            self.meeting_id,
            request=request,
            ice=self.ice,
            settings=self.settings,
        )


class Room:
    def __init__(
        self,
        url: str,
        token: str,
        meeting_id: str,
        *,
        request: JoinRequest | None = None,
        ice: IceOptions | None = None,
        settings: RoomSettings | None = None,
        api: ConnvoAPI | None = None,
    ) -> None:
        aiortc_patches.install()  # before any RTCPeerConnection: loopback ICE, counting, lean RTP
        self.api = api or ConnvoAPI(url, token)
        self.meeting_id = meeting_id
        self.request = request or JoinRequest()
        self.ice = ice or IceOptions()
        self.settings = settings or RoomSettings()
        self.session_id = uuid.uuid4().hex
        self.user_id = ""
        self.config: RoomConfig | None = None
        self.plan: Plan | None = None
        self.peers: dict[str, Peer] = {}
        self.join_started: float | None = None
        self.first_connected: float | None = None
        self._stale_sessions: set[str] = set()
        self._early: dict[tuple[str, str], list[IceCandidate]] = {}
        self._me: ActiveSession | None = None
        self._subscribers: set[asyncio.Queue[Event | None]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pump: SignalPump | None = None
        self._pushed_state = "connecting"
        self._samples: dict[str, quality.Sample] = {}
        self.quality: dict[str, quality.Quality] = {}
        self._context = contextvars.copy_context()
        self._context.run(ICE_ADDRESSES.set, self.ice.addresses)
        self.timeline: dict[str, float] = {}
        """When each join phase was first reached (time.monotonic()), e.g. "connected"."""
        self.received: ReceiveTally | None = None
        if not self.request.decode:
            self.received = ReceiveTally(on_first=lambda kind: self._mark(f"first_{kind}"))
            self._context.run(COUNTED.set, self.received)
        self._joined = False
        self._leaving = False
        self.failures_reported = 0
        self.ice_restarts = 0

    def __repr__(self) -> str:
        return f"Room({self.meeting_id!r}, user={self.user_id!r}, peers={len(self.peers)})"

    # --- public surface ------------------------------------------------------------------------

    async def __aenter__(self) -> Room:
        await self.join()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.leave()

    @property
    def join_ms(self) -> float | None:
        """From the start of the join to the first peer connection being connected."""
        if self.join_started is None or self.first_connected is None:
            return None
        return 1000 * (self.first_connected - self.join_started)

    def events(self) -> AsyncIterator[Event]:
        """Events from now on, until the room is left. Call before join to see everything."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._subscribers.add(queue)
        return self._iterate(queue)

    async def _iterate(self, queue: asyncio.Queue[Event | None]) -> AsyncIterator[Event]:
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._subscribers.discard(queue)

    async def send_chat(self, text: str) -> ChatMessage:
        """Send to every peer whose chat channel is open; answers the message sent."""
        if self.plan is None or not self.plan.chat:
            raise FeatureDisabled("chat", "sending chat")
        message = new_chat(self.user_id, text)
        for peer in self.peers.values():
            peer.send_chat(message)
        return message

    def connected_peers(self) -> list[Peer]:
        return [p for p in self.peers.values() if p.state == "connected"]

    # --- join ----------------------------------------------------------------------------------

    async def join(self) -> None:
        try:
            await self._in_context(self._join())
        except BaseException:
            await self.leave()
            raise

    async def _join(self) -> None:
        self.join_started = time.monotonic()
        api, meeting = self.api, self.meeting_id
        room, me = await asyncio.gather(
            api.initialize_room(meeting, self.settings.max_participants), api.current_user()
        )
        assert me is not None, "an authenticated caller always has a user document"
        self._mark("room_initialized")
        self.user_id = me.id
        if room.provider != "webrtc":
            raise UnsupportedProvider(room.provider)
        self.config = room
        req = self.request
        self.plan = plan(
            room.features,
            chat=req.chat,
            send_audio=req.outgoing.audio is not None,
            send_video=req.outgoing.video is not None,
            screen_share=req.screen_share or req.outgoing.screen is not None,
            receive=req.receive,
            record=req.record,
            transcribe=req.transcribe,
        )
        await self._join_meeting()
        await api.create_session(meeting, self.session_id)
        self._mark("session_created")
        try:
            sessions = await api.active_sessions(meeting)
            self._check_room(sessions, room.features.maxParticipants)
        except BaseException:
            await self._close_session()
            raise
        self._joined = True
        self._mesh = Mesh(
            api=api,
            meeting_id=meeting,
            session_id=self.session_id,
            user_id=self.user_id,
            ice=self.ice,
            ice_servers=room.iceServers,
            plan=self.plan,
            outgoing=req.outgoing,
            emit=self._emit,
            changed=self._peer_changed,
            answer_timeout=self.settings.answer_timeout,
            mark=self._mark,
        )
        self._pump = SignalPump(api, meeting, self._on_signal, self._busy, self.settings.poll)
        self._spawn(self._pump.run())
        await self._discover(sessions)
        self._spawn(self._every(self.settings.discovery_interval, self._rediscover))
        self._spawn(self._every(self.settings.quality_interval, self._report_quality))

    async def _join_meeting(self) -> None:
        """The real joinMeeting refuses an inactive meeting as VALIDATION_ERROR; say it plainly."""
        try:
            await self.api.join_meeting(self.meeting_id)
        except InvalidArgs as e:
            meeting = await self.api.get_meeting(self.meeting_id)
            if meeting is not None and meeting.state != "active":
                raise MeetingNotActive(
                    "meetings/lifecycle/joinMeeting",
                    f"meeting {self.meeting_id} is {meeting.state}, not active",
                ) from e
            raise

    def _check_room(self, sessions: list[ActiveSession], limit: int) -> None:
        mine = [s for s in sessions if s.sessionId == self.session_id]
        self._me = mine[0] if mine else None
        others = {s.sessionId for s in sessions if s.userId != self.user_id}
        if len(others) + 1 > limit:
            raise MeetingFull(self.meeting_id, len(others), limit)

    async def _discover(self, sessions: list[ActiveSession]) -> None:
        """Offer to every session this one should offer to, and forget peers that left."""
        active = {s.sessionId for s in sessions}
        for peer in list(self.peers.values()):
            if peer.session_id not in active and not peer.negotiating:
                await self._drop(peer, "left")
        for session in sessions:
            if session.userId == self.user_id:
                if session.sessionId != self.session_id:  # our own crashed earlier session
                    await self._quietly(self.api.close_session(self.meeting_id, session.sessionId))
                continue
            known = self.peers.get(session.userId)
            if known is not None and known.session_id == session.sessionId:
                continue
            if session.sessionId in self._stale_sessions or not self._offers_to(session):
                continue
            if known is not None:
                await self._drop(known, "rejoined")
            await self._add_peer(session.userId, session.sessionId).offer()
            self._nudge()

    def _offers_to(self, other: ActiveSession) -> bool:
        """The session created later offers (ties: the greater sessionId)."""
        if self._me is None:
            return True
        return (self._me.createdAt, self.session_id) > (other.createdAt, other.sessionId)

    async def _rediscover(self) -> None:
        await self._discover(await self.api.active_sessions(self.meeting_id))

    # --- signals ---------------------------------------------------------------------------------

    async def _on_signal(self, signal: Signal) -> None:
        peer = self.peers.get(signal.fromUserId)
        data = signal.data
        key = (signal.fromUserId, signal.sessionId)
        if isinstance(data, SessionDescription) and data.type == "offer":
            self._mark("offer_received")
            if peer is None or peer.session_id != signal.sessionId:
                if signal.sessionId in self._stale_sessions:
                    return
                if peer is not None:
                    await self._drop(peer, "rejoined")
                peer = self._add_peer(signal.fromUserId, signal.sessionId)
            for candidate in self._early.pop(key, []):
                await peer.handle_candidate(candidate)
            await peer.handle_description(data)
        elif peer is None or peer.session_id != signal.sessionId:
            if isinstance(data, IceCandidate):
                early = self._early.setdefault(key, [])
                if len(early) < 64:
                    early.append(data)
        elif isinstance(data, SessionDescription):
            await peer.handle_description(data)
        else:
            await peer.handle_candidate(data)
        self._nudge()

    def _busy(self) -> bool:
        """Poll fast while negotiating, and while joining: offers are about to arrive."""
        joining = (
            self.first_connected is None
            and self.join_started is not None
            and (time.monotonic() - self.join_started < self.settings.answer_timeout)
        )
        return joining or any(p.negotiating for p in self.peers.values())

    def _nudge(self) -> None:
        if self._pump is not None:
            self._pump.nudge()

    # --- peers -----------------------------------------------------------------------------------

    def _add_peer(self, user_id: str, session_id: str) -> Peer:
        peer = Peer(self._mesh, user_id, session_id)
        self.peers[user_id] = peer
        return peer

    async def _drop(self, peer: Peer, reason: str) -> None:
        if self.peers.get(peer.user_id) is peer:
            del self.peers[peer.user_id]
        was_connected = peer.connected_at is not None
        await peer.close()
        self._samples.pop(peer.user_id, None)
        self.quality.pop(peer.user_id, None)
        if was_connected:
            self._emit(ParticipantLeft(peer.user_id, peer.session_id, reason))

    def _peer_changed(self, peer: Peer) -> None:
        if peer.stale:
            self._stale_sessions.add(peer.session_id)
            self._spawn(self._drop(peer, "no answer"))
        elif peer.state == "connected" and self.first_connected is None:
            self.first_connected = peer.connected_at
            self._mark("connected")
        if peer.state == "connected" and not peer.announced:
            peer.announced = True
            self._emit(ParticipantJoined(peer.user_id, peer.session_id))
        elif peer.state == "failed":
            self._spawn(self._recover(peer))
        elif peer.state == "closed" and self.peers.get(peer.user_id) is peer:
            self._spawn(self._closed(peer))
        self._spawn(self._push_state())
        self._nudge()

    async def _closed(self, peer: Peer) -> None:
        """The connection closed without us: the peer left, or the network failed (aiortc
        closes itself after ICE consent expires). A leaving peer closes its session right
        after its connection, so a session still active after a moment means a failure. The
        other side reports the same failure, which marks its session failed (not active) until
        it pushes its state again, so one absence is not yet a leave."""
        for _ in range(2):  # twice: the other side's own failure report hides it for a moment
            await asyncio.sleep(CLOSE_GRACE)
            active = {s.sessionId for s in await self.api.active_sessions(self.meeting_id)}
            if self.peers.get(peer.user_id) is not peer or peer.state != "closed":
                return  # replaced or renegotiated meanwhile
            if peer.session_id in active:
                await self._recover(peer)
                return
        await self._drop(peer, "left")

    async def _recover(self, peer: Peer) -> None:
        """Report the ICE failure; the offerer of the pair restarts when a retry is recommended.

        handleConnectionFailure marks the whole session failed, which would make every other
        peer drop us, so the session's real state is pushed again right after."""
        try:
            answer = await self.api.report_failure(
                self.meeting_id, self.session_id, "ice_failed", f"peer {peer.user_id}"
            )
            retry = answer.retryRecommended
            self._pushed_state = "failed"
        except ConnvoError as e:  # a backend that cannot take the report must not stop the retry
            log.warning("reporting the ICE failure failed (%s); restarting anyway", e)
            retry = True
        self.failures_reported += 1
        if retry and peer.offerer and self.peers.get(peer.user_id) is peer:
            self.ice_restarts += 1
            await peer.offer()
            self._nudge()
        await self._push_state()

    async def _push_state(self, state: str | None = None) -> None:
        states = {p.state for p in self.peers.values()}
        if state is None:
            state = (
                "connected"
                if "connected" in states
                else "disconnected"
                if "disconnected" in states
                else "connecting"
            )
        if state != self._pushed_state:
            self._pushed_state = state
            await self.api.update_session_state(self.meeting_id, self.session_id, state)

    async def _report_quality(self) -> None:
        measured: list[quality.Quality] = []
        for peer in self.connected_peers():
            if peer.pc is None:
                continue
            now = await quality.sample(peer.pc)
            before = self._samples.get(peer.user_id)
            self._samples[peer.user_id] = now
            if before is not None:
                self.quality[peer.user_id] = quality.between(before, now)
                measured.append(self.quality[peer.user_id])
        if measured:
            summary = quality.worst(measured)
            await self.api.report_quality(self.meeting_id, self.session_id, summary.as_stats())

    # --- leave -----------------------------------------------------------------------------------

    async def leave(self) -> None:
        """Close the peers, then closeSession and leaveMeeting; safe to call twice."""
        self._leaving = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for peer in list(self.peers.values()):
            await self._drop(peer, "we left")
        self.request.outgoing.stop()
        if self._joined:
            self._joined = False
            await self._close_session()
            await self._quietly(self.api.leave_meeting(self.meeting_id))
        for queue in self._subscribers:
            queue.put_nowait(None)

    async def _close_session(self) -> None:
        await self._quietly(self.api.close_session(self.meeting_id, self.session_id))

    # --- plumbing --------------------------------------------------------------------------------

    def _mark(self, phase: str) -> None:
        """Keeps the first time of each phase, for load tests' per-phase latencies."""
        self.timeline.setdefault(phase, time.monotonic())

    def _emit(self, event: Event) -> None:
        for queue in self._subscribers:
            queue.put_nowait(event)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        if self._leaving:
            coro.close()
            return
        task = asyncio.create_task(coro, context=self._context)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        """Logs what a background task raised; the coroutine runs unwrapped, so a task cancelled
        before it started leaves no "never awaited" coroutine behind."""
        self._tasks.discard(task)
        error = None if task.cancelled() else task.exception()
        if isinstance(error, ConnvoError):
            log.warning("%s", error)
        elif error is not None:
            log.error("background task failed", exc_info=error)

    async def _in_context(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return await asyncio.create_task(coro, context=self._context)

    async def _every(self, interval: float, action) -> None:
        while True:
            await asyncio.sleep(interval)
            await self._guard(action())

    @staticmethod
    async def _guard(coro: Coroutine[Any, Any, Any]) -> None:
        try:
            await coro
        except ConnvoError as e:
            log.warning("%s", e)
        except Exception:
            log.exception("background task failed")

    @staticmethod
    async def _quietly(coro: Coroutine[Any, Any, Any]) -> None:
        with contextlib.suppress(ConnvoError):
            await coro
