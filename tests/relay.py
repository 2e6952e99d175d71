"""Real relays in front of the dev backend.

`Relay` speaks HTTP only, as a deployment (or a proxy) without the sync protocol: it records
every function call that passes, can fail chosen functions with a Convex application error
(which the client never retries), as a deployment whose mutation fails would, and answers 404 to
anything else, the WebSocket upgrade included.

    async with Relay(backend.url, fail={"markSignalsProcessed": 2}) as relay:
        api = ConnvoAPI(relay.url, token)

`Cutter` pipes bytes, WebSockets included, and can cut every connection at once and refuse new
ones for a while: a network that drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass

import httpx

INJECTED = b'{"status":"error","errorMessage":"injected failure"}'


@dataclass(frozen=True)
class Call:
    function: str
    """The last part of the path, e.g. "handleConnectionFailure"."""
    args: dict
    status: str
    """The answer's status: "success", "error", or "injected failure"."""


class Relay:
    def __init__(self, upstream: str, fail: dict[str, int] | None = None) -> None:
        self.calls: list[Call] = []
        self._fail = dict(fail or {})
        self._client = httpx.AsyncClient(base_url=upstream, trust_env=False)

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._client.aclose()

    def called(self, function: str) -> list[Call]:
        return [c for c in self.calls if c.function == function]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                method, path, headers, body = await _read_request(reader)
                if not path.startswith("/api/run/"):
                    await _respond(writer, 404, b'{"error":"only /api/run here"}')
                    continue
                function = path.rsplit("/", 1)[-1]
                args = json.loads(body or b"{}").get("args", {})
                if self._fail.get(function, 0) > 0:
                    self._fail[function] -= 1
                    self.calls.append(Call(function, args, "injected failure"))
                    await _respond(writer, 200, INJECTED)
                    continue
                auth = {k: v for k, v in headers.items() if k == "authorization"}
                answer = await self._client.request(
                    method,
                    path,
                    content=body,
                    headers={**auth, "content-type": "application/json"},
                )
                status = answer.json().get("status", "?") if answer.content else "?"
                self.calls.append(Call(function, args, status))
                await _respond(writer, answer.status_code, answer.content)
        writer.close()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    method, path, _ = head[0].split(" ", 2)
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in head[1:] if ": " in line)}
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    return method, path, headers, body


async def _respond(writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
    head = (
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()


class Cutter:
    """A TCP pipe to the dev backend. `cut()` closes every connection through it and refuses new
    ones for `refuse_for` seconds; `sync_sockets` counts the open sync-protocol connections."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").rsplit(":", 1)
        self._upstream = (host, int(port))
        self._writers: set[asyncio.StreamWriter] = set()
        self._refuse_until = 0.0
        self.sync_sockets = 0

    async def __aenter__(self) -> Cutter:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        self.cut()

    def cut(self, refuse_for: float = 0.0) -> None:
        self._refuse_until = asyncio.get_running_loop().time() + refuse_for
        for writer in list(self._writers):
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if asyncio.get_running_loop().time() < self._refuse_until:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        first = await reader.read(65536)
        is_sync = b"/sync HTTP/1.1" in first.split(b"\r\n", 1)[0]
        self.sync_sockets += is_sync
        self._writers |= {writer, up_writer}
        try:
            up_writer.write(first)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except asyncio.CancelledError:
            pass  # the test's loop is closing: asyncio would log a cancelled handler as an error
        finally:
            self.sync_sockets -= is_sync
            self._writers -= {writer, up_writer}
            up_writer.close()
            writer.close()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copies one direction until it ends, then half-closes the other side (or closes it: TLS
    cannot half-close, and a WebSocket closing through it would wait for the close)."""
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError, RuntimeError):
        if writer.can_write_eof():
            writer.write_eof()
        else:
            writer.close()
