"""Running the dev backend under uvicorn in this process.

The listening socket is bound before uvicorn starts, so `--port 0` works and the ready line
names the real port; process.DevServer reads that line to learn the URL.
"""

from __future__ import annotations

import asyncio
import socket
import sys

import uvicorn

from signaling.devserver.app import create_app
from signaling.devserver.settings import Settings

READY = "connvo dev backend on {url} (data {data})"


def url_of(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(settings: Settings) -> None:
    """Serves until interrupted (SIGINT / SIGTERM); prints READY to stderr once listening."""
    asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> None:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    # asyncio sets TCP_NODELAY only on sockets that say IPPROTO_TCP; without it every answer on
    # a keep-alive connection waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings),
        log_level="info" if settings.access_log else "warning",
        access_log=settings.access_log,
        lifespan="on",
        ws="websockets-sansio",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if server.started:
        ready = READY.format(url=url_of(settings.host, port), data=settings.data_dir)
        print(ready, file=sys.stderr, flush=True)
    await task
