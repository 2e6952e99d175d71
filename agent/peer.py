"""One remote participant: its RTCPeerConnection, the negotiation with it, its chat channel and
its tracks. What happens to it is reported to its owner (the Mesh) as typed transitions.

aiortc cannot restart ICE on a live connection, so a restart (or any renegotiation) replaces the
RTCPeerConnection: the offerer builds a fresh one and offers again; an offer on an already
negotiated connection makes the answerer do the same.

Every handler given to aiortc is wrapped by `_guarded`: an exception raised in one would reach
aiortc's transport loop and kill the connection, so it is logged and the connection goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeGuard, get_args

from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from agent import chat, layout
from agent.events import ChatMessage, ConnectionStateChanged, Event, TrackReceived
from agent.ice import IceOptions, candidate_host, filter_sdp
from agent.media.tracks import RemoteTrack
from signaling import convention
from signaling.models import IceCandidate, IceServer, SessionDescription

if TYPE_CHECKING:
    from agent.features import Plan
    from agent.media.sources import Outgoing

log = logging.getLogger(__name__)

MAX_SDP = convention.MAX_SDP
MAX_MLINES = convention.MAX_MLINES
"""A mesh connection has at most 4 (audio, camera, screen, data); more is not a participant."""
TRICKLE_WINDOW = convention.TRICKLE_WINDOW
"""Seconds after a description during which trickled candidates are worth polling fast for."""
CLOSE_TIMEOUT = 5.0
MAX_OUTBOX = convention.CHAT_OUTBOX
"""Chat messages held for a channel that is not open yet; older ones are dropped first."""

Transition = Literal["connecting", "connected", "disconnected", "failed", "closed", "no_answer"]
"""What a peer reports: aiortc's connection states, and `no_answer` for a negotiation (an offer
or an answer) that did not lead to a connection within the answer timeout: the other side never
answered, or never connected. `closed` after `failed` is not reported: aiortc closes a failed
connection itself, and that is still the failure being recovered, not a leave."""
_TRANSITIONS = frozenset(get_args(Transition))


def _is_transition(state: str) -> TypeGuard[Transition]:
    """Whether a connection state (aiortc's, a str) is reported: every one but `new`."""
    return state in _TRANSITIONS


def check_sdp(sdp: str) -> None:
    """Refuses, before anything is built, an SDP no participant sends: oversized, without
    m-lines (aiortc would answer it, leaving a connection that never connects) or with more
    m-lines than a mesh connection has (each would cost a sender)."""
    if len(sdp) > MAX_SDP:
        raise ValueError(f"SDP of {len(sdp)} bytes is over the {MAX_SDP} limit")
    mlines = sdp.count("\nm=")
    if not 0 < mlines <= MAX_MLINES:
        raise ValueError(f"an SDP with {mlines} m-lines; a mesh connection has 1 to {MAX_MLINES}")


@dataclass(frozen=True)
class LocalSide:
    """What this participant brings to every connection of the mesh."""

    user_id: str
    plan: Plan
    outgoing: Outgoing
    ice: IceOptions
    ice_servers: tuple[IceServer, ...]
    answer_timeout: float
    clock_offset_ms: float = 0.0
    """The backend's clock minus ours, from our session's createdAt: signals carry its time."""


class PeerOwner(Protocol):
    """Where a peer sends its descriptions and reports what happens to it."""

    async def send_description(self, peer: Peer, description: RTCSessionDescription) -> bool:
        """Whether it was sent: not for a peer the owner dropped meanwhile."""
        ...

    def transition(self, peer: Peer, transition: Transition) -> None: ...
    def emit(self, event: Event) -> None: ...
    def mark(self, phase: str) -> None: ...


class Peer:
    def __init__(self, local: LocalSide, owner: PeerOwner, user_id: str, session_id: str) -> None:
        self.user_id = user_id
        self.session_id = session_id
        self._local = local
        self._owner = owner
        self._polite = local.user_id < user_id
        self._pc: RTCPeerConnection | None = None
        self._channel: RTCDataChannel | None = None
        self._tracks: list[RemoteTrack] = []
        self._state = "new"
        self._offerer = False
        self._connected_at: float | None = None
        self._outbox: list[ChatMessage] = []
        self._answer_timer: asyncio.TimerHandle | None = None
        self._described_at = 0.0
        self._offered_at = 0.0  # by the backend's clock, ms
        self.chat_sent = 0
        self.chat_received = 0
        self.chat_dropped = 0
        """Incoming messages not read: over the chat budget, or not chat (binary, oversized,
        malformed, not UTF-8)."""
        self._chat_budget = chat.Budget()

    def __repr__(self) -> str:
        return f"Peer({self.user_id!r}, session={self.session_id!r}, state={self._state!r})"

    @property
    def state(self) -> str:
        return self._state

    @property
    def pc(self) -> RTCPeerConnection | None:
        return self._pc

    @property
    def channel(self) -> RTCDataChannel | None:
        return self._channel

    @property
    def tracks(self) -> tuple[RemoteTrack, ...]:
        return tuple(self._tracks)

    @property
    def offerer(self) -> bool:
        return self._offerer

    @property
    def connected_at(self) -> float | None:
        """When the connection first became connected (time.monotonic())."""
        return self._connected_at

    @property
    def negotiating(self) -> bool:
        return self._state not in ("connected", "closed", "failed")

    @property
    def awaiting_signals(self) -> bool:
        """An answer, or trickled candidates, are due: worth polling fast for."""
        if self._pc is None or not self.negotiating:
            return False
        recent = time.monotonic() - self._described_at < TRICKLE_WINDOW
        return recent or self._pc.signalingState == "have-local-offer"

    @property
    def has_remote(self) -> bool:
        """Candidates can be added: the remote description is set."""
        return self._pc is not None and self._pc.remoteDescription is not None

    def frames_received(self, kind: str) -> int:
        return sum(t.frames_received for t in self._tracks if t.kind == kind)

    # --- negotiation ------------------------------------------------------------------------

    async def offer(self) -> None:
        self._offerer = True
        pc = await self._fresh_connection()
        out = self._local.outgoing
        for slot in layout.offered(self._local.plan, out):
            track = out.relayed(slot.source)
            pc.addTransceiver(track or slot.kind, direction=slot.direction)
        if self._local.plan.chat:
            self._wire_channel(pc.createDataChannel("chat", ordered=True))
        self._offered_at = 1000 * time.time() + self._local.clock_offset_ms
        await pc.setLocalDescription(await pc.createOffer())
        if not await self._owner.send_description(self, pc.localDescription):
            return
        self._owner.mark("offer_sent")
        self._start_answer_timer()

    async def handle_description(
        self, description: SessionDescription, stored_at: float | None = None
    ) -> None:
        """An SDP `check_sdp` accepts (the mesh checks it before routing), stored by the
        backend at `stored_at` (ms). Answers are addressed to users, not sessions: when two
        processes of one user offer at once, each reads both answers; one stored before our
        offer went out answers the other process."""
        self._described_at = time.monotonic()
        if description.type == "offer":
            await self._answer(description)
        elif description.type == "answer":
            if self._pc is None or self._pc.signalingState != "have-local-offer":
                log.debug("%r: answer without an offer, ignored", self)
                return
            if stored_at is not None and stored_at < self._offered_at:
                log.debug("%r: an answer to another session of this user, ignored", self)
                return
            await self._set_remote(description)
        else:
            log.debug("%r: %s descriptions are not used by the mesh", self, description.type)

    async def add_candidate(self, candidate: IceCandidate) -> None:
        """A trickled candidate; the owner holds it until `has_remote`."""
        assert self._pc is not None and self.has_remote
        if not candidate.candidate:
            await self._pc.addIceCandidate(None)
            return
        host = candidate_host(candidate.candidate)
        if host is None or not self._local.ice.accepts_remote(host):
            log.debug("%r: candidate not usable from here, ignored", self)
            return
        parsed = candidate_from_sdp(candidate.candidate.removeprefix("a=").split(":", 1)[1])
        parsed.sdpMid = candidate.sdpMid
        parsed.sdpMLineIndex = candidate.sdpMLineIndex
        if parsed.sdpMid is None and parsed.sdpMLineIndex is None:
            parsed.sdpMLineIndex = 0
        await self._pc.addIceCandidate(parsed)

    async def _answer(self, offer: SessionDescription) -> None:
        if self._pc is not None and self._pc.signalingState == "have-local-offer":
            if not self._polite:
                log.debug("%r: colliding offer ignored (impolite side)", self)
                return
            self._cancel_answer_timer()
        self._offerer = False
        pc = await self._fresh_connection()
        await self._set_remote(offer)
        plan, out = self._local.plan, self._local.outgoing
        seen: dict[str, int] = {}
        for transceiver in pc.getTransceivers():
            nth = seen[transceiver.kind] = seen.get(transceiver.kind, -1) + 1
            name = layout.label(transceiver.kind, nth)
            if name is None:  # past the layout: nothing sent or received on it
                transceiver.direction = "inactive"
                continue
            slot = layout.slot(name, plan, out)
            track = out.relayed(slot.source)
            if track is not None:
                transceiver.sender.replaceTrack(track)
            transceiver.direction = slot.direction
        await pc.setLocalDescription(await pc.createAnswer())
        if await self._owner.send_description(self, pc.localDescription):
            self._start_answer_timer()

    async def _set_remote(self, description: SessionDescription) -> None:
        assert self._pc is not None
        sdp = filter_sdp(description.sdp, self._local.ice)
        await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=description.type))

    def _start_answer_timer(self) -> None:
        """Runs from our description until the connection is up, whichever side offered."""
        self._cancel_answer_timer()
        self._answer_timer = asyncio.get_running_loop().call_later(
            self._local.answer_timeout, self._no_answer
        )

    def _no_answer(self) -> None:
        self._answer_timer = None
        log.info("%r: not connected within %.0f s", self, self._local.answer_timeout)
        self._owner.transition(self, "no_answer")

    def _cancel_answer_timer(self) -> None:
        if self._answer_timer is not None:
            self._answer_timer.cancel()
            self._answer_timer = None

    # --- the connection -------------------------------------------------------------------

    async def _fresh_connection(self) -> RTCPeerConnection:
        await self._close_connection()
        pc = RTCPeerConnection(self._local.ice.configuration(self._local.ice_servers))
        self._pc = pc
        self._state = "new"

        @pc.on("iceconnectionstatechange")
        @_guarded
        def _ice_state() -> None:
            if pc is not self._pc:
                return
            if pc.iceConnectionState in ("connected", "completed"):
                self._owner.mark("ice_connected")
            elif pc.iceConnectionState == "failed" and self._state != "failed":
                self._set_state("failed")

        @pc.on("connectionstatechange")
        @_guarded
        def _state() -> None:
            if pc is not self._pc or pc.connectionState == self._state:
                return
            if self._state == "failed" and pc.connectionState == "closed":
                return  # aiortc closes a failed connection itself: still the failure
            self._set_state(pc.connectionState)

        @pc.on("track")
        @_guarded
        def _track(track) -> None:
            remote = RemoteTrack(self.user_id, track.kind, _label(pc, track), track)
            self._tracks.append(remote)
            self._owner.emit(TrackReceived(self.user_id, self.session_id, remote))

        @pc.on("datachannel")
        @_guarded
        def _channel(channel: RTCDataChannel) -> None:
            if channel.label == "chat" and self._local.plan.chat and self._channel is None:
                self._wire_channel(channel)
            else:
                log.debug("%r: refused data channel %r", self, channel.label)
                channel.close()

        return pc

    def _set_state(self, state: str) -> None:
        self._state = state
        if state == "connected":
            self._cancel_answer_timer()
            self._connected_at = self._connected_at or time.monotonic()
        self._owner.emit(ConnectionStateChanged(self.user_id, state))
        if _is_transition(state):
            self._owner.transition(self, state)

    async def _close_connection(self) -> None:
        self._cancel_answer_timer()
        pc, self._pc, self._channel = self._pc, None, None
        tracks, self._tracks = self._tracks, []
        for track in tracks:
            await track.stop()
        if pc is not None:
            for sender in pc.getSenders():
                if sender.track is not None:
                    sender.track.stop()
            with contextlib.suppress(Exception):
                # A wedged transport must not hang leave; shielded because cancelling a second
                # close() cancels aiortc's shared "closed" future under the first one.
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await asyncio.shield(pc.close())

    async def close(self) -> None:
        await self._close_connection()
        self._state = "closed"

    # --- chat -----------------------------------------------------------------------------

    def _wire_channel(self, channel: RTCDataChannel) -> None:
        self._channel = channel

        @channel.on("open")
        @_guarded
        def _open() -> None:
            self._owner.mark("chat_open")
            outbox, self._outbox = self._outbox, []
            for message in outbox:
                self.send_chat(message)

        if channel.readyState == "open":
            _open()

        @channel.on("message")
        @_guarded
        def _message(data: object) -> None:
            message = chat.decode(data, self.user_id) if self._chat_budget.take() else None
            if message is None:
                self.chat_dropped += 1
                log.debug("%r: dropped a message over the budget or not chat", self)
                return
            self.chat_received += 1
            self._owner.emit(message)

    @property
    def chat_open(self) -> bool:
        return self._channel is not None and self._channel.readyState == "open"

    def send_chat(self, message: ChatMessage) -> None:
        """Sends now, or as soon as the channel opens. Never raises: a channel closing under
        us loses this peer's copy, not the other peers'."""
        if not self.chat_open:
            self._outbox = [*self._outbox[-(MAX_OUTBOX - 1) :], message]
            return
        assert self._channel is not None
        try:
            self._channel.send(chat.encode(message))
        except Exception as e:
            log.warning("%r: chat not sent: %s", self, e)
            return
        self.chat_sent += 1


def _guarded(handler: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(handler)
    def run(*args: Any) -> None:
        try:
            handler(*args)
        except Exception:
            log.exception("handler %s failed; the connection goes on", handler.__name__)

    return run


def _label(pc: RTCPeerConnection, track) -> str:
    seen: dict[str, int] = {}
    for transceiver in pc.getTransceivers():
        nth = seen[transceiver.kind] = seen.get(transceiver.kind, -1) + 1
        if transceiver.receiver.track is track:
            return layout.label(transceiver.kind, nth) or track.kind
    return track.kind
