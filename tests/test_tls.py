"""TLS on every HTTP path and on the sync socket (wss), against real sockets on loopback: the dev
backend behind a TLS-terminating proxy whose certificate comes from a throwaway CA (trustme), and
a plain TCP listener given as an https URL, which must never see a token."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from conftest import Backend
from relay import pipe

from agent.ice import IceOptions
from agent.load.http import LoadHTTP
from agent.pump import PollSettings
from agent.room import JoinRequest, Room, RoomSettings
from signaling import functions as fn
from signaling.api import ConnvoAPI
from signaling.client import ConvexClient, HttpxTransport, RetryPolicy, shared_http
from signaling.errors import TLSError, TransportError
from signaling.sync import SyncClient

TOKEN = "tok-3f9c1e-very-secret"
FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)
CURRENT_USER = fn.GET_CURRENT_USER
WAIT = 5.0
"""Longest wait for anything owed over the socket: a bug fails the test instead of hanging it."""


class TLSProxy:
    """Terminates TLS on 127.0.0.1 with a certificate of `ca` and forwards the bytes to the dev
    backend; counts the connections that got through the handshake."""

    def __init__(self, ca: trustme.CA, upstream: str) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(self.context)
        host, port = upstream.removeprefix("http://").rsplit(":", 1)
        self.upstream = (host, int(port))
        self.forwarded = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        context = self.context
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=context)
        self.url = f"https://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        self.forwarded += 1
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            up_writer.close()
            writer.close()


class PlainListener:
    """A plain TCP listener that keeps every byte it is sent. It answers what a plain HTTP
    server answers to a TLS ClientHello (a 400), or closes at once."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.received = b""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"https://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.received += await reader.read(65536)
        if self.answer:
            writer.write(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
            writer.close()
            # keep what else arrives (a client that went on regardless would send it now)
            self.received += await reader.read(65536)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
async def proxy(ca: trustme.CA, backend: Backend) -> AsyncIterator[TLSProxy]:
    p = TLSProxy(ca, backend.url)
    await p.start()
    yield p
    await p.stop()


async def connvo_agent(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """The CLI in a child process (no $SSL_CERT_FILE but `env`'s), while this loop keeps
    serving the proxy."""
    base = {k: v for k, v in os.environ.items() if k != "SSL_CERT_FILE"}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=base | (env or {}),
    )  # fmt: skip
    out, err = await asyncio.wait_for(child.communicate(), timeout=100)
    assert child.returncode is not None
    return child.returncode, out.decode(), err.decode()


# --- through the proxy -----------------------------------------------------------------------


@pytest.mark.slow
async def test_load_over_https_with_a_private_ca_succeeds(
    backend: Backend, proxy, ca_file, tmp_path
):
    host, _ = backend.user(backend.unique("tls-host"))
    tokens = [backend.user(backend.unique("tls-bot"))[0] for _ in range(4)]
    (tmp_path / "tokens").write_text("\n".join(tokens) + "\n")
    code, out, err = await connvo_agent(
        "load", "--url", proxy.url, "--ca-file", ca_file, "--host-token", host,
        "--tokens", str(tmp_path / "tokens"), "--meetings", "2", "--participants", "2",
        "--duration", "0.5", "--workers", "1", "--json",
    )  # fmt: skip
    assert code == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["bots"], summary["success_rate"]) == (4, 100.0)
    # set-up and teardown (httpx), and the bots' own pool in the worker process
    assert proxy.forwarded >= 2


async def test_load_without_the_ca_refuses_the_certificate_in_one_line(backend, proxy, tmp_path):
    host, _ = backend.user(backend.unique("tls-host"))
    (tmp_path / "tokens").write_text(backend.user(backend.unique("tls-bot"))[0] + "\n")
    code, out, err = await connvo_agent(
        "load", "--url", proxy.url, "--host-token", host, "--tokens", str(tmp_path / "tokens"),
        "--meetings", "1", "--participants", "1", "--workers", "0",
    )  # fmt: skip
    assert code == 2
    assert err.strip().count("\n") == 0 and "certificate not trusted" in err, err
    assert proxy.forwarded == 0 and host not in out + err


async def test_join_over_https_with_ca_file(backend: Backend, proxy, ca_file):
    meeting = await backend.meeting(1)
    code, out, err = await connvo_agent(
        "join", "--url", proxy.url, "--ca-file", ca_file, "--meeting", meeting.id,
        "--duration", "0.5", "--ice-address", "127.0.0.1", "--json",
        env={"CONNVO_TOKEN": meeting.host.token},
    )  # fmt: skip
    assert code == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["userId"] == meeting.host.user_id and proxy.forwarded >= 1


@pytest.mark.parametrize("how", ["--ca-file", "SSL_CERT_FILE"])
@pytest.mark.parametrize("bad", ["missing.pem", "empty.pem"])
async def test_a_bad_ca_bundle_is_one_line_and_exit_2(tmp_path, bad, how):
    (tmp_path / "empty.pem").write_text("not a certificate\n")
    bundle = str(tmp_path / bad)
    option = ["--ca-file", bundle] if how == "--ca-file" else []
    code, _, err = await connvo_agent(
        "join", "--url", "https://127.0.0.1:9", *option, "--meeting", "m", "--token", TOKEN,
        env={"SSL_CERT_FILE": bundle} if how == "SSL_CERT_FILE" else None,
    )  # fmt: skip
    assert code == 2 and f"cannot use the CA bundle {bundle}" in err, err
    assert "Traceback" not in err and TOKEN not in err


async def test_typed_client_trusts_ssl_cert_file(backend: Backend, proxy, ca_file, monkeypatch):
    token, user_id = backend.user(backend.unique("tls"))
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)
    user = await ConnvoAPI(proxy.url, token).current_user()
    assert user is not None and user.id == user_id
    await shared_http().aclose()


async def test_typed_client_refuses_an_unknown_ca(backend: Backend, proxy, monkeypatch):
    token, _ = backend.user(backend.unique("tls"))
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with pytest.raises(TLSError) as info:
        await ConnvoAPI(proxy.url, token, retry=FAST).current_user()
    assert info.value.sent is False and "certificate not trusted" in str(info.value)
    assert proxy.forwarded == 0  # the handshake failed: no request reached the backend
    await shared_http().aclose()


# --- a plain listener given as https -------------------------------------------------------


TRANSPORTS: dict[str, Callable[[], HttpxTransport | LoadHTTP]] = {
    "typed-client": shared_http,
    "load-bots": lambda: LoadHTTP(timeout=2, connect_timeout=2),
}


@pytest.mark.parametrize("transport", list(TRANSPORTS))
@pytest.mark.parametrize("answer", [True, False], ids=["answers-400", "closes"])
async def test_a_plain_listener_never_sees_the_token(transport: str, answer: bool):
    listener = PlainListener(answer)
    await listener.start()
    http = TRANSPORTS[transport]()
    client = ConvexClient(listener.url, TOKEN, http=http, retry=FAST)
    with pytest.raises(TransportError) as info:
        await client.call(CURRENT_USER, {})
    assert info.value.function == CURRENT_USER.path and info.value.sent is False
    if answer:  # it spoke plain HTTP back: no TLS server, and no second try
        assert type(info.value) is TLSError and "TLS handshake failed" in str(info.value)
    assert listener.received.startswith(b"\x16\x03")  # TLS records (a ClientHello), only
    assert b"authorization" not in listener.received.lower()
    assert TOKEN.encode() not in listener.received and b"POST" not in listener.received
    await http.aclose()


# --- the sync socket (wss) ------------------------------------------------------------------


def private_ca_room(url: str, token: str, meeting_id: str, ca_file: str) -> Room:
    settings = RoomSettings(poll=PollSettings(fast=0.05, idle=0.2), discovery_interval=0.5)
    return Room(
        url, token, meeting_id, request=JoinRequest(), ice=IceOptions.loopback(),
        settings=settings, ca_file=ca_file,
    )  # fmt: skip


async def test_sync_over_wss_with_a_private_ca_pushes_a_signal(backend: Backend, proxy, ca_file):
    meeting = await backend.meeting(2)
    host, guest = meeting.host, meeting[1]
    changed = asyncio.Event()
    sync = SyncClient(proxy.url, guest.token, ca_file=ca_file)
    try:
        async with asyncio.timeout(WAIT):
            await sync.connect()
            args = {"meetingId": meeting.id}
            pending = await sync.subscribe(fn.GET_PENDING_SIGNALS, args, changed.set)
            while not pending.live:  # the first result: nothing pending yet
                await changed.wait()
                changed.clear()
            assert pending.error is None and pending.value == []
            candidate = {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0"}
            await host.api.send_candidate(meeting.id, "s1", candidate, guest.user_id)
            while not pending.value:
                await changed.wait()
                changed.clear()
    finally:
        await sync.close()
    [signal] = pending.value
    assert signal.fromUserId == host.user_id and signal.data.candidate == candidate["candidate"]
    assert sync.connections == 1 and proxy.forwarded >= 1


async def test_rooms_joined_over_https_with_a_private_ca_have_signals_pushed(
    backend: Backend, proxy, ca_file
):
    meeting = await backend.meeting(2)
    a, b = (private_ca_room(proxy.url, meeting[i].token, meeting.id, ca_file) for i in range(2))
    try:
        async with a, b:
            async with asyncio.timeout(15):
                while not (a.connected_peers() and b.connected_peers()):
                    await asyncio.sleep(0.05)
            assert (a.stats().signals, b.stats().signals) == ("push", "push")
            assert a.stats().signals_pushed > 0 and b.stats().signals_pushed > 0
    finally:
        await shared_http(ca_file).aclose()


@pytest.mark.parametrize("trust", ["another-ca", "certifi"])
async def test_sync_without_the_ca_is_a_tls_error_and_sends_no_token(
    backend: Backend, proxy, tmp_path, monkeypatch, trust
):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    other = None
    if trust == "another-ca":
        other = str(tmp_path / "other.pem")
        trustme.CA().cert_pem.write_to_path(other)
    sync = SyncClient(proxy.url, TOKEN, ca_file=other)
    started = time.monotonic()
    with pytest.raises(TLSError) as info:
        async with asyncio.timeout(2.0):  # no waiting out the open timeout, no retries
            await sync.connect()
    assert time.monotonic() - started < 2.0 and info.value.sent is False
    assert not sync.live and sync.connections == 0
    assert proxy.forwarded == 0  # the handshake failed: not one byte reached the backend
    assert TOKEN not in str(info.value) and TOKEN not in repr(sync)
    await sync.close()


@pytest.mark.parametrize("answer", [True, False], ids=["answers-400", "closes"])
async def test_a_plain_listener_never_sees_the_token_on_the_sync_socket(answer: bool):
    listener = PlainListener(answer)
    await listener.start()
    sync = SyncClient(listener.url, TOKEN)
    with pytest.raises(TransportError) as info:
        async with asyncio.timeout(WAIT):
            await sync.connect()
    assert info.value.sent is False and not sync.live
    if answer:  # it spoke plain HTTP back: no TLS server
        assert type(info.value) is TLSError
    assert listener.received.startswith(b"\x16\x03")  # TLS records (a ClientHello), only
    assert TOKEN.encode() not in listener.received and b"Authenticate" not in listener.received
    assert b"GET " not in listener.received and b"upgrade" not in listener.received.lower()
    await sync.close()
