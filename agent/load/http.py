"""The load bots' HTTP transport: a small keep-alive HTTP/1.1 client over asyncio streams, one
per worker, shared by all its bots.

Hundreds of bots in one process make thousands of small requests a second (mostly signal polls),
and in the load without media HTTP is most of a bot's cost. Measured with scripts/bench_load.py
(README, "Dependency notes"), aiohttp cost a worker 25-30% more CPU than this client, and httpx's
pool (which scans every pooled connection on each request) far more. So this client does only
what the Convex HTTP API needs: POST a body, read an answer framed by Content-Length, chunks or
the connection's end, up to a size cap; reuse idle connections, newest first.

TLS as every transport (`signaling.client.tls_context`): an https URL is only spoken to over TLS,
certificate and host name verified, with SNI, on port 443 by default. The request is written
after the handshake has completed, so a token never goes out on a connection that is not TLS.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

from signaling.client import Answer, HTTPFailure, tls_context, tls_failure, too_large
from signaling.errors import Timeout

MAX_CONNECTIONS = 64
IDLE_FOR = 4.0
"""A connection idle longer is closed, not reused (uvicorn closes idle ones after 5 s)."""
TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
"""For the TCP connection and the TLS handshake together."""

Origin = tuple[str, str, int]  # scheme, host, port: http and https connections never mix


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


class LoadHTTP:
    """A `signaling.client.Transport`: POSTs over pooled keep-alive connections."""

    def __init__(
        self,
        ca_file: str | None = None,
        *,
        timeout: float = TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self._ca_file = ca_file
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._idle: dict[Origin, list[_Connection]] = {}
        self._slots = asyncio.Semaphore(max_connections)

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], limit: int) -> Answer:
        parts = urlsplit(url)
        https = parts.scheme == "https"
        origin = (parts.scheme, parts.hostname or "", parts.port or (443 if https else 80))
        head = [
            f"POST {parts.path or '/'} HTTP/1.1",
            f"Host: {parts.netloc.rpartition('@')[2]}",
            f"Content-Length: {len(body)}",
        ]
        head += [f"{k}: {v}" for k, v in headers.items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        async with self._slots:
            connection, reused = await self._connection(origin)
            try:
                status, content, keep = await self._exchange(connection, request, limit)
            except _ClosedBeforeAnswer as e:
                if not reused:
                    raise HTTPFailure(str(e), sent=True) from None
                # The server closed the idle connection as we reused it: it never read this
                # request (it would have answered), so send it once more on a new connection.
                connection, _ = await self._connection(origin, fresh=True)
                try:
                    status, content, keep = await self._exchange(connection, request, limit)
                except _ClosedBeforeAnswer as e:
                    raise HTTPFailure(str(e), sent=True) from None
            if keep:
                connection.used_at = time.monotonic()
                self._idle.setdefault(origin, []).append(connection)
            else:
                connection.close()
            return Answer(status, content)

    async def _exchange(
        self, connection: _Connection, request: bytes, limit: int
    ) -> tuple[int, bytes, bool]:
        try:
            async with asyncio.timeout(self._timeout):
                connection.writer.write(request)
                return await _read_answer(connection.reader, limit)
        except TimeoutError:
            connection.close()
            raise HTTPFailure(
                f"no answer in {self._timeout:g} s", sent=True, error=Timeout
            ) from None
        except asyncio.IncompleteReadError as e:
            connection.close()
            if not e.partial:
                raise _ClosedBeforeAnswer("connection closed before an answer") from None
            raise HTTPFailure("connection closed mid-answer", sent=True) from None
        except (ConnectionResetError, BrokenPipeError) as e:
            connection.close()
            raise _ClosedBeforeAnswer(f"{type(e).__name__}: {e}") from None
        except HTTPFailure:
            connection.close()
            raise
        except (OSError, ValueError, asyncio.LimitOverrunError) as e:  # garbled answer, TLS alert
            connection.close()
            raise HTTPFailure(f"bad answer ({type(e).__name__})", sent=True) from None

    async def _connection(self, origin: Origin, fresh: bool = False) -> tuple[_Connection, bool]:
        """A pooled connection (True) or a new one (False)."""
        idle = self._idle.get(origin, [])
        now = time.monotonic()
        while idle and not fresh:
            connection = idle.pop()
            if now - connection.used_at < IDLE_FOR and not connection.reader.at_eof():
                return connection, True
            connection.close()
        scheme, host, port = origin
        tls = tls_context(self._ca_file) if scheme == "https" else None
        try:
            async with asyncio.timeout(self._connect_timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=tls, server_hostname=host if tls else None
                )
        except TimeoutError:
            reason = f"connecting to {host}:{port} timed out"
            raise HTTPFailure(reason, sent=False, error=Timeout) from None
        except OSError as e:  # ssl.SSLError too: nothing was written before the handshake
            reason = f"cannot connect to {host}:{port} ({e.strerror or type(e).__name__})"
            raise tls_failure(e, f"{host}:{port}") or HTTPFailure(reason, sent=False) from None
        return _Connection(reader, writer), False

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()


async def _read_answer(reader: asyncio.StreamReader, limit: int) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, status = lines[0].split(" ", 2)[:2]
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
    if "content-length" in fields:
        length = int(fields["content-length"])
        if length > limit:
            raise too_large(limit)
        content = await reader.readexactly(length)
    elif fields.get("transfer-encoding", "").lower() == "chunked":
        content = await _read_chunked(reader, limit)
    else:
        return int(status), await _read_to_end(reader, limit), False
    keep = fields.get("connection", "").lower() != "close" and version == "HTTP/1.1"
    return int(status), content, keep


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(chunks)
        total += size
        if total > limit:
            raise too_large(limit)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def _read_to_end(reader: asyncio.StreamReader, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while chunk := await reader.read(65536):
        total += len(chunk)
        if total > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)
