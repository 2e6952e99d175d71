"""The Convex HTTP client against real misbehaving HTTP servers on loopback (no mocks).

`server` is a raw asyncio TCP server on 127.0.0.1; each test scripts its replies (the last one
repeats) and reads back what it received, to assert exception classes and retry counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import traceback
from collections.abc import Iterator
from typing import Any

import certifi
import httpx
import pytest

from agent.load.http import LoadHTTP
from signaling import functions as fn
from signaling.api import ConnvoAPI
from signaling.client import (
    MAX_ANSWER_BYTES,
    ConvexClient,
    HttpxTransport,
    RetryPolicy,
    shared_http,
)
from signaling.errors import (
    AnswerTooLarge,
    ApplicationError,
    Forbidden,
    RateLimitExceeded,
    SchemaError,
    Timeout,
    TransportError,
    Unauthorized,
)

TOKEN = "tok-3f9c1e-very-secret"
FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)
SIGNALS = fn.GET_PENDING_SIGNALS  # retry-safe
DESCRIBE = fn.EXCHANGE_SESSION_DESCRIPTION  # not retry-safe
ROOM = fn.INITIALIZE_WEBRTC_ROOM
ARGS = {
    SIGNALS: {"meetingId": "m1"},
    DESCRIBE: {
        "meetingId": "m1",
        "sessionId": "s1",
        "description": {"type": "offer", "sdp": "v=0"},
        "targetUserId": "u2",
    },
    ROOM: {"meetingId": "m1"},
}
HANG, CLOSE = "hang", "close"


def reply(status: int, body: Any, content_type: str = "application/json") -> bytes:
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    head = f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {len(data)}"
    return f"{head}\r\n\r\n".encode() + data


def success(value: Any) -> bytes:
    return reply(200, {"status": "success", "value": value})


def app_error(code: str, status: int = 400) -> bytes:
    return reply(status, {"status": "error", "errorData": {"code": code, "message": "no"}})


class MisbehavingServer:
    """Answers each request with the next scripted reply: raw bytes, HANG (read, never answer)
    or CLOSE (drop the connection as soon as it is accepted)."""

    def __init__(self) -> None:
        self.replies: list[bytes | str] = [success(None)]
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.attempts = 0  # requests read + connections dropped on accept
        self.connections = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    def script(self, *replies: bytes | str) -> None:
        self.replies = list(replies)

    def _next(self) -> bytes | str:
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        self.connections += 1
        try:
            while True:
                if self.replies[0] == CLOSE:
                    self.attempts += 1
                    self._next()
                    return
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                headers = dict(line.split(": ", 1) for line in lines[1:] if line)
                headers = {k.lower(): v for k, v in headers.items()}
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                self.requests.append((lines[0], headers, json.loads(body or b"null")))
                self.attempts += 1
                answer = self._next()
                if answer == HANG:
                    await asyncio.Event().wait()
                writer.write(answer)  # type: ignore[arg-type]
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the fixture is shutting down
        finally:
            writer.close()


@pytest.fixture
async def server():
    s = MisbehavingServer()
    await s.start()
    yield s
    await s.stop()


@pytest.fixture(params=["httpx", "load-bots"])
async def http(request):
    """Each test runs on both transports: the typed client's (httpx) and the load bots'."""
    if request.param == "httpx":
        transport = HttpxTransport(httpx.AsyncClient(timeout=0.3, trust_env=False))
    else:
        transport = LoadHTTP(timeout=0.3, connect_timeout=0.3)
    yield transport
    await transport.aclose()


@pytest.fixture
def client(server: MisbehavingServer, http: HttpxTransport | LoadHTTP) -> ConvexClient:
    return ConvexClient(server.url, TOKEN, http=http, retry=FAST)


@contextlib.contextmanager
def unreachable(kind: str) -> Iterator[str]:
    """A loopback URL whose port refuses connections, or whose full accept queue drops the SYN
    (the connection attempt times out)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        if kind == "refused":
            listener.close()
            yield url
            return
        listener.listen(0)
        fillers = [socket.socket() for _ in range(4)]
        for f in fillers:
            f.setblocking(False)
            f.connect_ex(listener.getsockname())
        try:
            yield url
        finally:
            for f in fillers:
                f.close()


# --- failures answered (or not) by the server ---------------------------------------------------


@pytest.mark.parametrize("path", [SIGNALS, DESCRIBE])
@pytest.mark.parametrize(
    ("answer", "cls"),
    [
        (reply(500, {"status": "error", "errorMessage": "Server Error"}), TransportError),
        (reply(502, "<html><h1>502 Bad Gateway</h1></html>", "text/html"), TransportError),
        (reply(200, "definitely not json", "text/plain"), TransportError),
        (HANG, Timeout),
        (CLOSE, TransportError),
        (app_error("FORBIDDEN", 403), Forbidden),
        (app_error("SOMETHING_NEW"), ApplicationError),
        (app_error("UNAUTHORIZED", 401), Unauthorized),
        (reply(401, {"status": "error", "errorMessage": "Unauthenticated"}), Unauthorized),
        (reply(401, "Unauthorized", "text/plain"), Unauthorized),
    ],
    ids=[
        *("500-json", "502-html", "200-garbage", "timeout", "close", "forbidden", "unknown-code"),
        *("401-convex", "401-no-error-data", "401-plain-text"),
    ],
)
async def test_failure_class_and_retries(server, client, path, answer, cls):
    server.script(answer)
    with pytest.raises(cls) as info:
        await client.call(path, ARGS[path])
    assert type(info.value) is cls
    assert info.value.function == path.path
    retried = issubclass(cls, TransportError) and path == SIGNALS
    assert server.attempts == (3 if retried else 1)
    if issubclass(cls, TransportError):
        assert info.value.sent is True
    if cls is ApplicationError:
        assert info.value.code == "SOMETHING_NEW"


async def test_request_shape_and_success(server, client):
    assert await client.call(DESCRIBE, ARGS[DESCRIBE]) is None
    [(line, headers, body)] = server.requests
    assert line == f"POST /api/run/{DESCRIBE.path} HTTP/1.1"
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert body == {"args": ARGS[DESCRIBE], "format": "json"}


@pytest.mark.parametrize("kind", ["refused", "backlog-full"])
async def test_unsent_requests_are_retried_even_when_not_retry_safe(kind, http, caplog):
    caplog.set_level(logging.DEBUG, logger="signaling.client")
    with unreachable(kind) as url:
        client = ConvexClient(url, TOKEN, http=http, retry=FAST)
        with pytest.raises(TransportError) as info:
            await client.call(DESCRIBE, ARGS[DESCRIBE])
    assert (info.value.function, info.value.sent) == (DESCRIBE.path, False)
    assert caplog.text.count("retrying") == 2  # 3 attempts


async def test_pool_timeout_is_unsent(server):
    server.script(HANG)
    timeout, limits = httpx.Timeout(5.0, pool=0.05), httpx.Limits(max_connections=1)
    async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as http:
        client = ConvexClient(server.url, TOKEN, http=HttpxTransport(http), retry=FAST)
        busy = asyncio.create_task(client.call(SIGNALS, ARGS[SIGNALS]))  # holds the only socket
        while not server.attempts:
            await asyncio.sleep(0.01)
        with pytest.raises(TransportError) as info:
            await client.call(DESCRIBE, ARGS[DESCRIBE])
        assert info.value.sent is False and server.attempts == 1
        busy.cancel()
        await asyncio.gather(busy, return_exceptions=True)


async def test_rate_limit_is_retried_for_non_retry_safe_function(server, client):
    server.script(
        app_error("RATE_LIMIT_EXCEEDED", 429), app_error("RATE_LIMIT_EXCEEDED", 429), success(None)
    )
    assert await client.call(DESCRIBE, ARGS[DESCRIBE]) is None
    assert server.attempts == 3


async def test_rate_limit_gives_up_after_the_attempts(server, client):
    server.script(app_error("RATE_LIMIT_EXCEEDED", 429))
    with pytest.raises(RateLimitExceeded) as info:
        await client.call(DESCRIBE, ARGS[DESCRIBE])
    assert info.value.function == DESCRIBE.path
    assert server.attempts == 3


# --- schemas ---------------------------------------------------------------------------------

ROOM_VALUE = {
    "success": True,
    "provider": "webrtc",
    "roomId": "r1",
    "features": {
        "chat": True,
        "recording": False,
        "transcription": False,
        "screenSharing": True,
        "maxParticipants": 4,
    },
}


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (ROOM, {k: v for k, v in ROOM_VALUE.items() if k != "features"}, "features"),
        (
            ROOM,
            {**ROOM_VALUE, "features": {**ROOM_VALUE["features"], "chat": "maybe"}},
            "features.chat",
        ),
        (ROOM, {**ROOM_VALUE, "provider": "zoom"}, "provider"),
        (SIGNALS, [{"_id": "s", "type": "fax"}], "0.type"),
    ],
    ids=["features-missing", "chat-string", "provider", "signal-type"],
)
async def test_answer_not_matching_schema(server, client, path, value, field):
    server.script(success(value))
    with pytest.raises(SchemaError) as info:
        await client.call(path, ARGS[path])
    assert (info.value.function, info.value.field, info.value.direction) == (
        path.path,
        field,
        "answer",
    )
    assert server.attempts == 1


async def test_answer_matching_schema_parses(server, client):
    server.script(success(ROOM_VALUE))
    room = await client.call(ROOM, ARGS[ROOM])
    assert room.features.chat is True and room.roomId == "r1"


async def test_answer_with_unknown_status(server, client):
    server.script(reply(200, {"status": "weird"}))
    with pytest.raises(SchemaError) as info:
        await client.call(SIGNALS, ARGS[SIGNALS])
    assert (info.value.field, info.value.direction) == ("status", "answer")


@pytest.mark.parametrize(
    ("path", "args", "field"),
    [
        (SIGNALS, {}, "meetingId"),
        (SIGNALS, {"meetingId": "m1", "sesionId": "typo"}, "sesionId"),
        (
            DESCRIBE,
            {**ARGS[DESCRIBE], "description": {"type": "bogus", "sdp": ""}},
            "description.type",
        ),
    ],
)
async def test_bad_args_are_refused_before_sending(server, client, path, args, field):
    with pytest.raises(SchemaError) as info:
        await client.call(path, args)
    assert (info.value.function, info.value.field, info.value.direction) == (
        path.path,
        field,
        "args",
    )
    assert server.attempts == 0 and server.connections == 0


# --- secrecy and the shared pool ------------------------------------------------------------


async def test_token_never_leaks(server, http, caplog):
    caplog.set_level(logging.DEBUG)
    api = ConnvoAPI(server.url, TOKEN, http=http, retry=FAST)
    with unreachable("refused") as closed_port:
        refused = ConnvoAPI(closed_port, TOKEN, http=http, retry=FAST)
    errors: list[Exception] = []
    for answer, call in [
        (reply(500, {"status": "error", "errorMessage": "boom"}), api.pending_signals("m1")),
        (HANG, api.send_description("m1", "s1", {"type": "offer", "sdp": "v=0"}, "u2")),
        (CLOSE, api.pending_signals("m1")),
        (app_error("RATE_LIMIT_EXCEEDED", 429), api.pending_signals("m1")),
        (app_error("UNAUTHORIZED", 401), api.pending_signals("m1")),
        (success({"roomId": 1}), api.initialize_room("m1")),
        (CLOSE, refused.pending_signals("m1")),  # refused: the server is not involved
    ]:
        server.script(answer)
        with pytest.raises(Exception) as info:
            await call
        errors.append(info.value)
    assert all(h["authorization"] == f"Bearer {TOKEN}" for _, h, _ in server.requests)
    texts = [repr(api), repr(api.client), repr(refused), caplog.text]
    for e in errors:
        texts += [str(e), repr(e), "".join(traceback.format_exception(e))]
    assert "***" in repr(api)
    assert not [t for t in texts if TOKEN in t]


async def test_shared_http_is_one_pool_per_loop(server):
    pool = shared_http()
    assert shared_http() is pool
    a, b = (
        ConvexClient(server.url, TOKEN, retry=FAST),
        ConvexClient(server.url, "other", retry=FAST),
    )
    server.script(success([]))
    assert await a.call(SIGNALS, ARGS[SIGNALS]) == []
    await b.call(SIGNALS, ARGS[SIGNALS])
    assert (server.attempts, server.connections) == (2, 1)  # both went through one pool

    async def in_other_loop() -> HttpxTransport:
        return shared_http()

    other = await asyncio.to_thread(asyncio.run, in_other_loop())
    assert other is not pool
    await other.aclose()
    await pool.aclose()
    assert shared_http() is not pool  # a closed pool is replaced
    other_bundle = shared_http(certifi.where())
    assert other_bundle is not shared_http() and other_bundle is shared_http(certifi.where())
    await shared_http().aclose()
    await other_bundle.aclose()


# --- answer sizes ------------------------------------------------------------------------------


def _chunked(size: int) -> bytes:
    chunk = b"x" * (1 << 20)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked"
    body = (b"100000\r\n" + chunk + b"\r\n") * (size // len(chunk) + 1)
    return head + b"\r\n\r\n" + body + b"0\r\n\r\n"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_an_oversized_answer_is_refused_and_not_retried(server, client, framing):
    too_big = MAX_ANSWER_BYTES + 1
    server.script(reply(200, "x" * too_big) if framing == "content-length" else _chunked(too_big))
    with pytest.raises(AnswerTooLarge) as info:
        await client.call(SIGNALS, ARGS[SIGNALS])  # retry-safe, yet not repeated: no use
    assert info.value.function == SIGNALS.path and SIGNALS.path in str(info.value)
    assert server.attempts == 1


async def test_the_largest_legitimate_answer_fits(server, client):
    # a full page: 50 signals, each an SDP of 64 KiB (about 4.5 MiB of JSON, line ends escaped)
    sdp = "v=0\r\n" + "a=x\r\n" * (64 * 1024 // 5)
    signal = {"_id": "s", "type": "sdp", "fromUserId": "u", "sessionId": "x", "timestamp": 1}
    page = [{**signal, "_id": f"s{i}", "data": {"type": "offer", "sdp": sdp}} for i in range(50)]
    server.script(success(page))
    signals = await client.call(SIGNALS, ARGS[SIGNALS])
    assert len(signals) == 50 and len(signals[0].data.sdp) >= 64 * 1024
