"""The mesh of one room: every peer, and the rules of the README's mesh convention that decide
when a peer is made, replaced, recovered or dropped.

Peers report typed transitions (`agent.peer.Transition`); the Mesh answers them here and in no
other place. Signals reach it from the pump and session lists from discovery. It holds the one
buffer of candidates that arrive before the description they belong to, and remembers sessions
that never answered, to offer to them again after a back-off. It reports the session's health to
the backend (state, quality, ICE failures) and notices peers that went silent. It talks back to
the Room only through `MeshHooks`.

What a remote can make it hold is bounded: early candidates (sessions and candidates per
session), chat outboxes, stale sessions, and peers (one per remote user).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription

from agent import quality
from agent.events import ChatMessage, Event, ParticipantJoined, ParticipantLeft
from agent.peer import LocalSide, Peer, Transition, check_sdp
from agent.presence import Ledger, Outcome
from agent.stats import Counters
from agent.tasks import quietly
from signaling import convention
from signaling.api import ConnvoAPI
from signaling.errors import ConnvoError
from signaling.models import ActiveSession, IceCandidate, SessionDescription, SessionState, Signal

log = logging.getLogger(__name__)

CLOSE_GRACE = 1.0
MAX_EARLY_SESSIONS = convention.MAX_EARLY_SESSIONS
MAX_EARLY_CANDIDATES = convention.MAX_EARLY_CANDIDATES
"""Per session; a browser trickles a few dozen at most."""
MAX_CANDIDATE = convention.MAX_CANDIDATE
"""Characters of one candidate line; real ones are about 100."""
MAX_STALE = convention.MAX_STALE
MAX_STALE_RETRY = convention.STALE_RETRY_MAX
"""Seconds: the longest wait between two offers to a session that never answers."""
RESTART_WAIT = (0.5, 8.0)
"""Seconds before another ICE restart of a peer that has not connected since the last, doubling."""
_PUSHED_STATES: tuple[SessionState, ...] = ("connected", "disconnected")
"""The session's state is the first of these that a peer is in, else connecting."""


@dataclass(frozen=True, kw_only=True)
class MeshHooks:
    """What the mesh asks of its room."""

    emit: Callable[[Event], None]
    spawn: Callable[[Coroutine[Any, Any, Any]], None]
    nudge: Callable[[], None]
    """Wake the signal pump: an answer or a candidate is about to arrive."""
    mark: Callable[[str], None]
    replaced: Callable[[str], None]
    """A newer session of this user is in the meeting (its sessionId): this one must go."""
    rediscover: Callable[[], None]
    """Meet the session list again: an offer is due that no change of the list would bring."""


class Mesh:
    def __init__(
        self,
        api: ConnvoAPI,
        meeting_id: str,
        session_id: str,
        local: LocalSide,
        hooks: MeshHooks,
        counters: Counters,
        *,
        dead_after: float,
        stale_retry: float,
    ) -> None:
        self._api = api
        self._meeting_id = meeting_id
        self._session_id = session_id
        self._local = local
        self._hooks = hooks
        self._dead_after = dead_after
        self._stale_retry = stale_retry
        self._me: ActiveSession | None = None
        self._peers: dict[str, Peer] = {}
        self._announced: set[Peer] = set()
        self._early: dict[tuple[str, str], list[IceCandidate]] = {}
        self._stale: dict[str, tuple[float, float]] = {}
        """Sessions that never answered: when to offer again (time.monotonic()), and the wait."""
        self._sessions: dict[str, ActiveSession] = {}
        """The active sessions by sessionId, from the last session list read."""
        self._alive_at: dict[Peer, float] = {}
        self._samples: dict[Peer, quality.Sample] = {}
        self._quality: dict[str, quality.LinkQuality] = {}
        self._pushed_state: SessionState = "connecting"
        self._counters = counters
        self._ledger = Ledger()
        self._restart_wait: dict[str, float] = {}
        """Seconds before the next ICE restart of each peer that failed since it connected."""

    @property
    def peers(self) -> Mapping[str, Peer]:
        """Peers by remote userId (a read-only view)."""
        return MappingProxyType(self._peers)

    @property
    def quality(self) -> Mapping[str, quality.LinkQuality]:
        """The last measured quality of each connected peer, by userId."""
        return MappingProxyType(self._quality)

    def outcomes(self) -> tuple[Outcome, ...]:
        """Every remote user met so far, and what became of its connections."""
        return self._ledger.outcomes()

    def busy(self) -> bool:
        """An answer or trickled candidates are due: the pump should poll fast."""
        return any(p.awaiting_signals for p in self._peers.values())

    def is_stale(self, session_id: str) -> bool:
        return session_id in self._stale

    def send_chat(self, message: ChatMessage) -> None:
        for peer in self._peers.values():
            peer.send_chat(message)

    # --- discovery -----------------------------------------------------------------------------

    async def discover(self, sessions: list[ActiveSession]) -> None:
        """Offer to every session this one should offer to, forget peers that left, close older
        sessions of our own user, and give way to a newer one."""
        if await self._own_sessions(sessions):
            return
        active = {s.sessionId for s in sessions}
        for peer in list(self._peers.values()):
            if peer.session_id not in active and not peer.negotiating:
                await self._drop(peer, "left")
        for session in sessions:
            if not self._offer_due(session):
                continue
            if (known := self._peers.get(session.userId)) is not None:
                await self._drop(known, "rejoined")
            await self._add(session.userId, session.sessionId).offer()
            self._hooks.nudge()

    def _offer_due(self, session: ActiveSession) -> bool:
        """This session offers to `session` now: another user's, earlier than ours (the later
        one offers), not older than the user's current peer, and not a stale session still
        waiting for its retry."""
        if session.userId == self._local.user_id or self._is_newer(session):
            return False
        known = self._peers.get(session.userId)
        if known is not None and not self._later(session, known.session_id):
            return False  # the current peer's session, or an older one of the same user
        retry = self._stale.get(session.sessionId)
        return retry is None or retry[0] <= time.monotonic()

    async def _own_sessions(self, sessions: list[ActiveSession]) -> bool:
        """One user, one session, the newest: close older sessions of our user (a crashed or
        restarted client); answers True when a newer one exists and this one must go."""
        self._sessions = {s.sessionId: s for s in sessions}
        self._me = next((s for s in sessions if s.sessionId == self._session_id), self._me)
        mine = [s for s in sessions if s.userId == self._local.user_id]
        if newer := [s for s in mine if self._is_newer(s)]:
            self._hooks.replaced(newer[0].sessionId)
            return True
        for session in mine:
            if session.sessionId != self._session_id:
                log.info("closing an older session of this user (%s)", session.sessionId)
                await quietly(self._api.close_session(self._meeting_id, session.sessionId))
        return False

    def _is_newer(self, other: ActiveSession) -> bool:
        """Sessions are ordered by createdAt, ties by sessionId; the later one offers."""
        if self._me is None:
            return False
        return (other.createdAt, other.sessionId) > (self._me.createdAt, self._session_id)

    # --- signals -------------------------------------------------------------------------------

    async def on_signal(self, signal: Signal) -> None:
        user, session, data = signal.fromUserId, signal.sessionId, signal.data
        if user == self._local.user_id:
            return  # never a peer of our own user
        if isinstance(data, IceCandidate):
            await self._candidate(user, session, data)
            return
        check_sdp(data.sdp)  # before anything is built or looked up
        if data.type == "offer":
            self._hooks.mark("offer_received")
            peer = await self._peer_for_offer(user, session)
        else:
            peer = self._current(user, session)
        if peer is not None:
            await self._negotiate(peer, data, signal.timestamp)
        self._hooks.nudge()

    async def _peer_for_offer(self, user: str, session: str) -> Peer | None:
        """An offer is proof of life: even a stale or dropped session comes back with one.
        A session of another user is never taken on. An offer replaces the user's current peer
        only from a newer active session: an older one is a process on its way out, which must
        not take the user's place back."""
        if (peer := self._current(user, session)) is not None:
            return peer
        if session not in self._sessions:  # created since the last read
            self._sessions = {
                s.sessionId: s for s in await self._api.active_sessions(self._meeting_id)
            }
        owner = self._sessions.get(session)
        if owner is not None and owner.userId != user:
            log.warning("an offer from %s claims the session of %s: ignored", user, owner.userId)
            return None
        if (old := self._peers.get(user)) is not None:
            if owner is None or not self._later(owner, old.session_id):
                log.info("offer from an older or closed session of %s ignored", user)
                return None
            await self._drop(old, "rejoined")
        self._stale.pop(session, None)
        return self._add(user, session)

    def _later(self, new: ActiveSession, old: str) -> bool:
        before = self._sessions.get(old)
        return before is None or (new.createdAt, new.sessionId) > (before.createdAt, old)

    async def _negotiate(
        self, peer: Peer, description: SessionDescription, stored_at: float
    ) -> None:
        """A description that fails leaves no half-built peer behind (a ghost would keep the
        pump polling fast for the rest of the meeting)."""
        try:
            await peer.handle_description(description, stored_at)
        except Exception:
            if peer.state != "connected":
                if peer.offerer:  # our offer got an answer that fails: as one never answered
                    self._remember_stale(peer.session_id)
                await self._drop(peer, "negotiation failed")
            raise
        for candidate in self._early.pop((peer.user_id, peer.session_id), []):
            if peer.has_remote:
                try:
                    await peer.add_candidate(candidate)
                except Exception as e:
                    log.debug("%r: early candidate rejected: %s", peer, e)

    async def _candidate(self, user: str, session: str, candidate: IceCandidate) -> None:
        peer = self._current(user, session)
        if peer is not None and peer.has_remote:
            await peer.add_candidate(candidate)
            return
        if len(candidate.candidate) > MAX_CANDIDATE:
            return
        key = (user, session)
        held = self._early.pop(key, [])  # re-inserted last: the oldest sessions go first
        if len(held) < MAX_EARLY_CANDIDATES:
            held.append(candidate)
        self._early[key] = held
        while len(self._early) > MAX_EARLY_SESSIONS:
            del self._early[next(iter(self._early))]

    def _current(self, user: str, session: str) -> Peer | None:
        peer = self._peers.get(user)
        return peer if peer is not None and peer.session_id == session else None

    # --- what peers report (agent.peer.PeerOwner) -----------------------------------------------

    async def send_description(self, peer: Peer, description: RTCSessionDescription) -> bool:
        """Only for a current peer (answers whether it was sent): one dropped while it gathered
        candidates (several seconds with an unreachable TURN server) would otherwise be
        answered, and the answer taken by its successor."""
        if self._peers.get(peer.user_id) is not peer:
            return False
        await self._api.send_description(
            self._meeting_id,
            self._session_id,
            {"type": description.type, "sdp": description.sdp},
            peer.user_id,
        )
        return True

    def transition(self, peer: Peer, transition: Transition) -> None:
        if self._peers.get(peer.user_id) is not peer:
            return
        self._ledger.transition(peer.user_id, transition.replace("_", " "))
        if transition == "connected":
            self._restart_wait.pop(peer.user_id, None)
            self._alive_at[peer] = time.monotonic()
            self._stale.pop(peer.session_id, None)
            self._hooks.mark("connected")
            if peer not in self._announced:
                self._announced.add(peer)
                self.emit(ParticipantJoined(peer.user_id, peer.session_id))
        elif transition == "no_answer":
            self._remember_stale(peer.session_id)
            self._hooks.spawn(self._drop(peer, "no answer"))
        elif transition == "failed":
            self._hooks.spawn(self._recover(peer))
        elif transition == "closed":
            self._hooks.spawn(self._closed(peer))
        self._hooks.spawn(self._push_state())
        self._hooks.nudge()

    def emit(self, event: Event) -> None:
        self._hooks.emit(event)

    def mark(self, phase: str) -> None:
        self._hooks.mark(phase)

    # --- recovery ------------------------------------------------------------------------------

    async def _closed(self, peer: Peer) -> None:
        """The connection closed without us: the peer left, or the network failed (aiortc
        closes itself after ICE consent expires). A leaving peer closes its session right
        after its connection, so a session still active after a moment means a failure. The
        other side reports the same failure, which marks its session failed (not active) until
        it pushes its state again, so one absence is not yet a leave."""
        for _ in range(2):
            await asyncio.sleep(CLOSE_GRACE)
            sessions = await self._api.active_sessions(self._meeting_id)
            if await self._own_sessions(sessions):
                return  # the other side dropped us for a newer session of ours
            if self._peers.get(peer.user_id) is not peer or peer.state != "closed":
                return  # replaced or renegotiated meanwhile
            if peer.session_id in {s.sessionId for s in sessions}:
                await self._recover(peer)
                return
        await self._drop(peer, "left")

    async def _recover(self, peer: Peer) -> None:
        """Report the ICE failure; the offerer of the pair restarts when a retry is recommended.
        A peer not back within `dead_after` is dropped by `check_health`.

        handleConnectionFailure marks the whole session failed, which would make every other
        peer drop us, so the session's real state is pushed again right after."""
        try:
            answer = await self._api.report_failure(
                self._meeting_id, self._session_id, "ice_failed", f"peer {peer.user_id}"
            )
            retry = answer.retryRecommended
            self._pushed_state = "failed"
        except ConnvoError as e:  # a backend that cannot take the report must not stop the retry
            log.warning("reporting the ICE failure failed (%s); restarting anyway", e)
            retry = True
        self._counters.failures_reported += 1
        if retry and peer.offerer and await self._restart_due(peer):
            self._counters.ice_restarts += 1
            await peer.offer()
            self._hooks.nudge()
        await self._push_state()

    async def _restart_due(self, peer: Peer) -> bool:
        """Waits before an ICE restart, longer after each one that failed again (a path with
        no pair to check fails at once: without the wait, a hot loop of offers and failure
        reports); answers whether the peer still wants it."""
        wait = self._restart_wait.get(peer.user_id, 0.0)
        self._restart_wait[peer.user_id] = min(max(2 * wait, RESTART_WAIT[0]), RESTART_WAIT[1])
        await asyncio.sleep(wait)
        return self._peers.get(peer.user_id) is peer and peer.state in ("failed", "closed")

    # --- health --------------------------------------------------------------------------------

    async def check_health(self) -> None:
        """Measure every connected peer, report the worst to the backend, and drop peers that
        have been silent (no connection, or no media arriving where media flows) for
        `dead_after`: a participant that died leaves no signal behind, and its session may stay
        active in the backend for good."""
        now = time.monotonic()
        measured: list[quality.LinkQuality] = []
        for peer in list(self._peers.values()):
            pc = peer.pc
            if peer.state == "connected" and pc is not None:
                sample = await quality.sample(pc)
                before = self._samples.get(peer)
                self._samples[peer] = sample
                if before is not None:
                    self._quality[peer.user_id] = quality.between(before, sample)
                    measured.append(self._quality[peer.user_id])
                flowing = before is None or sample.bytes_received > before.bytes_received
                if flowing or not _carries_media(pc):
                    self._alive_at[peer] = now
            alive_at = self._alive_at.setdefault(peer, now)
            if now - alive_at > self._dead_after:
                await self._unreachable(peer)
        if any(self._offer_due(s) for s in self._sessions.values()):
            self._hooks.rediscover()  # a stale session's retry, or a dropped peer's
        if measured:
            summary = quality.worst(measured)
            await self._api.report_quality(self._meeting_id, self._session_id, summary.as_stats())

    async def _unreachable(self, peer: Peer) -> None:
        log.info("%r: silent for %.0f s, dropped", peer, self._dead_after)
        if peer not in self._announced:
            self._remember_stale(peer.session_id)
        await self._drop(peer, "unreachable")

    async def _push_state(self) -> None:
        states = {p.state for p in self._peers.values()}
        state: SessionState = next((s for s in _PUSHED_STATES if s in states), "connecting")
        if state != self._pushed_state:
            self._pushed_state = state
            await self._api.update_session_state(self._meeting_id, self._session_id, state)

    # --- peers ---------------------------------------------------------------------------------

    def _add(self, user_id: str, session_id: str) -> Peer:
        peer = Peer(self._local, self, user_id, session_id)
        self._peers[user_id] = peer
        self._alive_at[peer] = time.monotonic()
        return peer

    async def _drop(self, peer: Peer, reason: str) -> None:
        if self._peers.get(peer.user_id) is peer:
            del self._peers[peer.user_id]
            self._restart_wait.pop(peer.user_id, None)
            if reason != "we left":  # what the room saw before it left stays its outcome
                self._ledger.dropped(peer.user_id, reason)
        await peer.close()
        for table in (self._samples, self._alive_at):
            table.pop(peer, None)
        if peer.user_id not in self._peers:
            self._quality.pop(peer.user_id, None)
        if peer in self._announced:
            self._announced.discard(peer)
            self.emit(ParticipantLeft(peer.user_id, peer.session_id, reason))

    def _remember_stale(self, session_id: str) -> None:
        """Offered to again after `stale_retry`, twice as long after each further try that
        goes unanswered, at most MAX_STALE_RETRY; its offer or a connection forgets it."""
        previous = self._stale.pop(session_id, None)
        wait = self._stale_retry if previous is None else min(2 * previous[1], MAX_STALE_RETRY)
        self._stale[session_id] = (time.monotonic() + wait, wait)
        while len(self._stale) > MAX_STALE:
            del self._stale[next(iter(self._stale))]

    async def close(self) -> None:
        for peer in list(self._peers.values()):
            await self._drop(peer, "we left")


def _carries_media(pc: RTCPeerConnection) -> bool:
    """RTP or RTCP flows both ways whenever an m-line is active in either direction."""
    return any(t.currentDirection not in (None, "inactive") for t in pc.getTransceivers())
