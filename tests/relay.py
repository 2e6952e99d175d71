"""A real HTTP relay in front of the dev backend: it records every function call that passes and
can fail chosen functions with a Convex application error (which the client never retries), as
a deployment whose mutation fails would.

    async with Relay(backend.url, fail={"markSignalsProcessed": 2}) as relay:
        api = ConnvoAPI(relay.url, token)
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
