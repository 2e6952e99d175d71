"""Signals pushed over the sync protocol, as the agent uses them: rooms that read nothing while
idle, a late joiner answered at once, a deployment without the protocol polled instead, a
dropped socket that loses and repeats no signal, typed errors, and leave closing the socket.

The deployment is the real dev backend; the network faults are real sockets (tests/relay.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Callable

import pytest
from relay import Cutter, Relay
from test_room import connected_to, until
from websockets.asyncio.server import serve

from agent.demo import _meeting
from agent.ice import IceOptions
from agent.pump import PollSettings, SignalPump
from agent.room import JoinRequest, Room, RoomSettings
from agent.stats import Counters
from signaling import functions as fn
from signaling.api import ConnvoAPI
from signaling.client import CountingTransport
from signaling.errors import Forbidden, TransportError, Unauthorized
from signaling.models import Signal
from signaling.sync import SyncClient, SyncUnavailable

FAST = RoomSettings(poll=PollSettings(fast=0.05, idle=0.2), discovery_interval=0.5)
READS = ("getPendingSignals", "getActiveSessions")


def room(meeting, index: int, url: str | None = None, http=None, **settings) -> Room:
    member = meeting[index]
    url = url or member.api.url
    return Room(
        url,
        member.token,
        meeting.id,
        request=JoinRequest(),
        ice=IceOptions.loopback(),
        settings=RoomSettings(**{**FAST.__dict__, **settings}),
        api=ConnvoAPI(url, member.token, http=http),
    )


def candidate(i: int) -> dict:
    return {"candidate": f"candidate:{i} 1 udp 1 127.0.0.1 {9000 + i} typ host", "sdpMid": "0"}


@pytest.mark.parametrize("signals", ["push", "poll"])
async def test_a_mesh_meets_with_signals_pushed_or_polled(backend, signals):
    report = await _meeting(backend.server, 3, 1.0, RoomSettings(signals=signals), quiet=True)
    assert report.ok, report


async def test_idle_rooms_read_nothing_and_a_late_joiner_is_answered_pushed(backend):
    meeting = await backend.meeting(3)
    counts = [CountingTransport() for _ in range(3)]
    a, b, c = (room(meeting, i, http=counts[i]) for i in range(3))
    async with a, b:
        await until(lambda: connected_to(a, [b]) and connected_to(b, [a]))
        before = [dict(n.calls) for n in counts[:2]]
        await asyncio.sleep(2.0)  # four discovery intervals, forty fast polls
        for n, then in zip(counts[:2], before, strict=True):
            assert all(n.calls[f] == then.get(f, 0) for f in READS), n.calls
        async with c:
            await until(
                lambda: all(
                    connected_to(r, [o for o in (a, b, c) if o is not r]) for r in (a, b, c)
                )
            )
            for stats in (a.stats(), b.stats(), c.stats()):
                assert stats.signals == "push"
                assert stats.signal_polls == 0 and stats.signals_pushed > 0
    assert counts[2].calls["getPendingSignals"] == 0


async def test_a_deployment_without_the_sync_protocol_is_polled(backend):
    meeting = await backend.meeting(2)
    async with Relay(backend.url) as relay:
        a, b = room(meeting, 0, url=relay.url), room(meeting, 1)
        async with a, b:
            await until(lambda: connected_to(a, [b]) and connected_to(b, [a]))
            assert a.stats().signals == "poll" and b.stats().signals == "push"
            assert a.stats().signal_polls > 0 and relay.called("getPendingSignals")


async def test_polling_was_asked_for_so_no_socket_is_opened(backend):
    meeting = await backend.meeting(2)
    async with Cutter(backend.url) as cutter, room(meeting, 0, url=cutter.url, signals="poll") as a:
        assert cutter.sync_sockets == 0 and a.stats().signals == "poll"


async def test_leaving_closes_the_socket(backend):
    meeting = await backend.meeting(2)
    async with Cutter(backend.url) as cutter:
        a = room(meeting, 0, url=cutter.url)
        async with a:
            assert cutter.sync_sockets == 1 and a.stats().signals == "push"
        await until(lambda: cutter.sync_sockets == 0, timeout=3)
        assert a.stats().signals == "poll"


async def test_a_dropped_socket_loses_no_signal_and_repeats_none(backend):
    meeting = await backend.meeting(2)
    sender, receiver = meeting.host, meeting[1]
    handled: list[str] = []

    async def handle(signal: Signal) -> None:
        handled.append(signal.data.candidate)  # type: ignore[union-attr]

    async with Cutter(backend.url) as cutter:
        sync = SyncClient(cutter.url, receiver.token, backoff=(0.05, 0.2))
        task = await _pushed_pump(sync, cutter.url, receiver.token, meeting.id, handle)
        try:
            sent = []
            for i in range(30):
                if i == 10:
                    cutter.cut(refuse_for=0.5)  # socket and HTTP connections gone; no reconnect
                    await until(lambda: not sync.live, timeout=2)
                if i == 20:
                    await until(lambda: sync.live, timeout=5)
                await sender.api.send_candidate(meeting.id, "s1", candidate(i), receiver.user_id)
                sent.append(candidate(i)["candidate"])
            await until(lambda: len(handled) >= 30, timeout=10)
            await asyncio.sleep(0.3)  # a repeat would show up now
        finally:
            task.cancel()
            await sync.close()
    assert handled == sent
    assert sync.connections >= 2
    pending = await receiver.api.pending_signals(meeting.id)
    assert pending == []  # every one marked processed


async def _pushed_pump(
    sync: SyncClient, url: str, token: str, meeting_id: str, handle: Callable
) -> asyncio.Task:
    holder: list[SignalPump] = []
    await sync.connect()
    sub = await sync.subscribe(
        fn.GET_PENDING_SIGNALS, {"meetingId": meeting_id}, lambda: holder and holder[0].nudge()
    )
    api = ConnvoAPI(url, token)
    settings = PollSettings(0.05, 0.2)
    pump = SignalPump(
        api, meeting_id, handle, lambda: False, settings, counters=Counters(), pushed=sub
    )
    holder.append(pump)
    return asyncio.create_task(pump.run())


async def test_connect_errors_are_typed(backend):
    meeting = await backend.meeting(2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(TransportError) as refused:
        await SyncClient(closed, meeting.host.token).connect()
    assert refused.value.sent is False
    async with Relay(backend.url) as relay:
        with pytest.raises(SyncUnavailable, match="HTTP 404"):
            await SyncClient(relay.url, meeting.host.token).connect()


async def test_a_refused_token_stops_the_client_and_says_why(backend):
    meeting = await backend.meeting(2)
    token = "not-a-token-but-a-secret-7f3a"
    sync = SyncClient(backend.url, token)
    changed = asyncio.Event()
    await sync.connect()
    sub = await sync.subscribe(fn.GET_PENDING_SIGNALS, {"meetingId": meeting.id}, changed.set)
    try:
        await until(lambda: sync.error is not None, timeout=3)
    finally:
        await sync.close()
    assert isinstance(sync.error, Unauthorized)
    assert not sub.live and sub.value is None
    assert token not in str(sync.error) and token not in repr(sync)


async def test_a_subscription_answers_a_failure_as_the_http_api_does(backend):
    meeting = await backend.meeting(2)
    outsider = backend.member()
    sync = SyncClient(backend.url, outsider.token)
    changed = asyncio.Event()
    await sync.connect()
    try:
        sub = await sync.subscribe(fn.GET_PENDING_SIGNALS, {"meetingId": meeting.id}, changed.set)
        await until(lambda: sub.live, timeout=3)
        assert sub.error is not None and sub.error.code == "FORBIDDEN"  # type: ignore[union-attr]
        await meeting.host.api.add_participant(meeting.id, outsider.user_id, "participant")
        await until(lambda: sub.error is None, timeout=3)
        assert sub.value == []
    finally:
        await sync.close()
    with pytest.raises(ValueError, match="only queries"):
        await sync.subscribe(fn.MARK_SIGNALS_PROCESSED, {}, changed.set)


class FakeDeployment:
    """A sync-protocol server on loopback that answers each connection with `script(n)`: the
    messages to send after the client's Authenticate (n counts connections from 0)."""

    def __init__(self, script: Callable[[int], list[str]]) -> None:
        self.script = script
        self.connections = 0

    async def __aenter__(self) -> FakeDeployment:
        self._server = await serve(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()

    async def _handle(self, ws) -> None:
        n, self.connections = self.connections, self.connections + 1
        with contextlib.suppress(Exception):
            async for raw in ws:
                if json.loads(raw)["type"] == "ModifyQuerySet":
                    for message in self.script(n):
                        await ws.send(message)
            await ws.wait_closed()


def _transition(modifications: list, query_set: int = 1) -> str:
    zero = {"querySet": 0, "identity": 0, "ts": "AAAAAAAAAAA="}
    end = {"querySet": query_set, "identity": 0, "ts": "AQAAAAAAAAA="}
    message = {"type": "Transition", "startVersion": zero, "endVersion": end}
    return json.dumps({**message, "modifications": modifications})


async def test_a_malformed_message_reopens_the_socket_and_the_subscription_comes_back():
    good = _transition([{"type": "QueryUpdated", "queryId": 0, "value": [], "logLines": []}])
    junk = [_transition([1]), '{"type": "TransitionChunk", "partNumber": 5}', "[[[[", good]
    async with FakeDeployment(lambda n: [junk[n]] if n < len(junk) else [good]) as fake:
        sync = SyncClient(fake.url, "token", backoff=(0.01, 0.05))
        await sync.connect()
        sub = await sync.subscribe(fn.GET_PENDING_SIGNALS, {"meetingId": "m"}, lambda: None)
        try:
            await until(lambda: sub.live and sub.value == [], timeout=5)
        finally:
            await asyncio.wait_for(sync.close(), 2)
    assert fake.connections == len(junk)  # each bad message cost one socket, nothing more
    assert sync.error is None


async def test_only_the_last_result_of_a_query_in_a_transition_is_parsed():
    # A server that puts several results of one query into one transition (the dev backend
    # used to): only the last counts, so an earlier one is never parsed (not even this one,
    # which would be a SchemaError).
    signal = {"_id": "s1", "type": "ice", "fromUserId": "u", "sessionId": "x", "timestamp": 1}
    results = ["not a list", [{**signal, "data": candidate(1)}], []]
    updates = [{"type": "QueryUpdated", "queryId": 0, "value": v} for v in results]
    async with FakeDeployment(lambda n: [_transition(updates)]) as fake:
        sync = SyncClient(fake.url, "token")
        await sync.connect()
        sub = await sync.subscribe(fn.GET_PENDING_SIGNALS, {"meetingId": "m"}, lambda: None)
        try:
            await until(lambda: sub.live, timeout=5)
        finally:
            await sync.close()
    assert (sub.value, sub.error, sub.updates) == ([], None, 1)


async def test_a_server_that_fails_after_authenticating_is_not_hammered():
    identity = _transition([], query_set=1)
    async with FakeDeployment(lambda n: [identity, '{"type": "FatalError", "error": "x"}']) as fake:
        sync = SyncClient(fake.url, "token")  # the default backoff: 0.1 s doubling
        await sync.connect()
        await sync.subscribe(fn.GET_PENDING_SIGNALS, {"meetingId": "m"}, lambda: None)
        await asyncio.sleep(2.0)
        await sync.close()
    assert 2 <= fake.connections <= 8  # ~24 when every transition reset the backoff


async def test_a_failed_join_leaves_no_socket(backend):
    meeting = await backend.meeting(2)
    async with Cutter(backend.url) as cutter:
        for _ in range(5):
            r = room(meeting, 0, url=cutter.url)
            r.meeting_id = "mtg_" + "0" * 26  # no such meeting: the join fails
            with pytest.raises(Forbidden):
                await r.join()
        await until(lambda: cutter.sync_sockets == 0, timeout=3)
        await asyncio.sleep(0.5)  # a socket left behind would reconnect by now
        assert cutter.sync_sockets == 0


async def test_a_socket_refused_at_first_is_opened_later_when_retrying(backend):
    meeting = await backend.meeting(2)
    async with Cutter(backend.url) as cutter:
        cutter.cut(refuse_for=0.5)
        sync = SyncClient(cutter.url, meeting.host.token, backoff=(0.1, 0.2))
        await sync.connect(retry=True)
        sub = await sync.subscribe(fn.GET_PENDING_SIGNALS, {"meetingId": meeting.id}, lambda: None)
        assert not sync.live
        try:
            await until(lambda: sub.live and sub.value == [], timeout=5)
        finally:
            await sync.close()


async def test_a_room_whose_socket_drops_polls_then_is_pushed_again(backend):
    meeting = await backend.meeting(3)
    async with Cutter(backend.url) as cutter:
        a, b = room(meeting, 0, url=cutter.url), room(meeting, 1)
        async with a, b:
            await until(lambda: connected_to(a, [b]) and a.stats().signals == "push")
            cutter.cut()
            await until(lambda: a.stats().signals == "poll", timeout=3)
            async with room(meeting, 2) as c:  # joins while a reads by polling or reconnects
                await until(lambda: connected_to(a, [b, c]) and connected_to(c, [a, b]))
            await until(lambda: a.stats().signals == "push", timeout=10)
            assert cutter.sync_sockets == 1
