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

from signaling.client import (
    MAX_ANSWER_BYTES,
    error_from,
    origin_of,
    parse_answer,
    tls_context,
    tls_failure,
)
from signaling.errors import (
    ConnvoError,
    SchemaError,
    TLSError,
    TransportError,
    Unauthorized,
)
from signaling.functions import Function

log = logging.getLogger(__name__)

WHERE = "sync"
"""The `function` our errors name: the socket, not one call."""
OPEN_TIMEOUT = 5.0
BACKOFF = (0.1, 5.0)
"""First and longest wait between reconnects (doubling, with jitter)."""
CLIENT = "connvo-agent-0.1.0"
HEALTHY = 10.0
"""Seconds a socket must stay up before a drop starts the backoff over."""
MAX_CHUNKS = 1024


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
        self.on_change()

    def _lose(self) -> None:
        if self.live:
            self.live = False
            self.on_change()


@dataclass
class _Link:
    """What one open socket has agreed with the server."""

    ws: ClientConnection
    query_set: int = 0
    version: dict[str, Any] = field(default_factory=dict)
    opened: float = field(default_factory=time.monotonic)
    chunks: list[str] = field(default_factory=list)
    chunk_bytes: int = 0


class SyncClient:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        ca_file: str | None = None,
        backoff: tuple[float, float] = BACKOFF,
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
        self.error: ConnvoError | None = None
        """Why the client stopped for good (a refused token); None while it keeps trying."""
        self.connections = 0

    def __repr__(self) -> str:
        return f"SyncClient({self._ws_url!r}, live={self.live})"

    @property
    def live(self) -> bool:
        return self._link is not None

    async def connect(self) -> None:
        """Opens the socket, or raises: SyncUnavailable, Unauthorized, TLSError, TransportError.
        From then on the client reconnects by itself until `close()`."""
        if self._task is not None:
            raise RuntimeError("this SyncClient is connected already")
        link = await self._open(0, "InitialConnect")
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
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        link, self._link = self._link, None
        if link is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(link.ws.close(), 1.0)
        for sub in self._subs.values():
            sub._lose()

    # --- the socket ----------------------------------------------------------------------------

    async def _open(self, count: int, last_close: str) -> _Link:
        try:
            ws = await connect(
                self._ws_url,
                ssl=self._tls,
                proxy=None,  # as the HTTP transports: the environment's proxies are not ours
                open_timeout=OPEN_TIMEOUT,
                max_size=MAX_ANSWER_BYTES,
                compression=None,
                additional_headers={"Convex-Client": CLIENT},
            )
        except InvalidStatus as e:
            status = e.response.status_code
            if status in (401, 403):
                refused = f"the deployment refused the socket (HTTP {status})"
                raise Unauthorized(WHERE, refused) from None
            unavailable = f"no sync protocol here (HTTP {status})"
            raise SyncUnavailable(WHERE, unavailable, sent=False) from None
        except (OSError, TimeoutError, InvalidHandshake) as e:
            tls = tls_failure(e, self._origin)
            if tls is not None:
                raise TLSError(WHERE, tls.reason, sent=False) from None
            raise TransportError(WHERE, f"cannot connect: {_reason(e)}", sent=False) from None
        link = _Link(ws, version={"querySet": 0, "identity": 0, "ts": _ZERO_TS})
        connect_message = {
            "type": "Connect",
            "sessionId": self._session_id,
            "connectionCount": count,
            "lastCloseReason": last_close,
            "clientTs": int(time.time() * 1000),
        }
        auth = {"type": "Authenticate", "tokenType": "User", "value": self._token, "baseVersion": 0}
        try:
            await ws.send(json.dumps(connect_message))
            await ws.send(json.dumps(auth))
            if self._subs:
                await self._modify(link, [_add(s) for s in self._subs.values()])
        except (WebSocketException, OSError) as e:
            raise TransportError(WHERE, f"socket closed: {_reason(e)}", sent=False) from None
        self._link = link
        self.connections += 1
        return link

    async def _keep(self, link: _Link) -> None:
        """Reads until the socket drops, then reopens it with backoff; forever, unless the
        server refuses the token. The backoff starts over only after a socket that stayed up for
        HEALTHY seconds, so a server that accepts (even authenticates) and then fails is not
        hammered."""
        attempt = 0
        while True:
            reason = "unknown"
            try:
                await self._read(link)
                reason = "closed by the server"
            except Unauthorized as e:
                self.error = e
                log.info("%s; subscriptions stop", e)  # HTTP calls say it where it matters
                self._drop()
                return
            except (ConnvoError, WebSocketException, OSError) as e:
                reason = _reason(e)
            self._drop()
            attempt = 0 if time.monotonic() - link.opened >= HEALTHY else attempt
            log.info("sync socket lost (%s); reconnecting", reason)
            while True:
                delay = min(self._backoff[1], self._backoff[0] * 2**attempt)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                attempt += 1
                try:
                    link = await self._open(self.connections, reason)
                    break
                except Unauthorized as e:
                    self.error = e
                    return
                except ConnvoError as e:
                    reason = str(e)
                except Exception as e:  # a fault of ours must not end the reconnects silently
                    log.warning("sync: reconnecting failed: %r", e)
                    reason = type(e).__name__

    def _drop(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            asyncio.get_running_loop().create_task(link.ws.close())
        for sub in self._subs.values():
            sub._lose()

    async def _read(self, link: _Link) -> None:
        """Applies each message; one that is malformed anywhere (not text, not JSON, a field of
        the wrong type) means the socket cannot be trusted: it is dropped and reopened."""
        async for raw in link.ws:
            if not isinstance(raw, str):
                raise ProtocolViolation(WHERE, "a binary message")
            try:
                message = json.loads(raw)
                self._receive(link, message if isinstance(message, dict) else {})
            except (Unauthorized, ProtocolViolation):
                raise
            except Exception as e:
                raise ProtocolViolation(
                    WHERE, f"a malformed message ({type(e).__name__})"
                ) from None

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
        for change in message.get("modifications") or ():
            sub = self._subs.get(change.get("queryId"))
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


_ZERO_TS = "AAAAAAAAAAA="  # u64 0, as Convex encodes it


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
