"""One load bot: join at its slot, wait until it is connected to every peer with chat open and
media flowing, chat once, stay, leave; and write down when each phase happened and what failed.

A bot that fails still leaves cleanly; its record says in which phase (the first one it did not
reach) and with which code (the ConnvoError code, the exception class, or ICE_FAILED / TIMEOUT).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from agent.errors import Replaced
from agent.events import (
    ChatMessage,
    ConnectionStateChanged,
    Event,
    ParticipantJoined,
    ParticipantLeft,
    TrackReceived,
)
from agent.ice import IceOptions
from agent.load.backend import CallLog
from agent.load.config import BotSpec, LoadConfig, MeetingPlan
from agent.load.http import LoadHTTP
from agent.load.metrics import bot_qoe
from agent.load.records import BotRecord
from agent.media.counting import received_streams
from agent.media.encoded import SharedOutgoing
from agent.media.qoe import StreamQoE
from agent.media.sources import Outgoing, PatternTrack, ToneTrack
from agent.presence import MEDIA_STOPPED
from agent.pump import PollSettings
from agent.room import JoinRequest, Room, RoomSettings
from signaling.api import ConnvoAPI

CHECK_EVERY = 0.2
QOE_EVERY = 2.0
AUDIO_FPS = 50  # 20 ms Opus frames


class MeetingState:
    """What the bots of one meeting in this worker know of each other (all of them, unless the
    meeting is spread over workers: then a peer elsewhere that failed early is waited for)."""

    def __init__(self, plan: MeetingPlan, t0: float = 0.0) -> None:
        self.plan = plan
        self.t0 = t0
        self.records: dict[int, BotRecord] = {}
        """Each bot's latest stay."""

    def expected_peers(self, me: int) -> int:
        """Everyone else (with stages: scheduled to be present now), less those who failed
        before having a session (nobody to connect to)."""
        now = time.time() - self.t0
        others = [
            spec.index
            for spec in self.plan.bots
            if spec.index != me
            and (spec.stays is None or any(a <= now < (b or 0.0) for a, b in spec.stays))
        ]
        gone = sum(
            1
            for i in others
            if (r := self.records.get(i)) is not None
            and r.failure_phase is not None
            and "session_created" not in r.phases
        )
        if any(spec.stays is not None for spec in self.plan.bots):
            return len(others) - gone  # stages pack whole meetings: the plan holds them all
        return self.plan.participants - 1 - gone  # spread: other workers hold some of them


class LoadBot:
    def __init__(
        self,
        spec: BotSpec,
        meeting: MeetingState,
        config: LoadConfig,
        worker: str,
        http: LoadHTTP,
        calls: CallLog,
        stay: tuple[float, float | None] | None = None,
        rejoin: int = 0,
    ) -> None:
        """`stay`: (join, leave) seconds from the start (leave None: `duration` once connected);
        default the spec's first. `rejoin`: how many stays of this user came before."""
        self.spec = spec
        self.meeting = meeting
        self.config = config
        self.stay = stay or spec.schedule()[0]
        plan = meeting.plan
        self.record = BotRecord(bot=spec.index, meeting=spec.meeting, meeting_id=plan.meeting_id)
        self.record.worker, self.record.stay = worker, rejoin
        meeting.records[spec.index] = self.record
        self.room = Room(
            plan.url,
            spec.token,
            plan.meeting_id,
            request=JoinRequest(
                outgoing=_outgoing(config),
                chat=True if config.chat else None,
                receive=frozenset(config.kinds),
                decode=config.decode,
            ),
            ice=_ice(config, spec.index),
            settings=RoomSettings(
                signals=config.signals,
                poll=PollSettings(config.poll_fast, config.poll_idle),
                discovery_interval=config.discovery_interval,
                quality_interval=config.quality_interval,
            ),
            api=ConnvoAPI(
                plan.url, spec.token, http=http, observe=calls.observer(self.record.functions)
            ),
            ca_file=plan.ca_file,
        )
        self._ice_failed = False
        self._chat_from: set[str] = set()
        self._first_frame: dict[str, float] = {}
        self._seen_streams: dict[int, tuple[str, str, StreamQoE]] = {}
        """Every stream received so far, by id: (userId, sessionId, its QoE)."""
        self._unreachable: set[tuple[str, str]] = set()
        """(userId, sessionId) of the peers the room dropped as unreachable."""
        self._tasks: list[asyncio.Task[None]] = []
        self._churn = asyncio.Event()
        self.ends_at: float | None = None
        """Epoch s when the stay is to end, once it started."""

    def churn(self) -> None:
        """Leave now, to rejoin (`--churn`): the record says so."""
        self.record.churned = True
        self._churn.set()

    @property
    def staying(self) -> bool:
        """Connected to everyone and staying, not leaving yet."""
        return self.ends_at is not None and not self._churn.is_set() and self.record.left_at is None

    async def run(self, t0: float) -> BotRecord:
        await asyncio.sleep(max(0.0, t0 + self.stay[0] - time.time()))
        record = self.record
        record.started_at = time.time()
        watcher = asyncio.create_task(self._watch(self.room.events()))
        try:
            await self._join_and_wait()
            if record.ok:
                await self._chat()
                await self._stay(t0)
                self._judge()
                self._collect()
            if self.room.stats().replaced:  # two runs sharing tokens: each user is one participant
                self.record.fail("in_meeting", "REPLACED", str(Replaced()))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._fail(getattr(e, "code", None) or type(e).__name__, str(e))
        finally:
            await asyncio.shield(self._leave(watcher))
        return record

    async def _join_and_wait(self) -> None:
        await self.room.join()
        self.record.user_id = self.room.user_id
        deadline = time.monotonic() + self.config.join_timeout
        while not self._ready():
            if time.monotonic() > deadline:
                self._fail("ICE_FAILED" if self._ice_failed else "TIMEOUT", "")
                return
            await asyncio.sleep(CHECK_EVERY)
            self._note_phases()
            self._streams()  # a peer may die before the stay: its streams are still counted
        self.record.ok, self.record.ready_at = True, time.time()

    def _ready(self) -> bool:
        self._note_phases()
        expected = self.meeting.expected_peers(self.spec.index)
        self.record.peers_expected = expected
        self.record.peers_connected = len(self.room.connected_peers())
        if self.record.peers_connected < expected:
            return False
        return self._missing() is None

    def _required(self) -> list[str]:
        if self.record.peers_expected == 0:
            return ["room_initialized", "session_created"]
        phases = ["room_initialized", "session_created", "offer", "ice_connected", "connected"]
        if self.config.chat:
            phases.append("chat_open")
        return phases + [f"first_{kind}" for kind in self.config.kinds]

    def _missing(self) -> str | None:
        reached = self.record.phases
        for phase in self._required():
            if phase == "offer":
                if "offer_sent" not in reached and "offer_received" not in reached:
                    return phase
            elif phase not in reached:
                return phase
        return None

    def _note_phases(self) -> None:
        start = self.room.stats().join_started
        if start is None:
            return
        times = {**self.room.timeline, **self._first_frame}
        self.record.phases = {p: round(1000 * (t - start), 1) for p, t in times.items()}

    def _fail(self, code: str, message: str) -> None:
        self._note_phases()
        self.record.fail(self._missing() or "connected", code, message)

    async def _watch(self, events: AsyncIterator[Event]) -> None:
        """Subscribed before the join starts, so even an early leave ends it."""
        async for event in events:
            if isinstance(event, ConnectionStateChanged) and event.state == "failed":
                self._ice_failed = True
            elif isinstance(event, ParticipantLeft) and event.reason == "unreachable":
                self._unreachable.add((event.user_id, event.session_id))
            elif isinstance(event, ParticipantJoined):
                self._back(event.user_id)
            elif isinstance(event, ChatMessage):
                self._chat_from.add(event.sender)
            elif isinstance(event, TrackReceived) and self.config.decode:
                self._tasks.append(asyncio.create_task(self._first(event.track)))

    async def _first(self, track) -> None:
        """Decoding bots: the first decoded frame of each kind (counting rooms mark it
        themselves)."""
        async for _frame in track.frames():
            self._first_frame.setdefault(f"first_{track.kind}", time.monotonic())
            return

    async def _chat(self) -> None:
        if self.config.chat and self.record.peers_expected:
            await self.room.send_chat(f"hello from bot {self.spec.index}")
            self.record.chat_sent = 1

    async def _stay(self, t0: float) -> None:
        """The bot's stay, its QoE sampled every QOE_EVERY seconds for the report's plot; until
        the stay's end, or a churn."""
        leave = self.stay[1]
        self.ends_at = time.time() + self.config.duration if leave is None else t0 + leave
        while (left := self.ends_at - time.time()) > 0 and not self._churn.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(QOE_EVERY, left)):
                    await self._churn.wait()
            streams = self._streams()
            moses = [q.mos() for _, q in streams if q.kind == "audio"]
            known = [m for m in moses if m is not None]
            freezes = sum(q.freeze_count for _, q in streams)
            self.record.qoe_timeline.append((time.time(), min(known, default=None), freezes))

    def _streams(self) -> list[tuple[str, StreamQoE]]:
        """The streams received now; each is also remembered, so one whose sender left before
        this bot's stay ended is still reported."""
        now = [
            (user, peer.session_id, q)
            for user, peer in self.room.peers.items()
            if peer.pc is not None
            for q in received_streams(peer.pc)
        ]
        self._seen_streams.update((id(q), (user, session, q)) for user, session, q in now)
        return [(user, q) for user, _, q in now]

    def _back(self, user: str) -> None:
        """A peer dropped as unreachable connects again (after an outage, or restarted): its
        old streams were frozen from their last frame until now, not until the end."""
        gone = {pair for pair in self._unreachable if pair[0] == user}
        if not gone:
            return
        now = time.monotonic()
        for u, session, q in self._seen_streams.values():
            if (u, session) in gone:
                q.close(now)
        self._unreachable -= gone

    def _collect_qoe(self) -> None:
        """Every stream's summary. A stream still received, or one of a peer dropped as
        unreachable (it died: nobody said it left), is frozen from its last frame to now if it
        stopped; one of a peer that left ended with it."""
        now, sent = time.monotonic(), {"audio": AUDIO_FPS, "video": self.config.fps}
        received = {id(q) for _, q in self._streams()}
        for key, (user, session, q) in self._seen_streams.items():
            if key in received or (user, session) in self._unreachable:
                q.close(now)
        for user, _, q in self._seen_streams.values():
            kinds = self.record.streams.setdefault(user, {})
            name = q.kind if q.kind not in kinds else f"{q.kind}{len(kinds) + 1}"
            kinds[name] = q.summary(sent[q.kind])
        self.record.qoe = bot_qoe(self.record.streams)

    def _judge(self) -> None:
        """A success met everyone who was there until the end (agent.presence), and their media
        was still arriving."""
        if problems := self.room.stats().problems:
            self.record.fail("in_meeting", "PEER_LOST", "; ".join(problems))
        elif stopped := self._media_stopped():
            self.record.fail("in_meeting", "MEDIA_STOPPED", stopped)

    def _media_stopped(self) -> str | None:
        now = time.monotonic()
        for user, q in self._streams():
            peer = self.room.peers.get(user)
            quiet = now - q.last_at if q.last_at is not None else 0.0
            if peer is not None and peer.state == "connected" and quiet > MEDIA_STOPPED:
                return f"no {q.kind} from {user} for the last {quiet:.0f} s"
        return None

    def _collect(self) -> None:
        record, room = self.record, self.room
        stats = room.stats()
        record.peers_connected = max(record.peers_connected, len(room.connected_peers()))
        record.chat_received = len(self._chat_from)
        record.signals, record.signal_polls = stats.signals, stats.signal_polls
        self._collect_qoe()
        record.quality = {user: q.as_stats() for user, q in stats.quality.items()}
        if room.received is not None:
            for kind, count in room.received.kinds.items():
                setattr(record, f"{kind}_frames", count.frames)
                setattr(record, f"{kind}_bytes", count.bytes)
        else:
            for peer in room.peers.values():
                record.audio_frames += peer.frames_received("audio")
                record.video_frames += peer.frames_received("video")

    async def _leave(self, watcher: asyncio.Task[None]) -> None:
        for task in self._tasks:
            task.cancel()
        self.record.push_delays = list(self.room.stats().push_delays)
        await self.room.leave()
        self.record.left_at = time.time()
        await asyncio.gather(watcher, *self._tasks, return_exceptions=True)


def _outgoing(config: LoadConfig) -> Outgoing:
    audio, video = "audio" in config.kinds, "video" in config.kinds
    if config.shared_media:
        return SharedOutgoing.synthetic(audio, video, config.video_size, config.fps)
    return Outgoing(
        audio=ToneTrack() if audio else None,
        video=PatternTrack(*config.video_size, config.fps) if video else None,
    )


def _ice(config: LoadConfig, index: int) -> IceOptions:
    if index in config.relay_only_bots:
        return IceOptions(addresses=config.ice_addresses, policy="relay")
    return IceOptions(addresses=config.ice_addresses)
