"""Convex's sync protocol: one WebSocket per client at `/api/sync` (the Rust and Python clients)
or `/api/{version}/sync` (convex-js), carrying JSON messages.

The client sends Connect, Authenticate (the same bearer token as HTTP), ModifyQuerySet (add and
remove subscriptions), Mutation and Action; the server answers with Transitions (new query
results, or failures, from one state version to the next), MutationResponse, ActionResponse,
AuthError, FatalError and Ping. Message shapes: get-convex/convex-js
`src/browser/sync/protocol.ts`; the oracle in the tests is the official `convex` Python client.

Reactivity: every lookup a query makes is kept (`store.Read`); every committed write is handed
to the `Hub` (`hub.py`), which finds the subscriptions whose reads the written document matches
and has their connections run them again. A connection sends a Transition only when a result
changed, or to acknowledge its own mutation (a client resolves a mutation once it sees a
Transition at or past the mutation's timestamp, so the response goes first).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from signaling.devserver.convex_error import ConvexError
from signaling.devserver.outcome import Outcome, server_error
from signaling.functions import Kind

if TYPE_CHECKING:
    from signaling.devserver.backend import Backend

log = logging.getLogger("connvo.devserver.sync")

PING_EVERY = 15.0
"""Clients drop a connection that is silent for 30 s (convex-rs SERVER_INACTIVITY_THRESHOLD)."""
MAX_QUERIES = 256
"""Subscriptions per connection: a client past it gets a FatalError, not a server's memory."""
MAX_MESSAGE = 1 << 20
"""A client message larger than this is refused (FatalError)."""

_KINDS: dict[str, Kind] = {"Mutation": "mutation", "Action": "action"}


class ProtocolError(Exception):
    """The client broke the protocol: answered with a FatalError and the connection closed."""


def sync_routes(backend: Backend) -> list[WebSocketRoute]:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await SyncConnection(backend, websocket).serve()

    return [
        WebSocketRoute("/api/sync", endpoint),
        WebSocketRoute("/api/{version}/sync", endpoint),
    ]


def udf_path(udf: str) -> str:
    """Convex's `module.js:function` (or `module:function`) as the HTTP API's path."""
    module, colon, name = udf.partition(":")
    module = module.removesuffix(".js")
    return f"{module}/{name or 'default'}" if colon else module


def encode_ts(ts: int) -> str:
    """Convex's u64 on the wire: 8 bytes little-endian, base64."""
    return base64.b64encode(struct.pack("<Q", ts)).decode()


def decode_value(value: Any) -> Any:
    """Convex's JSON encoding of values to what the HTTP API's JSON gives: a number is a float64
    on the wire (the official clients send 2 as 2.0), so a whole one becomes an int; `$float`
    (a non-finite float) is decoded. Connvo's functions take no int64 and no bytes, so
    `$integer`, `$bytes` and any other `$` field fail validation, as on Convex."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1 and isinstance(value.get("$float"), str):
        with contextlib.suppress(ValueError, struct.error):  # binascii.Error is a ValueError
            return struct.unpack("<d", base64.b64decode(value["$float"], validate=True))[0]
    if any(isinstance(k, str) and k.startswith("$") for k in value):
        raise ConvexError(
            "VALIDATION_ERROR",
            f"ArgumentValidationError: {sorted(value)[0]} values are not accepted here",
            400,
        )
    return {k: decode_value(v) for k, v in value.items()}


# --- one connection -----------------------------------------------------------------------------


@dataclass
class _Query:
    path: str
    args: Any
    handles: list[Any]
    value: Any = None  # the last modification sent, to send only what changed


class SyncConnection:
    def __init__(self, backend: Backend, websocket: WebSocket) -> None:
        self._backend = backend
        self._ws = websocket
        self._subject: str | None = None
        self._queries: dict[int, _Query] = {}
        self._query_set = 0
        self._identity = 0
        self._sent = {"querySet": 0, "identity": 0, "ts": 0}
        self._dirty: set[int] = set()
        self._owed_ts = 0
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one message or one flush at a time

    def invalidate(self, query_id: int) -> None:
        self._dirty.add(query_id)
        self._wake.set()

    async def serve(self) -> None:
        tasks = [asyncio.create_task(self._flusher()), asyncio.create_task(self._pinger())]
        try:
            while True:
                message = await self._ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("text") is None:
                    raise ProtocolError("binary messages are not part of the protocol")
                await self._receive(message["text"])
        except RecursionError:  # a RuntimeError, but the client's fault: args nested too deep
            await self._fatal("a value nested past the parser")
        except (WebSocketDisconnect, RuntimeError):
            pass  # the client went away (Starlette raises RuntimeError on a closed socket)
        except ProtocolError as e:
            await self._fatal(str(e))
        finally:
            for task in tasks:
                task.cancel()
            for query in self._queries.values():
                self._backend.hub.unwatch(query.handles)
            self._queries.clear()

    async def _receive(self, text: str) -> None:
        if len(text) > MAX_MESSAGE:
            raise ProtocolError(f"message of {len(text)} bytes is over {MAX_MESSAGE}")
        try:
            message = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            raise ProtocolError("message is not JSON (or nested past the parser)") from None
        if not isinstance(message, dict):
            raise ProtocolError("message is not an object")
        kind = message.get("type")
        async with self._lock:
            if kind == "Connect":
                return  # sessionId and connectionCount only matter to the real service's logs
            if kind == "Authenticate":
                await self._authenticate(message)
            elif kind == "ModifyQuerySet":
                await self._modify(message)
            elif kind in ("Mutation", "Action"):
                await self._request(kind, message)
            elif kind != "Event":
                raise ProtocolError(f"unknown message type {kind!r}")

    # --- identity and query set ------------------------------------------------------------

    async def _authenticate(self, message: dict[str, Any]) -> None:
        if message.get("baseVersion") != self._identity:
            raise ProtocolError("Authenticate baseVersion does not match the identity version")
        token_type = message.get("tokenType")
        if token_type == "User":
            try:
                subject: str | None = self._backend.verify(str(message.get("value", "")))
            except ConvexError as e:
                await self._send(
                    {
                        "type": "AuthError",
                        "error": e.message,
                        "baseVersion": self._identity,
                        "authUpdateAttempted": True,
                    }
                )
                await self._ws.close(1000, "AuthError")
                raise WebSocketDisconnect(1000) from None
        elif token_type == "None":
            subject = None
        else:
            raise ProtocolError(f"tokenType {token_type!r} is not accepted here")
        self._subject = subject
        self._identity += 1
        self._dirty.update(self._queries)
        await self._flush()

    async def _modify(self, message: dict[str, Any]) -> None:
        if message.get("baseVersion") != self._query_set:
            raise ProtocolError("ModifyQuerySet baseVersion does not match the query set")
        new_version = message.get("newVersion")
        modifications = message.get("modifications")
        if not isinstance(new_version, int) or not isinstance(modifications, list):
            raise ProtocolError("ModifyQuerySet needs newVersion and modifications")
        removed = []
        for change in modifications:
            query_id = change.get("queryId") if isinstance(change, dict) else None
            if not isinstance(query_id, int) or isinstance(query_id, bool):
                raise ProtocolError("a query modification needs a queryId")
            if change.get("type") == "Add":
                if query_id in self._queries:
                    raise ProtocolError(f"query {query_id} is already in the query set")
                if len(self._queries) >= MAX_QUERIES:
                    raise ProtocolError(f"more than {MAX_QUERIES} queries")
                path = udf_path(str(change.get("udfPath", "")))
                self._queries[query_id] = _Query(path, change.get("args"), [])
                self._dirty.add(query_id)
            elif change.get("type") == "Remove":
                query = self._queries.pop(query_id, None)
                if query is not None:
                    self._backend.hub.unwatch(query.handles)
                self._dirty.discard(query_id)
                removed.append({"type": "QueryRemoved", "queryId": query_id})
            else:
                raise ProtocolError(f"unknown query modification {change.get('type')!r}")
        self._query_set = new_version
        await self._flush(removed)

    # --- mutations and actions ---------------------------------------------------------------

    async def _request(self, kind: str, message: dict[str, Any]) -> None:
        request_id = message.get("requestId")
        if not isinstance(request_id, int):
            raise ProtocolError(f"{kind} needs a requestId")
        path = udf_path(str(message.get("udfPath", "")))
        outcome = await self._call(path, message.get("args"), _KINDS[kind])
        answer: dict[str, Any] = {
            "type": f"{kind}Response",
            "requestId": request_id,
            "logLines": [],
            **_result(path, outcome),
        }
        if kind == "Mutation":  # clients finish a mutation at a Transition past its ts
            ts = self._backend.hub.advance()
            answer["ts"] = encode_ts(ts)
            self._owed_ts = max(self._owed_ts, ts)
        await self._send(answer)
        if kind == "Mutation":
            await self._flush()

    async def _call(self, path: str, args: Any, kind: Kind) -> Outcome:
        try:
            raw = _one_object(args)
        except ConvexError as e:
            return Outcome(error=e)
        return await self._backend.call(path, raw, self._subject, kind)

    # --- transitions -------------------------------------------------------------------------

    async def _flusher(self) -> None:
        while True:
            await self._wake.wait()
            async with self._lock:
                self._wake.clear()
                await self._flush()

    async def _flush(self, extra: list[dict[str, Any]] | None = None) -> None:
        """Runs the dirty queries, again while writes keep landing on them, and sends one
        Transition with each changed query's last result, if anything changed (or if the query
        set, the identity or an acknowledged mutation needs one). As on Convex, a query is in a
        Transition once: its earlier results are stale, and under a burst of writes each would
        be another copy of it in the message."""
        results: dict[int, dict[str, Any]] = {}
        while self._dirty:
            dirty, self._dirty = self._dirty, set()
            for query_id in sorted(dirty):
                result = await self._run(query_id)
                if result is not None:
                    results[query_id] = result
        modifications = list(extra or ())
        for query_id, result in results.items():
            query = self._queries.get(query_id)
            if query is not None and result != query.value:
                query.value = result
                modifications.append(result)
        end = {"querySet": self._query_set, "identity": self._identity, "ts": self._sent["ts"]}
        moved = (
            end["querySet"] != self._sent["querySet"] or end["identity"] != self._sent["identity"]
        )
        if not modifications and not moved and self._owed_ts <= self._sent["ts"]:
            return
        end["ts"] = max(self._backend.hub.ts, self._sent["ts"], self._owed_ts)
        await self._send(
            {
                "type": "Transition",
                "startVersion": _version(self._sent),
                "endVersion": _version(end),
                "modifications": modifications,
                "clientClockSkew": 0,
                "serverTs": time.time_ns(),
            }
        )
        self._sent = end

    async def _run(self, query_id: int) -> dict[str, Any] | None:
        """The query's modification as it stands now; None if it was removed while it ran."""
        query = self._queries.get(query_id)
        if query is None:
            return None
        hub = self._backend.hub
        started = hub.ts
        outcome = await self._call(query.path, query.args, "query")
        if self._queries.get(query_id) is not query:
            return None  # removed while it ran
        hub.unwatch(query.handles)
        query.handles = hub.watch(self, query_id, outcome.reads)
        if hub.touched_since(started, outcome.reads):
            self._dirty.add(query_id)  # a write landed before the watch did: run it again
        result: dict[str, Any] = {"queryId": query_id, "logLines": [], "journal": None}
        result.update(_modification(query.path, outcome))
        return result

    # --- sending -----------------------------------------------------------------------------

    async def _pinger(self) -> None:
        while True:
            await asyncio.sleep(PING_EVERY)
            async with self._lock:
                await self._send({"type": "Ping"})

    async def _send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await self._ws.send_text(json.dumps(message, separators=(",", ":")))

    async def _fatal(self, error: str) -> None:
        log.warning("sync client broke the protocol: %s", error)
        await self._send({"type": "FatalError", "error": error})
        with contextlib.suppress(RuntimeError):
            await self._ws.close(1011, "FatalError")


def _one_object(args: Any) -> Any:
    """The protocol carries args as a list holding one object."""
    if isinstance(args, list) and len(args) == 1:
        return decode_value(args[0])
    raise ConvexError("VALIDATION_ERROR", "args must be a list holding one object", 400)


def _version(version: dict[str, int]) -> dict[str, Any]:
    return {**version, "ts": encode_ts(version["ts"])}


def _modification(path: str, outcome: Outcome) -> dict[str, Any]:
    if outcome.error is None:
        return {"type": "QueryUpdated", "value": outcome.value}
    return {"type": "QueryFailed", **_failure(path, outcome.error)}


def _result(path: str, outcome: Outcome) -> dict[str, Any]:
    if outcome.error is None:
        return {"success": True, "result": outcome.value}
    failure = _failure(path, outcome.error)
    return {"success": False, "result": failure.pop("errorMessage"), **failure}


def _failure(path: str, error: Exception) -> dict[str, Any]:
    """As the HTTP API answers it: a ConvexError with its errorData, a fault without."""
    if isinstance(error, ConvexError):
        return {"errorMessage": error.message, "errorData": error.data}
    return {"errorMessage": server_error(path, error)}
