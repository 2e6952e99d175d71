"""Pushed query results: Convex's sync protocol over one WebSocket per user.

    sync = SyncClient(url, token)
    await sync.connect()                       # typed errors; SyncUnavailable: poll instead
    pending = await sync.subscribe(fn.GET_PENDING_SIGNALS, {"meetingId": m}, on_change=wake)
    ...
    if pending.live: handle(pending.value)     # the current result, parsed like an HTTP answer
    await sync.close()

Only subscriptions travel on the socket; every call stays on HTTP (`signaling.client`). Message
shapes: get-convex/convex-js `src/browser/sync/protocol.ts`. Once connected the client keeps
itself connected: a dropped socket is reopened with backoff and every subscription added again,
so its first result after the reconnect is the whole current result. While the socket is down a
subscription is not `live`, and its owner reads by other means (the pump polls).

Why not the official `convex` package: README, "Dependency notes".
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus, WebSocketException

from signaling.convention import (
    MAX_ANSWER_BYTES,
    MAX_CHUNKS,
    SYNC_BACKOFF,
    SYNC_HEALTHY,
    SYNC_INACTIVE,
    SYNC_OPEN_TIMEOUT,
)
from signaling.errors import (
    ConnvoError,
    SchemaError,
    TLSError,
    TransportError,
    Unauthorized,
)
from signaling.functions import Function
from signaling.wire import (
    error_from,
    origin_of,
    parse_answer,
    tls_context,
    tls_failure,
)

log = logging.getLogger(__name__)

WHERE = "sync"
"""The `function` our errors name: the socket, not one call."""
CLIENT = "connvo-agent-0.1.0"
MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError)
"""What reading a message of the wrong shape raises (JSON and Unicode errors are ValueErrors)."""


class SyncUnavailable(TransportError):
    """The deployment answered the WebSocket upgrade with an HTTP status: it does not speak
    the sync protocol there. Poll instead."""


class ProtocolViolation(TransportError):
    """The server sent something the protocol does not allow (the socket is reopened)."""


@dataclass
class Subscription:
    """One query and its latest result. `live` while the socket is up and the result came on
    it; `value` is parsed with the function's result shape, `error` is a query failure."""

    function: Function
    args: dict[str, Any]
    query_id: int
    on_change: Callable[[], None]
    value: Any = None
    error: ConnvoError | None = None
    live: bool = False
    updates: int = 0
    """Results received so far (for tests and figures)."""

    def _set(self, value: Any = None, error: ConnvoError | None = None) -> None:
        self.value, self.error, self.live = value, error, True
        self.updates += 1
        self._changed()

    def _lose(self) -> None:
        if self.live:
            self.live = False
            self._changed()

    def _changed(self) -> None:
        try:
            self.on_change()
        except Exception:  # the owner's fault, not the socket's: say so, keep reading
            log.exception("on_change of %s failed", self.function.name)


@dataclass
class _Link:
    """What one open socket has agreed with the server."""

    ws: ClientConnection
    query_set: int = 0
    version: dict[str, Any] = field(default_factory=lambda: dict(_ZERO_VERSION))
    opened: float = field(default_factory=time.monotonic)
    chunks: list[str] = field(default_factory=list)
    chunk_bytes: int = 0


class SyncClient:
    """One user's socket to one deployment: subscriptions to queries, their results pushed.
    Owns its reconnects; `close()` ends them and the socket."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        ca_file: str | None = None,
        backoff: tuple[float, float] = SYNC_BACKOFF,
    ) -> None:
        parts = urlsplit(url.rstrip("/"))
        scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
        self._ws_url = urlunsplit((scheme, parts.netloc, parts.path + "/api/sync", "", ""))
        self._tls = tls_context(ca_file) if scheme == "wss" else None
        self._origin = origin_of(url)
        self._token = token
        self._backoff = backoff
        self._session_id = str(uuid.uuid4())
        self._ids = itertools.count()
        self._subs: dict[int, Subscription] = {}
        self._link: _Link | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False
        self.error: ConnvoError | None = None
        """Why the client stopped for good (a refused token); None while it keeps trying."""
        self.connections = 0

    def __repr__(self) -> str:
        return f"SyncClient({self._ws_url!r}, live={self.live})"

    @property
    def live(self) -> bool:
        return self._link is not None

    async def connect(self, *, retry: bool = False) -> None:
        """Opens the socket; from then on the client reconnects by itself until `close()`.
        Raises SyncUnavailable (no protocol there), TLSError or Unauthorized, which retrying
        would not change; a TransportError (the network) too, unless `retry`: then the client
        keeps trying in the background, not `live` until it succeeds."""
        if self._task is not None or self._closed:
            raise RuntimeError("a SyncClient connects once")
        try:
            link: _Link | None = await self._open(0, "InitialConnect")
        except (SyncUnavailable, TLSError, Unauthorized):
            raise
        except TransportError as e:
            if not retry:
                raise
            log.info("%s; trying again in the background", e)
            link = None
        if self._closed:  # closed while connecting: the room left before its join finished
            self._drop()
            return
        self._task = asyncio.create_task(self._keep(link))

    async def subscribe(
        self, function: Function, args: dict[str, Any], on_change: Callable[[], None]
    ) -> Subscription:
        if function.kind != "query":
            raise ValueError(f"{function.path} is a {function.kind}; only queries are pushed")
        sub = Subscription(function, args, next(self._ids), on_change)
        self._subs[sub.query_id] = sub
        link = self._link
        if link is not None:
            with contextlib.suppress(WebSocketException, OSError):  # the reconnect adds it
                await self._modify(link, [_add(sub)])
        return sub

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._drop()
        if self._closing:
            await asyncio.wait(self._closing, timeout=1.0)

    # --- the socket ----------------------------------------------------------------------------

    async def _open(self, count: int, last_close: str) -> _Link:
        try:
            ws = await connect(
                self._ws_url,
                ssl=self._tls,
                proxy=None,  # as the HTTP transports: the environment's proxies are not ours
                open_timeout=SYNC_OPEN_TIMEOUT,
                max_size=MAX_ANSWER_BYTES,
                compression=None,
                additional_headers={"Convex-Client": CLIENT},
            )
        except InvalidStatus as e:
            status = e.response.status_code
            if status in (401, 403):
                refused = f"the deployment refused the socket (HTTP {status})"
                raise Unauthorized(WHERE, refused) from None
            if status == 429 or status >= 500:  # busy or failing now, maybe not later
                raise TransportError(
                    WHERE, f"upgrade refused (HTTP {status})", sent=False
                ) from None
            unavailable = f"no sync protocol here (HTTP {status})"
            raise SyncUnavailable(WHERE, unavailable, sent=False) from None
        except (OSError, TimeoutError, InvalidHandshake) as e:
            tls = tls_failure(e, self._origin)
            if tls is not None:
                raise TLSError(WHERE, tls.reason, sent=False) from None
            raise TransportError(WHERE, f"cannot connect: {_reason(e)}", sent=False) from None
        link = _Link(ws)
        try:
            return await self._hello(link, count, last_close)
        except BaseException:
            if self._link is link:
                self._link = None
            ws.transport.abort()  # cancelled or failed before anyone could read it
            raise

    async def _hello(self, link: _Link, count: int, last_close: str) -> _Link:
        """Connect, Authenticate and every subscription, then the link is live. A subscription
        added while these went out is sent once the link is live."""
        hello = {
            "type": "Connect",
            "sessionId": self._session_id,
            "connectionCount": count,
            "lastCloseReason": last_close,
            "clientTs": int(time.time() * 1000),
        }
        auth = {"type": "Authenticate", "tokenType": "User", "value": self._token, "baseVersion": 0}
        try:
            await link.ws.send(json.dumps(hello))
            await link.ws.send(json.dumps(auth))
            sent = dict(self._subs)
            if sent:
                await self._modify(link, [_add(s) for s in sent.values()])
            self._link = link
            late = [_add(s) for i, s in self._subs.items() if i not in sent]
            if late:
                await self._modify(link, late)
        except (WebSocketException, OSError) as e:
            raise TransportError(WHERE, f"socket closed: {_reason(e)}", sent=False) from None
        self.connections += 1
        return link

    async def _keep(self, link: _Link | None) -> None:
        """Reads until the socket drops, then reopens it with backoff; forever, unless the
        server refuses the token. The backoff starts over only after a socket that stayed up for
        SYNC_HEALTHY seconds, so a server that accepts (even authenticates) and then fails is not
        hammered."""
        attempt, reason = 0, "InitialConnectFailed"
        while True:
            if link is not None:
                reason = await self._read_until_lost(link)
                if self.error is not None:
                    return
                attempt = 0 if time.monotonic() - link.opened >= SYNC_HEALTHY else attempt
                log.info("sync socket lost (%s); reconnecting", reason)
            delay = min(self._backoff[1], self._backoff[0] * 2**attempt)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            attempt += 1
            try:
                link = await self._open(self.connections, reason)
            except Unauthorized as e:
                self.error = e
                return
            except ConnvoError as e:
                link, reason = None, str(e)
            except Exception as e:  # a fault of ours must not end the reconnects silently
                log.warning("sync: reconnecting failed: %r", e)
                link, reason = None, type(e).__name__

    async def _read_until_lost(self, link: _Link) -> str:
        """Why the link ended; sets `error` when the server refused the token."""
        try:
            await self._read(link)
            return "closed by the server"
        except Unauthorized as e:
            self.error = e
            log.info("%s; subscriptions stop", e)  # HTTP calls say it where it matters
            return str(e)
        except (ConnvoError, WebSocketException, OSError) as e:
            return _reason(e)
        finally:
            self._drop()

    def _drop(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            task = asyncio.get_running_loop().create_task(link.ws.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        for sub in self._subs.values():
            sub._lose()

    async def _read(self, link: _Link) -> None:
        """Applies each message; one that is malformed anywhere (not text, not JSON, a field of
        the wrong type) means the socket cannot be trusted: it is dropped and reopened."""
        while True:
            # A message and its parse are up to 16 MiB each: no name here holds them while the
            # next one arrives, or two would be alive at once.
            try:
                self._receive(link, await self._next(link))
            except MALFORMED as e:
                raise ProtocolViolation(
                    WHERE, f"a malformed message ({type(e).__name__})"
                ) from None

    async def _next(self, link: _Link) -> dict[str, Any]:
        """The next message, parsed. A server silent for SYNC_INACTIVE seconds (it pings every 15)
        is gone, whatever TCP says."""
        try:
            async with asyncio.timeout(SYNC_INACTIVE):
                raw = await link.ws.recv()
        except TimeoutError:
            raise ProtocolViolation(
                WHERE, f"the server was silent for {SYNC_INACTIVE:.0f} s"
            ) from None
        if not isinstance(raw, str):
            raise ProtocolViolation(WHERE, "a binary message")
        message = json.loads(raw)
        return message if isinstance(message, dict) else {}

    def _receive(self, link: _Link, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "Transition":
            self._transition(link, message)
        elif kind == "TransitionChunk":
            self._chunk(link, message)
        elif kind == "AuthError":
            raise Unauthorized(WHERE, f"the deployment refused the token: {message.get('error')}")
        elif kind == "FatalError":
            raise ProtocolViolation(WHERE, f"the server gave up: {message.get('error')}")

    def _chunk(self, link: _Link, message: dict[str, Any]) -> None:
        """A transition too large for one message comes in parts, in order."""
        part, total, chunk = message["partNumber"], message["totalParts"], message["chunk"]
        if part != len(link.chunks) or not part < total <= MAX_CHUNKS:
            raise ProtocolViolation(WHERE, f"transition part {part} of {total} out of order")
        link.chunks.append(chunk)
        link.chunk_bytes += len(chunk)
        if link.chunk_bytes > MAX_ANSWER_BYTES:
            raise ProtocolViolation(WHERE, "a chunked transition past the answer limit")
        if part == total - 1:
            whole, link.chunks, link.chunk_bytes = "".join(link.chunks), [], 0
            self._transition(link, json.loads(whole))

    def _transition(self, link: _Link, message: dict[str, Any]) -> None:
        if message.get("startVersion") != link.version:
            raise ProtocolViolation(WHERE, "a transition from a version we are not at")
        link.version = message.get("endVersion") or {}
        # A server may change one query several times in one transition (Convex and the dev
        # backend send one result per query; others need not): only the last one counts, so
        # only that one is parsed.
        last = {change.get("queryId"): change for change in message.get("modifications") or ()}
        for query_id, change in last.items():
            sub = self._subs.get(query_id)
            if sub is None:
                continue
            if change.get("type") == "QueryUpdated":
                self._update(sub, change.get("value"))
            elif change.get("type") == "QueryFailed":
                sub._set(error=error_from(sub.function.path, change))

    @staticmethod
    def _update(sub: Subscription, value: Any) -> None:
        try:
            sub._set(parse_answer(sub.function, value))
        except SchemaError as e:
            sub._set(error=e)

    async def _modify(self, link: _Link, changes: list[dict[str, Any]]) -> None:
        base, link.query_set = link.query_set, link.query_set + 1
        message = {
            "type": "ModifyQuerySet",
            "baseVersion": base,
            "newVersion": link.query_set,
            "modifications": changes,
        }
        await link.ws.send(json.dumps(message))


# ts: u64 0 in base64
_ZERO_VERSION: dict[str, Any] = {"querySet": 0, "identity": 0, "ts": "AAAAAAAAAAA="}


def _add(sub: Subscription) -> dict[str, Any]:
    module, name = sub.function.path.rsplit("/", 1)
    return {
        "type": "Add",
        "queryId": sub.query_id,
        "udfPath": f"{module}:{name}",
        "args": [sub.args],
    }


def _reason(error: BaseException) -> str:
    return str(error) or type(error).__name__
