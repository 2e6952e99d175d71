"""The dev backend's Convex sync protocol (`signaling/devserver/sync.py`): subscriptions that
follow the writes they read, the identity and the query set; mutations and actions over the
socket; and the refusals of a client that breaks the protocol.

The official `convex` Python client (a wrapper of the Rust client) is the oracle: whatever it
accepts, re-assembles and answers is what a real Convex client gets, so the dev backend is right
when that client is content, not when it agrees with a reading of protocol.ts. Subscriptions
are read with `async for` (`Feed`), which leaves the event loop free; its synchronous `query`,
`mutation` and `action` hold the GIL until answered, so they are used only for one short call at
a time, each under a SIGALRM `deadline` (no asyncio timeout can fire while they block). What the
client never sends or never shows (malformed messages, FatalError, AuthError, version
bookkeeping, the convex-js path `/api/{version}/sync`) is checked with a raw WebSocket client,
`Raw`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import itertools
import json
import signal
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import convex
import pytest
from conftest import Backend, Meeting, Member
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from signaling import functions as fn
from signaling.devserver.hub import Hub
from signaling.devserver.store import Read, Write
from signaling.devserver.sync import MAX_MESSAGE, MAX_QUERIES
from signaling.functions import Function

WAIT = 5.0
"""Longest wait for anything the server owes: a bug fails the test instead of hanging it."""
QUIET = 0.3
"""How long the server must stay silent when it owes nothing."""


def udf(function: Function | str) -> str:
    """The sync protocol's `module:function` for an HTTP path `module/function`."""
    path = function.path if isinstance(function, Function) else function
    module, name = path.rsplit("/", 1)
    return f"{module}:{name}"


def candidate(n: int) -> dict[str, Any]:
    return {"candidate": f"candidate:{n} 1 udp 1 127.0.0.1 {9000 + n} typ host", "sdpMid": "0"}


async def send_signal(meeting: Meeting, sender: Member, to: Member, n: int) -> None:
    """An ICE candidate `n` from `sender` to `to`, over HTTP."""
    await sender.api.send_candidate(meeting.id, "s1", candidate(n), to.user_id)


def numbers(signals: list[dict[str, Any]]) -> list[int]:
    """Which candidates (`candidate(n)`) a getPendingSignals answer holds, in order."""
    return [int(s["data"]["candidate"].split()[0].removeprefix("candidate:")) for s in signals]


def ids(signals: list[dict[str, Any]]) -> list[str]:
    return [s["_id"] for s in signals]


@contextlib.contextmanager
def deadline(seconds: float = WAIT) -> Iterator[None]:
    """Fails a synchronous official-client call (query, mutation, action) still waiting after
    `seconds`. Such a call holds the GIL, so no asyncio timeout can fire meanwhile, but the
    client checks for signals about once a second, and a SIGALRM handler's error ends it."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"the official client got no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def error_code(value: Any) -> str:
    assert isinstance(value, convex.ConvexError), f"expected a ConvexError, got {value!r}"
    return value.data["code"]


# --- the official client ------------------------------------------------------------------------


class Feed:
    """One official subscription, read by a task into a queue: a wait can time out without
    cancelling the client's own future, and the time each value arrived is kept. A failed query
    is queued as its convex.ConvexError."""

    def __init__(self, client: convex.ConvexClient, function: Function, args: dict[str, Any]):
        self.client = client
        with deadline():  # it blocks (GIL held) until the client has its socket
            self._subscription = client.subscribe(udf(function), args)
        self._queue: asyncio.Queue[tuple[float, Any]] = asyncio.Queue()
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        while True:
            try:
                value = await anext(self._subscription)
            except convex.ConvexError as e:
                value = e
            self._queue.put_nowait((time.monotonic(), value))

    async def next_timed(self) -> tuple[float, Any]:
        """(monotonic time it arrived, value) of the next value."""
        async with asyncio.timeout(WAIT):
            return await self._queue.get()

    async def next(self) -> Any:
        return (await self.next_timed())[1]

    async def until(self, done: Callable[[Any], bool]) -> list[Any]:
        """Every value up to the first one that is `done`."""
        seen = [await self.next()]
        while not done(seen[-1]):
            seen.append(await self.next())
        return seen

    async def close(self) -> None:
        """Stops reading. (Not `unsubscribe`: a cancelled read has dropped the subscription,
        and `unsubscribe` would subscribe again first; dropping the client ends it.)"""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class Oracle:
    """The official clients of one test. The Rust client has no close: dropping the last
    reference closes its socket and ends its reconnect loop, so `close` drops them all."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._clients: list[convex.ConvexClient] = []
        self._feeds: list[Feed] = []

    def client(self, member: Member | None = None) -> convex.ConvexClient:
        client = convex.ConvexClient(self.url)
        if member is not None:
            client.set_auth(member.token)
        self._clients.append(client)
        return client

    def subscribe(self, client: convex.ConvexClient, function: Function, **args: Any) -> Feed:
        feed = Feed(client, function, args)
        self._feeds.append(feed)
        return feed

    def watch(self, member: Member, function: Function, **args: Any) -> Feed:
        """A subscription on a new client of its own, signed in as `member`."""
        return self.subscribe(self.client(member), function, **args)

    async def close(self) -> None:
        for feed in self._feeds:
            await feed.close()
        self._feeds.clear()
        self._clients.clear()
        gc.collect()


@pytest.fixture
async def oracle(backend: Backend) -> AsyncIterator[Oracle]:
    oracle = Oracle(backend.url)
    yield oracle
    await oracle.close()


# --- a raw client -------------------------------------------------------------------------------


def ts_of(encoded: str) -> int:
    """Convex's u64 on the wire: 8 bytes little-endian, base64."""
    return int.from_bytes(base64.b64decode(encoded), "little")


ZERO = {"querySet": 0, "identity": 0, "ts": base64.b64encode(bytes(8)).decode()}
"""The version a client starts from."""


class Raw:
    """A hand-driven sync connection. Every Transition it receives must start where the one
    before it ended, and never go back in time; it keeps them all, and each query's last
    modification in `results`."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.version = ZERO
        self.transitions: list[dict[str, Any]] = []
        self.results: dict[int, dict[str, Any]] = {}
        self._query_set = 0
        self._identity = 0
        self._query_ids = itertools.count()
        self._request_ids = itertools.count()

    async def send(self, message: Any) -> None:
        await self.ws.send(message if isinstance(message, str | bytes) else json.dumps(message))

    async def receive(self, timeout: float = WAIT) -> dict[str, Any]:
        """The next message but Pings."""
        try:
            async with asyncio.timeout(timeout):
                message = json.loads(await self.ws.recv())
                while message["type"] == "Ping":
                    message = json.loads(await self.ws.recv())
        except TimeoutError:
            raise TimeoutError(f"no message from the server within {timeout} s") from None
        if message["type"] == "Transition":
            assert message["startVersion"] == self.version, "a Transition skipped a version"
            assert ts_of(message["endVersion"]["ts"]) >= ts_of(self.version["ts"])
            self.version = message["endVersion"]
            self.transitions.append(message)
            for change in message["modifications"]:
                self.results[change["queryId"]] = change
        return message

    async def expect(self, kind: str) -> dict[str, Any]:
        message = await self.receive()
        assert message["type"] == kind, message
        return message

    async def transition(self) -> dict[str, Any]:
        return await self.expect("Transition")

    async def silent(self) -> None:
        """Nothing arrives for QUIET seconds."""
        try:
            message = await self.receive(QUIET)
        except TimeoutError:
            return
        pytest.fail(f"the server sent {message}, owing nothing")

    async def closed(self) -> int | None:
        """The close code, once the server has closed the connection."""
        with pytest.raises(ConnectionClosed):
            await self.receive()
        return self.ws.close_code

    async def fatal(self) -> str:
        """The FatalError's text; the connection must close after it."""
        error = (await self.expect("FatalError"))["error"]
        assert await self.closed() == 1011
        return error

    async def authenticate(self, token: str | None) -> None:
        message: dict[str, Any] = {"type": "Authenticate", "baseVersion": self._identity}
        message.update({"tokenType": "User", "value": token} if token else {"tokenType": "None"})
        self._identity += 1
        await self.send(message)

    def add(self, function: Function | str, **args: Any) -> dict[str, Any]:
        """A modification adding a subscription, with a new queryId."""
        query_id = next(self._query_ids)
        return {"type": "Add", "queryId": query_id, "udfPath": udf(function), "args": [args]}

    async def modify(self, *modifications: dict[str, Any]) -> None:
        base, self._query_set = self._query_set, self._query_set + 1
        await self.send(
            {
                "type": "ModifyQuerySet",
                "baseVersion": base,
                "newVersion": self._query_set,
                "modifications": list(modifications),
            }
        )

    async def mutation(self, function: Function, **args: Any) -> dict[str, Any]:
        """Runs a mutation and returns its MutationResponse."""
        request_id = next(self._request_ids)
        await self.send(
            {"type": "Mutation", "requestId": request_id, "udfPath": udf(function), "args": [args]}
        )
        response = await self.expect("MutationResponse")
        assert response["requestId"] == request_id
        return response

    def value(self, query_id: int) -> Any:
        result = self.results[query_id]
        assert result["type"] == "QueryUpdated", result
        return result["value"]


@contextlib.asynccontextmanager
async def raw_sync(backend: Backend, path: str = "/api/sync") -> AsyncIterator[Raw]:
    async with connect("ws" + backend.url.removeprefix("http") + path) as ws:
        raw = Raw(ws)
        await raw.send(
            {
                "type": "Connect",
                "sessionId": str(uuid.uuid4()),
                "connectionCount": 0,
                "lastCloseReason": None,
            }
        )
        yield raw


async def signed_in(raw: Raw, member: Member, *modifications: dict[str, Any]) -> None:
    """Authenticates as `member`, then adds `modifications`, each acknowledged."""
    await raw.authenticate(member.token)
    await raw.transition()
    if modifications:
        await raw.modify(*modifications)
        await raw.transition()


# --- subscriptions, through the official client ---------------------------------------------------


async def test_pending_signals_arrive_in_order_and_leave_once_processed(
    backend: Backend, oracle: Oracle
) -> None:
    meeting = await backend.meeting(2)
    host, guest = meeting.members
    feed = oracle.watch(guest, fn.GET_PENDING_SIGNALS, meetingId=meeting.id)
    assert await feed.next() == []
    for n in range(1, 4):
        await send_signal(meeting, host, guest, n)
        assert numbers(await feed.next()) == list(range(1, n + 1))
    for n in range(4, 9):  # a burst: every value on the way is a prefix of the last one
        await send_signal(meeting, host, guest, n)
    seen = await feed.until(lambda value: len(value) == 8)
    assert all(numbers(value) == list(range(1, len(value) + 1)) for value in seen)

    signals = seen[-1]
    with deadline():
        feed.client.mutation(udf(fn.MARK_SIGNALS_PROCESSED), {"signalIds": ids(signals[:1])})
    assert numbers(await feed.next()) == list(range(2, 9))
    await guest.api.mark_processed(ids(signals[1:]))
    assert await feed.next() == []


async def test_each_user_sees_only_the_signals_addressed_to_them(
    backend: Backend, oracle: Oracle
) -> None:
    meeting = await backend.meeting(3)
    host, first, second = meeting.members
    feeds = [oracle.watch(m, fn.GET_PENDING_SIGNALS, meetingId=meeting.id) for m in (first, second)]
    for feed in feeds:
        assert await feed.next() == []
    await send_signal(meeting, host, second, 1)
    await send_signal(meeting, host, first, 2)
    # had the signal to `second` reached `first`, its next value would not be [2]
    assert numbers(await feeds[0].next()) == [2]
    assert numbers(await feeds[1].next()) == [1]


async def test_active_sessions_appear_change_state_and_disappear(
    backend: Backend, oracle: Oracle
) -> None:
    meeting = await backend.meeting(2)
    host, guest = meeting.members
    feed = oracle.watch(host, fn.GET_ACTIVE_SESSIONS, meetingId=meeting.id)
    assert await feed.next() == []

    def states(value: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
        return [(s["userId"], s["sessionId"], s["state"]) for s in value]

    await guest.api.create_session(meeting.id, "g1")
    assert states(await feed.next()) == [(guest.user_id, "g1", "connecting")]
    await guest.api.update_session_state(meeting.id, "g1", "connected")
    assert states(await feed.next()) == [(guest.user_id, "g1", "connected")]
    await guest.api.close_session(meeting.id, "g1")
    assert await feed.next() == []


async def test_a_forbidden_subscription_succeeds_once_the_user_is_added(
    backend: Backend, oracle: Oracle
) -> None:
    meeting = await backend.meeting(1)
    outsider = backend.member()
    feed = oracle.watch(outsider, fn.GET_PENDING_SIGNALS, meetingId=meeting.id)
    failure = await feed.next()
    assert error_code(failure) == "FORBIDDEN"
    assert failure.data["metadata"]["userId"] == outsider.user_id
    await meeting.host.api.add_participant(meeting.id, outsider.user_id)
    assert await feed.next() == []


async def test_subscriptions_follow_the_identity(backend: Backend, oracle: Oracle) -> None:
    member = backend.member()
    client = oracle.client()
    feed = oracle.subscribe(client, fn.GET_CURRENT_USER)
    assert await feed.next() is None
    client.set_auth(member.token)
    assert (await feed.next())["_id"] == member.user_id
    client.clear_auth()
    assert await feed.next() is None


# --- mutations and actions over the socket ------------------------------------------------------


async def test_mutations_and_actions_over_the_socket(backend: Backend, oracle: Oracle) -> None:
    meeting = await backend.meeting(2)
    host, guest = meeting.members
    sessions = oracle.watch(host, fn.GET_ACTIVE_SESSIONS, meetingId=meeting.id)
    assert await sessions.next() == []
    client = oracle.client(guest)

    with deadline():
        created = client.mutation(
            udf(fn.CREATE_WEBRTC_SESSION), {"meetingId": meeting.id, "sessionId": "g1"}
        )
    assert created == {"sessionId": "g1", "success": True}
    [session] = await sessions.next()
    assert (session["userId"], session["sessionId"], session["state"]) == (
        guest.user_id,
        "g1",
        "connecting",
    )

    with deadline():
        client.mutation(
            udf(fn.UPDATE_SESSION_STATE),
            {"meetingId": meeting.id, "sessionId": "g1", "state": "connected"},
        )
    assert [s["state"] for s in await sessions.next()] == ["connected"]

    with deadline():
        room = client.action(udf(fn.INITIALIZE_WEBRTC_ROOM), {"meetingId": meeting.id})
    over_http = await guest.api.initialize_room(meeting.id)
    assert room["success"] is True
    assert room["provider"] == over_http.provider
    assert room["features"]["maxParticipants"] == over_http.features.maxParticipants

    with pytest.raises(convex.ConvexError) as refused, deadline():
        client.action(udf(fn.INITIALIZE_WEBRTC_ROOM), {"meetingId": "mtg_bad"})
    assert refused.value.data["code"] == "VALIDATION_ERROR"


async def test_functions_run_only_as_their_kind(backend: Backend, oracle: Oracle) -> None:
    meeting = await backend.meeting(1)
    client = oracle.client(meeting.host)
    session = {"meetingId": meeting.id, "sessionId": "h1"}
    with pytest.raises(convex.ConvexError) as as_query, deadline():
        client.query(udf(fn.CREATE_WEBRTC_SESSION), session)
    assert as_query.value.data["code"] == "VALIDATION_ERROR"
    assert "defined as Mutation" in str(as_query.value)
    with pytest.raises(convex.ConvexError, match="defined as Mutation"), deadline():
        client.action(udf(fn.CREATE_WEBRTC_SESSION), session)
    async with raw_sync(backend) as raw:  # a query as a mutation: see the test below
        await signed_in(raw, meeting.host)
        response = await raw.mutation(fn.GET_ACTIVE_SESSIONS, meetingId=meeting.id)
    assert response["success"] is False
    assert "defined as Query" in response["result"]
    assert await meeting.host.api.active_sessions(meeting.id) == []  # nothing ran


async def test_every_mutation_answer_is_followed_by_a_transition(backend: Backend) -> None:
    """Clients resolve a mutation only on a Transition at or past its ts (convex-rs
    RequestManager: only actions and failures without errorData resolve on the response;
    convex-js: every success), so one must follow each MutationResponse, even when the
    mutation changed nothing or failed with a ConvexError."""
    meeting = await backend.meeting(2)
    host, guest = meeting.members
    await send_signal(meeting, host, guest, 1)
    [signal_] = await guest.api.pending_signals(meeting.id)
    mutations = {
        "one that writes": (fn.MARK_SIGNALS_PROCESSED, {"signalIds": [signal_.id]}),
        "one that writes nothing": (fn.MARK_SIGNALS_PROCESSED, {"signalIds": []}),
        "one that fails": (fn.CLOSE_SESSION, {"meetingId": "mtg_bad", "sessionId": "x"}),
    }
    unresolved = []
    async with raw_sync(backend) as raw:
        await signed_in(raw, guest)
        for label, (function, args) in mutations.items():
            response = await raw.mutation(function, **args)
            try:
                transition = await raw.receive(timeout=1.0)
            except TimeoutError:
                unresolved.append(label)
                continue
            assert transition["type"] == "Transition"
            if "ts" in response:
                assert ts_of(transition["endVersion"]["ts"]) >= ts_of(response["ts"])
    assert unresolved == [], "no Transition followed the MutationResponse"


async def test_mutations_that_change_nothing_return(backend: Backend, oracle: Oracle) -> None:
    """The official client's view of the test above: its `mutation` must return."""
    meeting = await backend.meeting(1)
    client = oracle.client(meeting.host)
    with deadline():
        assert client.mutation(udf(fn.MARK_SIGNALS_PROCESSED), {"signalIds": []}) is None
    with pytest.raises(convex.ConvexError, match="defined as Query"), deadline():
        client.mutation(udf(fn.GET_ACTIVE_SESSIONS), {"meetingId": meeting.id})


async def test_numbers_from_the_official_client_are_accepted(
    backend: Backend, oracle: Oracle
) -> None:
    """A Convex number is a float64, and the official client sends Python's 2 as one (an int64
    only when asked, with ConvexInt64): maxParticipants and limit, v.number() in the
    contract's OpenAPI, must take it."""
    meeting = await backend.meeting(1)
    client = oracle.client(meeting.host)
    with deadline():
        room = client.action(
            udf(fn.INITIALIZE_WEBRTC_ROOM), {"meetingId": meeting.id, "maxParticipants": 2}
        )
    assert room["features"]["maxParticipants"] == 2
    chunks = oracle.subscribe(client, fn.GET_TRANSCRIPT_CHUNKS, meetingId=meeting.id, limit=5)
    assert await chunks.next() == []


async def test_http_calls_work_alongside_and_agree(backend: Backend, oracle: Oracle) -> None:
    meeting = await backend.meeting(2)
    host, guest = meeting.members
    feed = oracle.watch(guest, fn.GET_PENDING_SIGNALS, meetingId=meeting.id)
    assert await feed.next() == []
    for n in range(3):
        await send_signal(meeting, host, guest, n)
    [*_, signals] = await feed.until(lambda value: len(value) == 3)
    assert [s.id for s in await guest.api.pending_signals(meeting.id)] == ids(signals)

    with deadline():
        feed.client.mutation(udf(fn.MARK_SIGNALS_PROCESSED), {"signalIds": ids(signals[:1])})
    assert [s.id for s in await guest.api.pending_signals(meeting.id)] == ids(signals[1:])
    assert ids(await feed.next()) == ids(signals[1:])


async def test_delivery_latency(backend: Backend, oracle: Oracle) -> None:
    """Every signal reaches the subscriber, in order; the latency (HTTP insert to the update)
    is printed, not asserted: speed belongs in benchmarks."""
    meeting = await backend.meeting(2)
    host, guest = meeting.members
    feed = oracle.watch(guest, fn.GET_PENDING_SIGNALS, meetingId=meeting.id)
    assert await feed.next() == []
    latencies = []
    for n in range(20):
        sent = time.monotonic()
        await send_signal(meeting, host, guest, n)
        arrived, value = await feed.next_timed()
        assert numbers(value) == list(range(n + 1))
        latencies.append(arrived - sent)
    p95 = statistics.quantiles(latencies, n=20)[-1]
    print(
        f"sync delivery: median {statistics.median(latencies) * 1e3:.1f} ms, p95 {p95 * 1e3:.1f} ms"
    )


# --- the protocol, through a raw client ---------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/sync", "/api/1.2.3/sync"])
async def test_a_signal_to_another_user_sends_nothing(backend: Backend, path: str) -> None:
    meeting = await backend.meeting(3)
    host, first, second = meeting.members
    async with raw_sync(backend, path) as raw:
        query = raw.add(fn.GET_PENDING_SIGNALS, meetingId=meeting.id)
        await signed_in(raw, first, query)
        assert raw.value(query["queryId"]) == []
        await send_signal(meeting, host, second, 1)
        await raw.silent()
        await send_signal(meeting, host, first, 2)
        assert [change["queryId"] for change in (await raw.transition())["modifications"]] == [
            query["queryId"]
        ]
        assert numbers(raw.value(query["queryId"])) == [2]


async def test_transitions_chain_their_versions(backend: Backend) -> None:
    meeting = await backend.meeting(2)
    host, guest = meeting.members
    async with raw_sync(backend) as raw:
        await raw.authenticate(guest.token)
        assert (await raw.transition())["endVersion"]["identity"] == 1

        signals = raw.add(fn.GET_PENDING_SIGNALS, meetingId=meeting.id)
        sessions = raw.add(fn.GET_ACTIVE_SESSIONS, meetingId=meeting.id)
        await raw.modify(signals, sessions)
        added = await raw.transition()
        assert added["endVersion"]["querySet"] == 1
        assert {c["queryId"]: c["value"] for c in added["modifications"]} == {0: [], 1: []}

        await raw.authenticate(guest.token)  # the same user again: the queries run, unchanged
        again = await raw.transition()
        assert (again["endVersion"]["identity"], again["modifications"]) == (2, [])

        before = ts_of(raw.version["ts"])
        await send_signal(meeting, host, guest, 1)
        moved = await raw.transition()
        assert [c["queryId"] for c in moved["modifications"]] == [0]
        assert ts_of(moved["endVersion"]["ts"]) > before

        # read your writes: by the first Transition at or past the mutation's ts, it shows
        response = await raw.mutation(fn.MARK_SIGNALS_PROCESSED, signalIds=ids(raw.value(0)))
        assert response["success"] is True
        while ts_of(raw.version["ts"]) < ts_of(response["ts"]):
            await raw.transition()
        assert raw.value(0) == []

        await raw.modify({"type": "Remove", "queryId": 1})
        removed = await raw.transition()
        assert removed["modifications"] == [{"type": "QueryRemoved", "queryId": 1}]
        assert removed["endVersion"]["querySet"] == 2

        await raw.authenticate(None)
        signed_out = await raw.transition()
        assert signed_out["endVersion"]["identity"] == 3
        assert raw.results[0]["type"] == "QueryFailed"
        assert raw.results[0]["errorData"]["code"] == "UNAUTHORIZED"

    assert raw.transitions[0]["startVersion"] == ZERO
    for previous, following in itertools.pairwise(raw.transitions):
        assert following["startVersion"] == previous["endVersion"]


async def test_a_bad_token_gets_an_auth_error(backend: Backend) -> None:
    async with raw_sync(backend, "/api/1.2.3/sync") as raw:
        await raw.authenticate("not-a-token")
        error = await raw.expect("AuthError")
        assert error["baseVersion"] == 0
        assert error["authUpdateAttempted"] is True
        assert "Invalid authentication token" in error["error"]
        assert await raw.closed() is not None


async def test_bad_queries_fail_alone(backend: Backend) -> None:
    """Bad args, an unknown function: the query fails, the connection carries on."""
    async with raw_sync(backend) as raw:
        await raw.modify(
            {**raw.add(fn.GET_CURRENT_USER), "args": {}},  # args must be [ {...} ]
            raw.add("meetings/nowhere/nothing"),
            raw.add(fn.GET_PENDING_SIGNALS, meetingId="mtg_bad"),
        )
        failed = await raw.transition()
        assert [(c["type"], c["errorData"]["code"]) for c in failed["modifications"]] == [
            ("QueryFailed", "VALIDATION_ERROR"),
            ("QueryFailed", "NOT_FOUND"),
            ("QueryFailed", "VALIDATION_ERROR"),
        ]
        await raw.modify(raw.add(fn.GET_CURRENT_USER))
        await raw.transition()
        assert raw.value(3) is None


def _modify(*modifications: Any, base: int = 0) -> dict[str, Any]:
    return {
        "type": "ModifyQuerySet",
        "baseVersion": base,
        "newVersion": base + 1,
        "modifications": list(modifications),
    }


FATAL: dict[str, Any] = {
    "not JSON": "{",
    "not an object": "[]",
    "binary frame": b'{"type": "Connect"}',
    "unknown type": {"type": "Subscribe"},
    "query set base version": _modify(base=7),
    "identity base version": {"type": "Authenticate", "baseVersion": 3, "tokenType": "None"},
    "admin token": {"type": "Authenticate", "baseVersion": 0, "tokenType": "Admin", "value": "x"},
    "no queryId": _modify({"type": "Add", "udfPath": udf(fn.GET_CURRENT_USER), "args": [{}]}),
    "unknown modification": _modify({"type": "Replace", "queryId": 0}),
    "no requestId": {"type": "Mutation", "udfPath": udf(fn.CLOSE_SESSION), "args": [{}]},
    "too large": {"type": "Event", "eventType": "x", "event": "x" * MAX_MESSAGE},
}


@pytest.mark.parametrize("message", FATAL.values(), ids=FATAL.keys())
async def test_protocol_violations_are_fatal(backend: Backend, message: Any) -> None:
    async with raw_sync(backend) as raw:
        await raw.send(message)
        assert await raw.fatal()


async def test_a_query_id_is_added_once(backend: Backend) -> None:
    async with raw_sync(backend) as raw:
        query = raw.add(fn.GET_CURRENT_USER)
        await raw.modify(query)
        await raw.transition()
        await raw.modify(query)
        assert "already" in await raw.fatal()


async def test_more_than_max_queries_is_fatal(backend: Backend) -> None:
    async with raw_sync(backend) as raw:
        await raw.modify(*(raw.add(fn.GET_CURRENT_USER) for _ in range(MAX_QUERIES)))
        assert len((await raw.transition())["modifications"]) == MAX_QUERIES
        await raw.modify(raw.add(fn.GET_CURRENT_USER))
        assert str(MAX_QUERIES) in await raw.fatal()


def test_a_write_published_while_a_query_ran_is_caught():
    """A query runs in a thread; a write committed after its read may be published before the
    subscription watches: Hub.touched_since says to run it again."""
    hub = Hub()
    signals = Read("webrtcSignals", (("meetingId", "mtg_a"), ("toUserId", "usr_b")))
    started = hub.ts
    hub.publish([Write("webrtcSignals", None, {"meetingId": "mtg_a", "toUserId": "usr_c"})])
    assert not hub.touched_since(started, [signals])  # someone else's signal
    hub.publish([Write("webrtcSignals", None, {"meetingId": "mtg_a", "toUserId": "usr_b"})])
    assert hub.touched_since(started, [signals])
    assert not hub.touched_since(hub.ts, [signals])  # nothing since


async def test_a_burst_of_writes_sends_one_result_per_query_a_transition(backend: Backend) -> None:
    """Writes landing while a query runs make it run again; only its last result is sent (as
    Convex does), or a burst of signals would put many copies of the page into one message."""
    meeting = await backend.meeting(2)
    host, guest = meeting.members
    burst = 40
    padding = " " + "x" * 4_000  # a slower query, so that writes land while it runs
    async with raw_sync(backend) as raw:
        query = raw.add(fn.GET_PENDING_SIGNALS, meetingId=meeting.id)
        await signed_in(raw, guest, query)
        limit = asyncio.Semaphore(8)

        async def send(n: int) -> None:
            async with limit:
                signal = {"candidate": candidate(n)["candidate"] + padding}
                await host.api.send_candidate(meeting.id, "s1", signal, guest.user_id)

        sending = asyncio.gather(*(send(n) for n in range(burst)))
        while len(raw.results[query["queryId"]].get("value", [])) < burst:
            await raw.transition()
        await sending
        for transition in raw.transitions:
            query_ids = [change["queryId"] for change in transition["modifications"]]
            assert len(query_ids) == len(set(query_ids)), f"{len(query_ids)} results of one query"
        assert sorted(numbers(raw.value(query["queryId"]))) == list(range(burst))
