"""Join and leave one meeting: the Room owns the session, the mesh, the signal pump, the events.

    async with Room(url, token, meeting_id, outgoing=Outgoing.synthetic()) as room:
        async for event in room.events():
            ...

The mesh convention it follows is written in README.md ("The mesh convention"); the peers and
the rules about them live in `agent.mesh`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from agent import aiortc_patches
from agent.chat import new_chat
from agent.errors import FeatureDisabled, MeetingFull, UnsupportedProvider
from agent.events import ChatMessage, Event, EventBus, SessionReplaced
from agent.features import JoinRequest, Plan, plan
from agent.ice import ICE_ADDRESSES, IceOptions
from agent.media.counting import COUNTED, ReceiveTally
from agent.media.passthrough import ENCODED
from agent.mesh import Mesh, MeshHooks
from agent.peer import LocalSide, Peer
from agent.pump import SignalPump
from agent.settings import RoomSettings
from agent.stats import Counters, RoomStats
from agent.tasks import Background, quietly
from signaling import functions as fn
from signaling.api import ConnvoAPI
from signaling.errors import ConnvoError, InvalidArgs, MeetingNotActive, TLSError, Unauthorized
from signaling.models import ActiveSession, RoomConfig
from signaling.sync import Subscription, SyncClient, SyncUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JoinTarget:
    """Where and how a participant joins: the deployment, the user's token, the meeting, ICE
    and polling. Every command that joins (bots, workers) takes one."""

    url: str
    token: str = field(repr=False)  # never in logs or tracebacks
    meeting_id: str
    ice: IceOptions = field(default_factory=IceOptions)
    settings: RoomSettings = field(default_factory=RoomSettings)
    ca_file: str | None = None  # the CA bundle for https (None: $SSL_CERT_FILE, else certifi's)

    def room(self, request: JoinRequest) -> Room:
        return Room(
            self.url,
            self.token,
            self.meeting_id,
            request=request,
            ice=self.ice,
            settings=self.settings,
            api=ConnvoAPI(self.url, self.token, ca_file=self.ca_file),
            ca_file=self.ca_file,
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
        ca_file: str | None = None,
    ) -> None:
        aiortc_patches.install()  # before any RTCPeerConnection: loopback ICE, counting, lean RTP
        self.api = api or ConnvoAPI(url, token, ca_file=ca_file)
        self.meeting_id = meeting_id
        self.session_id = uuid.uuid4().hex
        self.request = request or JoinRequest()
        self.ice = ice or IceOptions()
        self.settings = settings or RoomSettings()
        self._user_id = ""
        self._config: RoomConfig | None = None
        self._plan: Plan | None = None
        self._mesh: Mesh | None = None
        self._pump: SignalPump | None = None
        self._sync: SyncClient | None = None
        self._pushed_signals: Subscription | None = None
        self._pushed_sessions: Subscription | None = None
        self._sessions_changed = asyncio.Event()
        self._events = EventBus()
        self._timeline: dict[str, float] = {}
        self._counters = Counters()
        self._join_started: float | None = None
        self._replaced_by: str | None = None
        self._leaving: asyncio.Task[None] | None = None
        self._joined = False
        self._context = contextvars.copy_context()
        self._context.run(ICE_ADDRESSES.set, self.ice.addresses)
        self._background = Background(self._context)
        self._received: ReceiveTally | None = None
        if not self.request.decode:
            self._received = ReceiveTally(on_first=lambda kind: self._mark(f"first_{kind}"))
            self._context.run(COUNTED.set, self._received)
        self._context.run(ENCODED.set, self.request.encoded)

    def __repr__(self) -> str:
        return f"Room({self.meeting_id!r}, user={self._user_id!r}, peers={len(self.peers)})"

    # --- public surface ------------------------------------------------------------------------

    async def __aenter__(self) -> Room:
        await self.join()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.leave()

    @property
    def user_id(self) -> str:
        return self._user_id

    @property
    def config(self) -> RoomConfig | None:
        """The room as initializeWebRTCRoom answered it."""
        return self._config

    @property
    def plan(self) -> Plan | None:
        return self._plan

    @property
    def peers(self) -> Mapping[str, Peer]:
        """Peers by remote userId (a read-only view)."""
        return self._mesh.peers if self._mesh is not None else MappingProxyType({})

    @property
    def timeline(self) -> Mapping[str, float]:
        """When each join phase was first reached (time.monotonic()), e.g. "connected"."""
        return MappingProxyType(self._timeline)

    @property
    def received(self) -> ReceiveTally | None:
        """What the counting receivers got, for a room joined with `decode=False`."""
        return self._received

    def stats(self) -> RoomStats:
        """This moment of the room: a frozen snapshot, for summaries, load records and tests."""
        counters, mesh = self._counters, self._mesh
        return RoomStats(
            user_id=self._user_id,
            session_id=self.session_id,
            signals="push" if self._sync is not None and self._sync.live else "poll",
            signal_polls=counters.signal_polls,
            signals_pushed=counters.signals_pushed,
            backend_lost=self._pump is not None and counters.reading_fails,
            replaced=self._replaced_by is not None,
            failures_reported=counters.failures_reported,
            ice_restarts=counters.ice_restarts,
            push_delays=tuple(counters.push_delays),
            join_started=self._join_started,
            connected_at=self._timeline.get("connected"),
            quality=MappingProxyType(dict(mesh.quality) if mesh is not None else {}),
            outcomes=mesh.outcomes() if mesh is not None else (),
        )

    def events(self) -> AsyncIterator[Event]:
        """Events from now on, until the room is left (see EventBus). Call before join to see
        everything."""
        return self._events.subscribe()

    async def send_chat(self, text: str) -> ChatMessage:
        """Send to every peer (now, or when its channel opens); answers the message sent.
        Raises InvalidChat (ChatTooLarge past agent.chat.MAX_TEXT), FeatureDisabled without chat."""
        if self._plan is None:
            raise RuntimeError("join the room before sending chat")
        if not self._plan.chat:
            raise FeatureDisabled("chat", "sending chat")
        message = new_chat(self._user_id, text)
        if self._mesh is not None:
            self._mesh.send_chat(message)
        return message

    def connected_peers(self) -> list[Peer]:
        return [p for p in self.peers.values() if p.state == "connected"]

    # --- join ----------------------------------------------------------------------------------

    async def join(self) -> None:
        """Joins once: a Room that joined (or tried to) and left is done; make a new one."""
        if self._join_started is not None:
            raise RuntimeError("this Room has joined already; a new join needs a new Room")
        try:
            await self._in_context(self._join())
        except BaseException:
            await self.leave()
            raise

    async def _join(self) -> None:
        self._join_started = time.monotonic()
        api, meeting = self.api, self.meeting_id
        room, me, _ = await asyncio.gather(
            api.initialize_room(meeting, self.settings.max_participants),
            api.current_user(),
            self._subscribe(),
        )
        assert me is not None, "an authenticated caller always has a user document"
        self._mark("room_initialized")
        self._user_id = me.id
        if room.provider != "webrtc":
            raise UnsupportedProvider(room.provider)
        self._config = room
        self._plan = plan(room.features, self.request)
        await self._join_meeting()
        asked = time.time()
        await api.create_session(meeting, self.session_id)
        created = 1000 * (asked + time.time()) / 2  # by our clock, give or take half a trip
        self._mark("session_created")
        try:
            sessions = await api.active_sessions(meeting)
            self._check_room(sessions, room.features.maxParticipants)
        except BaseException:
            await self._close_session()
            raise
        mine = next((s for s in sessions if s.sessionId == self.session_id), None)
        self._joined = True
        local = LocalSide(
            user_id=self._user_id,
            plan=self._plan,
            outgoing=self.request.outgoing,
            ice=self.ice,
            ice_servers=tuple(room.iceServers or ()),
            answer_timeout=self.settings.answer_timeout,
            clock_offset_ms=mine.createdAt - created if mine is not None else 0.0,
        )
        hooks = MeshHooks(
            emit=self._events.emit,
            spawn=self._background.spawn,
            nudge=self._nudge,
            mark=self._mark,
            replaced=self._replace,
            rediscover=self._sessions_changed.set,
        )
        mesh = Mesh(
            api,
            meeting,
            self.session_id,
            local,
            hooks,
            self._counters,
            dead_after=self.settings.dead_after,
            stale_retry=self.settings.stale_retry,
        )
        self._mesh = mesh
        self._pump = SignalPump(
            api,
            meeting,
            mesh.on_signal,
            self._busy,
            self.settings.poll,
            counters=self._counters,
            pushed=self._pushed_signals,
            clock_offset_ms=local.clock_offset_ms,
        )
        self._background.spawn(self._pump.run())
        await mesh.discover(sessions)
        self._background.spawn(self._discovery(mesh))
        self._background.every(self.settings.quality_interval, mesh.check_health)

    async def _subscribe(self) -> None:
        """Opens the sync socket and subscribes to this user's signals and the session list,
        unless told to poll; a deployment without the sync protocol is polled instead."""
        if self.settings.signals == "poll":
            return
        self._sync = self.api.client.sync_client()
        args = {"meetingId": self.meeting_id}
        try:
            await self._sync.connect(retry=True)  # the network may come back; these would not
            self._pushed_signals = await self._sync.subscribe(
                fn.GET_PENDING_SIGNALS, args, self._nudge
            )
            self._pushed_sessions = await self._sync.subscribe(
                fn.GET_ACTIVE_SESSIONS, args, self._sessions_changed.set
            )
        except (SyncUnavailable, TLSError, Unauthorized) as e:
            log.info("signals are polled: %s", e)
            await self._sync.close()
            self._sync = self._pushed_signals = self._pushed_sessions = None

    async def _join_meeting(self) -> None:
        """The real joinMeeting refuses an inactive meeting as VALIDATION_ERROR; say it plainly."""
        try:
            await self.api.join_meeting(self.meeting_id)
        except InvalidArgs as e:
            meeting = await self.api.get_meeting(self.meeting_id)
            if meeting is not None and meeting.state != "active":
                raise MeetingNotActive(
                    fn.JOIN_MEETING.path,
                    f"meeting {self.meeting_id} is {meeting.state}, not active",
                ) from e
            raise

    def _check_room(self, sessions: list[ActiveSession], limit: int) -> None:
        others = {s.userId for s in sessions if s.userId != self._user_id}  # users, not sessions
        if len(others) + 1 > limit:
            raise MeetingFull(self.meeting_id, len(others), limit)

    async def _discovery(self, mesh: Mesh) -> None:
        """Meets the session list again each time it is pushed; while nothing is pushed, reads
        it every discovery_interval."""
        while True:
            self._sessions_changed.clear()
            pushed = self._pushed_sessions
            try:
                if pushed is not None and pushed.live and pushed.error is None:
                    await mesh.discover(pushed.value)
                    await self._sessions_changed.wait()
                    continue
                await mesh.discover(await self.api.active_sessions(self.meeting_id))
            except ConnvoError as e:
                log.warning("%s", e)
            except Exception:  # as Background.every: one bad pass must not end discovery
                log.exception("discovery failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.discovery_interval):
                    await self._sessions_changed.wait()

    def _busy(self) -> bool:
        """Poll fast while negotiating, and while joining: offers are about to arrive."""
        started = self._join_started
        joining = (
            "connected" not in self._timeline
            and started is not None
            and time.monotonic() - started < self.settings.answer_timeout
        )
        return joining or (self._mesh is not None and self._mesh.busy())

    def _nudge(self) -> None:
        if self._pump is not None:
            self._pump.nudge()

    def _replace(self, by_session_id: str) -> None:
        """A newer session of this user is here: it closes ours, we go quietly."""
        if self._replaced_by is not None:
            return
        self._replaced_by = by_session_id
        log.warning("replaced by a newer session of this user; leaving")
        self._events.emit(SessionReplaced(by_session_id))
        self._spawn_leave()

    # --- leave -----------------------------------------------------------------------------------

    async def leave(self) -> None:
        """Close the peers, then closeSession and leaveMeeting; safe to call twice, and while
        the room leaves by itself. A replaced session does not leave the meeting: the user is
        still in it, from the newer session."""
        await asyncio.shield(self._spawn_leave())

    def _spawn_leave(self) -> asyncio.Task[None]:
        if self._leaving is None:
            self._leaving = asyncio.create_task(self._leave(), context=self._context)
        return self._leaving

    async def _leave(self) -> None:
        await self._background.cancel()
        if self._sync is not None:
            await self._sync.close()
        if self._mesh is not None:
            await self._mesh.close()
        self.request.outgoing.stop()
        if self._joined:
            self._joined = False
            await self._close_session()
            if self._replaced_by is None:
                await quietly(self.api.leave_meeting(self.meeting_id))
        self._events.close()

    async def _close_session(self) -> None:
        await quietly(self.api.close_session(self.meeting_id, self.session_id))

    # --- plumbing --------------------------------------------------------------------------------

    def _mark(self, phase: str) -> None:
        """Keeps the first time of each phase, for load tests' per-phase latencies."""
        self._timeline.setdefault(phase, time.monotonic())

    async def _in_context(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return await asyncio.create_task(coro, context=self._context)
