"""ICE paths: a TURN relay (real coturn), a peer that trickles, hostile descriptions."""

from __future__ import annotations

import asyncio
import uuid

import aioice.ice
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from conftest import Backend
from relay import Relay
from test_room import FAST, connected_to, room, until
from turnserver import Turn

from agent.ice import ICE_ADDRESSES, IceOptions, filter_sdp
from agent.room import JoinRequest, Room


async def test_relay_only_bots_connect_through_coturn(turn_backend: tuple[Turn, Backend]):
    turn, backend = turn_backend
    meeting = await backend.meeting(2)
    config = await meeting.host.api.initialize_room(meeting.id)
    assert [s.url_list for s in config.iceServers] == [[turn.url]]
    relay = IceOptions(addresses=("127.0.0.1",), policy="relay")
    rooms = [
        Room(backend.url, m.token, meeting.id, ice=relay, settings=FAST, api=m.api)
        for m in meeting.members
    ]
    async with rooms[0] as a, rooms[1] as b:
        await until(lambda: connected_to(a, [b]) and connected_to(b, [a]), timeout=20)
        peer = a.connected_peers()[0]
        gatherer = peer.pc.getTransceivers()[0].sender.transport.transport.iceGatherer
        kinds = {c.type for c in gatherer.getLocalCandidates()}
    assert kinds == {"relay"}
    log = backend.server.log_path.read_text()
    assert "POST /api/run/meetings/webrtc/index/initializeWebRTCRoom" in log  # it logs
    assert turn.credential not in log


def _split_candidates(sdp: str) -> tuple[str, list[str]]:
    lines = sdp.splitlines()
    candidates = [line[2:] for line in lines if line.startswith("a=candidate:")]
    kept = [line for line in lines if not line.startswith(("a=candidate:", "a=end-of-cand"))]
    return "\r\n".join(kept) + "\r\n", candidates


@pytest.mark.parametrize("candidates_first", [False, True])
async def test_a_peer_that_trickles_its_candidates(backend: Backend, candidates_first: bool):
    meeting = await backend.meeting(2)
    agent_room = room(meeting, 0)
    async with agent_room:
        trickler = meeting[1]
        session = uuid.uuid4().hex
        await trickler.api.create_session(meeting.id, session)
        ICE_ADDRESSES.set(("127.0.0.1",))
        pc = RTCPeerConnection(IceOptions.loopback().configuration([]))
        try:
            pc.addTransceiver("audio", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())
            sdp, candidates = _split_candidates(pc.localDescription.sdp)
            assert candidates, "the trickling peer gathered nothing on loopback"

            async def trickle() -> None:
                for c in [*candidates, ""]:
                    await trickler.api.send_candidate(
                        meeting.id,
                        session,
                        {"candidate": c, "sdpMid": "0", "sdpMLineIndex": 0},
                        agent_room.user_id,
                    )

            offer = {"type": "offer", "sdp": sdp}
            if candidates_first:
                await trickle()
            await trickler.api.send_description(meeting.id, session, offer, agent_room.user_id)
            if not candidates_first:
                await trickle()
            answer = await _answer_for(trickler.api, meeting.id)
            await pc.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))
            await until(lambda: pc.connectionState == "connected", timeout=15)
            await until(
                lambda: trickler.user_id in {p.user_id for p in agent_room.connected_peers()}
            )
        finally:
            await pc.close()


async def _answer_for(api, meeting_id: str):
    async with asyncio.timeout(10):
        while True:
            for signal in await api.pending_signals(meeting_id):
                if getattr(signal.data, "type", None) == "answer":
                    return signal.data
            await asyncio.sleep(0.05)


async def test_hostile_descriptions_are_refused_and_the_room_goes_on(backend: Backend):
    meeting = await backend.meeting(3)
    async with room(meeting, 0) as a:
        attacker = meeting[1]
        session = uuid.uuid4().hex
        await attacker.api.create_session(meeting.id, session)
        for sdp in ["v=0\r\nthis is not sdp\r\n", "v=0\r\n" + "a=x\r\n" * 20000, "m=audio x\r\n"]:
            await attacker.api.send_description(
                meeting.id, session, {"type": "offer", "sdp": sdp}, a.user_id
            )
        await attacker.api.send_candidate(
            meeting.id, session, {"candidate": "candidate:garbage", "sdpMid": "0"}, a.user_id
        )
        async with room(meeting, 2) as c:
            await until(lambda: connected_to(a, [c]) and connected_to(c, [a]))
        assert attacker.user_id not in {p.user_id for p in a.connected_peers()}


def test_mdns_and_non_loopback_candidates_are_dropped_from_loopback():
    sdp = (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
        "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n"
        "a=candidate:2 1 udp 2130706431 1f2e-4d.local 5001 typ host\r\n"
        "a=candidate:3 1 udp 1694498815 203.0.113.7 5002 typ srflx raddr 0.0.0.0 rport 0\r\n"
    )
    kept = filter_sdp(sdp, IceOptions.loopback())
    assert "127.0.0.1 5000" in kept
    assert ".local" not in kept and "203.0.113.7" not in kept
    everywhere = filter_sdp(sdp, IceOptions())
    assert "203.0.113.7" in everywhere and ".local" not in everywhere


def test_ice_configuration_is_never_implicit():
    """aiortc falls back to a public STUN server when given None: we always pass a list."""
    config = IceOptions.loopback().configuration(None)
    assert config.iceServers == []
    assert JoinRequest().outgoing.audio is None


def _cut(pc) -> None:
    """Drop every packet this side receives, as a network cut would. Stands in for a firewall
    rule: the sockets stay open, so aiortc does not see a local close, only silence."""
    connection = pc.getTransceivers()[0].receiver.transport.transport._connection
    for protocol in connection._protocols:
        protocol.datagram_received = lambda data, addr: None


async def test_ice_failure_is_reported_and_the_pair_reconnects(backend: Backend, monkeypatch):
    # Consent checks every 0.2 s, failing after 2 misses, instead of 6 x 5 s: same code, faster.
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.2)
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 2)
    meeting = await backend.meeting(2)
    async with Relay(backend.url) as relay:
        b = Room(relay.url, meeting[1].token, meeting.id, ice=IceOptions.loopback(), settings=FAST)
        async with room(meeting, 0) as a, b:  # b joined later: b offers
            await _reconnects_after_a_cut(a, b, relay)


async def _reconnects_after_a_cut(a: Room, b: Room, relay: Relay) -> None:
    await until(lambda: connected_to(a, [b]) and connected_to(b, [a]))
    before = a.peers[b.user_id].pc
    _cut(before)
    await until(
        lambda: b.stats().failures_reported >= 1 and b.stats().ice_restarts >= 1, timeout=30
    )
    (report,) = relay.called("handleConnectionFailure")  # what the backend received
    assert report.status == "success" and report.args["errorType"] == "ice_failed"
    assert report.args["sessionId"] == b.session_id
    await until(
        lambda: (
            connected_to(a, [b]) and connected_to(b, [a]) and a.peers[b.user_id].pc is not before
        ),
        timeout=30,
    )
    expected = {a.session_id: "connected", b.session_id: "connected"}
    async with asyncio.timeout(10):  # both push their state again after the failure
        while (await _states(a)) != expected:
            await asyncio.sleep(0.1)


async def _states(r: Room) -> dict[str, str]:
    return {s.sessionId: s.state for s in await r.api.active_sessions(r.meeting_id)}
