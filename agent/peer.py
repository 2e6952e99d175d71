"""One remote participant: its RTCPeerConnection, the negotiation with it, its chat channel and
its tracks.

aiortc cannot restart ICE on a live connection, so a restart (or any renegotiation) replaces the
RTCPeerConnection: the offerer builds a fresh one and offers again; an offer on an already
negotiated connection makes the answerer do the same.

m-lines have a fixed layout so both sides can name tracks without extra signaling:
audio, camera video, then screen video when the room allows screen sharing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from agent.events import ChatMessage, ConnectionStateChanged, Event, TrackReceived
from agent.ice import IceOptions, candidate_host, filter_sdp
from agent.media.tracks import RemoteTrack
from signaling.models import IceCandidate, IceServer, SessionDescription

if TYPE_CHECKING:
    from agent.features import Plan
    from agent.media.sources import Outgoing
    from signaling.api import ConnvoAPI

log = logging.getLogger(__name__)

MAX_SDP = 64 * 1024
CLOSE_TIMEOUT = 5.0


@dataclass
class Mesh:
    """What every peer of one room shares."""

    api: ConnvoAPI
    meeting_id: str
    session_id: str
    user_id: str
    ice: IceOptions
    ice_servers: list[IceServer] | None
    plan: Plan
    outgoing: Outgoing
    emit: Callable[[Event], None]
    changed: Callable[[Peer], None]
    answer_timeout: float
    mark: Callable[[str], None] = lambda phase: None
    """Told when a join phase is reached: offer_sent, ice_connected, chat_open."""


class Peer:
    def __init__(self, mesh: Mesh, user_id: str, session_id: str) -> None:
        self.mesh = mesh
        self.user_id = user_id
        self.session_id = session_id
        self.polite = mesh.user_id < user_id
        self.pc: RTCPeerConnection | None = None
        self.channel: RTCDataChannel | None = None
        self.tracks: list[RemoteTrack] = []
        self.state = "new"
        self.started = time.monotonic()
        self.connected_at: float | None = None
        self.chat_sent = 0
        self.chat_received = 0
        self.stale = False
        self.offerer = False
        self.announced = False
        self._candidates: list[IceCandidate] = []
        self._outbox: list[ChatMessage] = []
        self._answer_timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"Peer({self.user_id!r}, session={self.session_id!r}, state={self.state!r})"

    @property
    def negotiating(self) -> bool:
        return self.state not in ("connected", "closed", "failed")

    def frames_received(self, kind: str) -> int:
        return sum(t.frames_received for t in self.tracks if t.kind == kind)

    # --- negotiation ------------------------------------------------------------------------

    async def offer(self) -> None:
        self.offerer = True
        pc = await self._fresh_connection()
        plan, out = self.mesh.plan, self.mesh.outgoing
        wanted = [
            ("audio", out.audio if plan.send_audio else None, plan.receive_audio),
            ("video", out.video if plan.send_video else None, plan.receive_video),
        ]
        if plan.offer_screen:
            wanted.append(("video", out.screen if plan.screen_share else None, plan.receive_video))
        for kind, source, receive in wanted:
            track = out.relayed(source)
            pc.addTransceiver(track or kind, direction=_direction(track is not None, receive))
        if plan.chat:
            self._wire_channel(pc.createDataChannel("chat", ordered=True))
        await pc.setLocalDescription(await pc.createOffer())
        await self._send_description()
        self.mesh.mark("offer_sent")
        self._answer_timer = asyncio.get_running_loop().call_later(
            self.mesh.answer_timeout, self._no_answer
        )

    async def handle_description(self, description: SessionDescription) -> None:
        if len(description.sdp) > MAX_SDP:
            raise ValueError(f"SDP of {len(description.sdp)} bytes is over the {MAX_SDP} limit")
        if description.type == "offer":
            await self._answer(description)
        elif description.type == "answer":
            if self.pc is None or self.pc.signalingState != "have-local-offer":
                log.debug("%r: answer without an offer, ignored", self)
                return
            self._cancel_answer_timer()
            await self._set_remote(description)
        else:
            log.debug(
                "%r: %s descriptions are not used by the mesh, ignored", self, description.type
            )

    async def handle_candidate(self, candidate: IceCandidate) -> None:
        if self.pc is None or self.pc.remoteDescription is None:
            self._candidates.append(candidate)
            return
        if not candidate.candidate:
            await self.pc.addIceCandidate(None)
            return
        host = candidate_host(candidate.candidate)
        if host is None or not self.mesh.ice.accepts_remote(host):
            log.debug("%r: candidate not usable from here, ignored", self)
            return
        parsed = candidate_from_sdp(candidate.candidate.removeprefix("a=").split(":", 1)[1])
        parsed.sdpMid = candidate.sdpMid
        parsed.sdpMLineIndex = candidate.sdpMLineIndex
        if parsed.sdpMid is None and parsed.sdpMLineIndex is None:
            parsed.sdpMLineIndex = 0
        await self.pc.addIceCandidate(parsed)

    async def _answer(self, offer: SessionDescription) -> None:
        if self.pc is not None and self.pc.signalingState == "have-local-offer":
            if not self.polite:
                log.debug("%r: colliding offer ignored (impolite side)", self)
                return
            self._cancel_answer_timer()
        self.offerer = False
        pc = await self._fresh_connection()
        await self._set_remote(offer)
        plan, out = self.mesh.plan, self.mesh.outgoing
        videos = 0
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "audio":
                source, receive = (out.audio if plan.send_audio else None), plan.receive_audio
            else:
                screen = videos == 1
                videos += 1
                sending = plan.screen_share if screen else plan.send_video
                source = (out.screen if screen else out.video) if sending else None
                receive = plan.receive_video
            track = out.relayed(source)
            if track is not None:
                transceiver.sender.replaceTrack(track)
            transceiver.direction = _direction(track is not None, receive)
        await pc.setLocalDescription(await pc.createAnswer())
        await self._send_description()

    async def _set_remote(self, description: SessionDescription) -> None:
        assert self.pc is not None
        sdp = filter_sdp(description.sdp, self.mesh.ice)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=description.type))
        pending, self._candidates = self._candidates, []
        for candidate in pending:
            await self.handle_candidate(candidate)

    async def _send_description(self) -> None:
        assert self.pc is not None
        local = self.pc.localDescription
        await self.mesh.api.send_description(
            self.mesh.meeting_id,
            self.mesh.session_id,
            {"type": local.type, "sdp": local.sdp},
            self.user_id,
        )

    def _no_answer(self) -> None:
        self._answer_timer = None
        log.info("%r: no answer within %.0f s, dropped", self, self.mesh.answer_timeout)
        self.stale = True
        self.mesh.changed(self)

    def _cancel_answer_timer(self) -> None:
        if self._answer_timer is not None:
            self._answer_timer.cancel()
            self._answer_timer = None

    # --- the connection -------------------------------------------------------------------

    async def _fresh_connection(self) -> RTCPeerConnection:
        await self._close_connection()
        pc = RTCPeerConnection(self.mesh.ice.configuration(self.mesh.ice_servers))
        self.pc = pc
        self.state = "new"

        @pc.on("iceconnectionstatechange")
        def _ice_state() -> None:
            if pc is not self.pc:
                return
            if pc.iceConnectionState in ("connected", "completed"):
                self.mesh.mark("ice_connected")
            elif pc.iceConnectionState == "failed" and self.state != "failed":
                self._set_state("failed")

        @pc.on("connectionstatechange")
        def _state() -> None:
            if pc is not self.pc:
                return
            if self.state == "failed" and pc.connectionState == "closed":
                return  # aiortc closes itself after an ICE failure: still a failure, not a leave
            self._set_state(pc.connectionState)

        @pc.on("track")
        def _track(track) -> None:
            label = self._label(pc, track)
            remote = RemoteTrack(self.user_id, track.kind, label, track)
            self.tracks.append(remote)
            self.mesh.emit(TrackReceived(self.user_id, self.session_id, remote))

        @pc.on("datachannel")
        def _channel(channel: RTCDataChannel) -> None:
            if channel.label == "chat" and self.mesh.plan.chat:
                self._wire_channel(channel)
            else:
                log.debug("%r: refused data channel %r", self, channel.label)
                channel.close()

        return pc

    def _set_state(self, state: str) -> None:
        self.state = state
        if state == "connected" and self.connected_at is None:
            self.connected_at = time.monotonic()
        self.mesh.emit(ConnectionStateChanged(self.user_id, state))
        self.mesh.changed(self)

    @staticmethod
    def _label(pc: RTCPeerConnection, track) -> str:
        videos = [t for t in pc.getTransceivers() if t.kind == "video"]
        for transceiver in pc.getTransceivers():
            if transceiver.receiver.track is track:
                if transceiver.kind == "audio":
                    return "audio"
                return "screen" if videos.index(transceiver) == 1 else "camera"
        return track.kind

    async def _close_connection(self) -> None:
        self._cancel_answer_timer()
        pc, self.pc, self.channel = self.pc, None, None
        for track in self.tracks:
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
        self.state = "closed"

    # --- chat -----------------------------------------------------------------------------

    def _wire_channel(self, channel: RTCDataChannel) -> None:
        self.channel = channel

        @channel.on("open")
        def _open() -> None:
            self.mesh.mark("chat_open")
            outbox, self._outbox = self._outbox, []
            for message in outbox:
                self.send_chat(message)

        if channel.readyState == "open":
            _open()

        @channel.on("message")
        def _message(data: str | bytes) -> None:
            message = _parse_chat(data, self.user_id)
            if message is not None:
                self.chat_received += 1
                self.mesh.emit(message)

    @property
    def chat_open(self) -> bool:
        return self.channel is not None and self.channel.readyState == "open"

    def send_chat(self, message: ChatMessage) -> None:
        """Sends now, or as soon as the channel opens."""
        if not self.chat_open:
            self._outbox.append(message)
            return
        assert self.channel is not None
        self.channel.send(
            json.dumps(
                {
                    "type": "chat",
                    "id": message.id,
                    "from": message.sender,
                    "text": message.text,
                    "ts": message.ts,
                }
            )
        )
        self.chat_sent += 1


def new_chat(sender: str, text: str) -> ChatMessage:
    return ChatMessage(id=uuid.uuid4().hex, sender=sender, text=text, ts=time.time() * 1000)


def _parse_chat(data: str | bytes, peer_user: str) -> ChatMessage | None:
    """A chat message from the wire, or None for anything malformed (logged, never raised)."""
    try:
        body = json.loads(data)
        if body.get("type") != "chat" or not isinstance(body.get("text"), str):
            raise ValueError("not a chat message")
        return ChatMessage(
            id=str(body.get("id", "")),
            sender=peer_user,  # trust the connection, not the claim in the body
            text=body["text"],
            ts=float(body.get("ts", time.time() * 1000)),
        )
    except (ValueError, TypeError, AttributeError) as e:
        log.debug("malformed chat message from %s: %s", peer_user, e)
        return None


def _direction(send: bool, receive: bool) -> str:
    return {
        (True, True): "sendrecv",
        (True, False): "sendonly",
        (False, True): "recvonly",
        (False, False): "inactive",
    }[(send, receive)]
