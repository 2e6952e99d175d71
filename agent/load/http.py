"""A small HTTP/1.1 client for load bots: keep-alive POSTs of JSON over asyncio streams.

Hundreds of bots in one process make thousands of small requests a second (mostly signal polls).
Measured in a 200-bot run, httpx took about half of a worker's CPU: its pool scans every pooled
connection on each request (a readability syscall per connection) and, without `sniffio`
installed, httpcore tries that import (a sys.path scan) on every request. This client does only
what the Convex HTTP API needs: POST with a JSON body, an answer with Content-Length (or
chunked), idle connections reused in LIFO order. It quacks like the part of `httpx.AsyncClient`
that `signaling.client.ConvexClient` uses (`post(url, json=, headers=)`, `.status_code`,
`.json()`) and raises httpx's exception types, so retries and error mapping are unchanged.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from typing import Any
from urllib.parse import urlsplit

import httpx

MAX_CONNECTIONS = 64
IDLE_FOR = 4.0
"""A connection idle longer is closed, not reused (uvicorn closes idle ones after 5 s)."""
TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0


class Answer:
    __slots__ = ("content", "status_code")

    def __init__(self, status_code: int, content: bytes) -> None:
        self.status_code = status_code
        self.content = content

    def json(self) -> Any:
        return json.loads(self.content)


class _ClosedBeforeAnswer(Exception):
    pass


class _Connection:
    __slots__ = ("reader", "used_at", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.used_at = time.monotonic()

    def close(self) -> None:
        self.writer.close()


class LoopbackHTTP:
    """POSTs JSON to one or more origins over pooled keep-alive connections."""

    def __init__(self, max_connections: int = MAX_CONNECTIONS) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._slots = asyncio.Semaphore(max_connections)
        self.is_closed = False

    async def post(self, url: str, *, json: Any, headers: dict[str, str] | None = None) -> Answer:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        body = _dumps(json)
        head = [
            f"POST {parts.path or '/'} HTTP/1.1",
            f"Host: {parts.netloc}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
        ]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        async with self._slots:
            connection, reused = await self._connection(host, port)
            try:
                status, content, keep = await self._exchange(connection, request)
            except _ClosedBeforeAnswer as e:
                if not reused:
                    raise httpx.RemoteProtocolError(str(e)) from None
                # The server closed the idle connection as we reused it: it never read this
                # request (it would have answered), so send it once more on a new connection.
                connection, _ = await self._connection(host, port, fresh=True)
                try:
                    status, content, keep = await self._exchange(connection, request)
                except _ClosedBeforeAnswer as e:
                    raise httpx.RemoteProtocolError(str(e)) from None
            if keep:
                connection.used_at = time.monotonic()
                self._idle.setdefault((host, port), []).append(connection)
            else:
                connection.close()
            return Answer(status, content)

    @staticmethod
    async def _exchange(connection: _Connection, request: bytes) -> tuple[int, bytes, bool]:
        try:
            async with asyncio.timeout(TIMEOUT):
                connection.writer.write(request)
                return await _read_answer(connection.reader)
        except TimeoutError:
            connection.close()
            raise httpx.ReadTimeout(f"no answer in {TIMEOUT:.0f} s") from None
        except asyncio.IncompleteReadError as e:
            connection.close()
            if not e.partial:
                raise _ClosedBeforeAnswer("connection closed before an answer") from None
            raise httpx.RemoteProtocolError("connection closed mid-answer") from None
        except (ConnectionResetError, BrokenPipeError) as e:
            connection.close()
            raise _ClosedBeforeAnswer(f"{type(e).__name__}: {e}") from None
        except (OSError, ValueError) as e:
            connection.close()
            raise httpx.RemoteProtocolError(f"{type(e).__name__}: {e}") from None

    async def _connection(
        self, host: str, port: int, fresh: bool = False
    ) -> tuple[_Connection, bool]:
        """A pooled connection (True) or a new one (False)."""
        idle = self._idle.get((host, port), [])
        now = time.monotonic()
        while idle and not fresh:
            connection = idle.pop()
            if now - connection.used_at < IDLE_FOR and not connection.reader.at_eof():
                return connection, True
            connection.close()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                reader, writer = await asyncio.open_connection(host, port)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except OSError as e:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {e}") from None
        return _Connection(reader, writer), False

    async def aclose(self) -> None:
        self.is_closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, status = lines[0].split(" ", 2)[:2]
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
    if "content-length" in fields:
        content = await reader.readexactly(int(fields["content-length"]))
    elif fields.get("transfer-encoding", "").lower() == "chunked":
        content = await _read_chunked(reader)
    else:
        return int(status), await reader.read(), False
    keep = fields.get("connection", "").lower() != "close" and version == "HTTP/1.1"
    return int(status), content, keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopbackHTTP] = (
    weakref.WeakKeyDictionary()
)


def load_http() -> LoopbackHTTP:
    """The running event loop's client, shared by every load bot of the process."""
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None or pool.is_closed:
        pool = _pools[loop] = LoopbackHTTP()
    return pool
