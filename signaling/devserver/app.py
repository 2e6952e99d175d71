"""The ASGI app: one `Backend` (the store, the tokens, the hub) behind its three faces, Convex's
HTTP API, its sync protocol and the meeting page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from signaling.devserver.auth import load_secret
from signaling.devserver.backend import Backend
from signaling.devserver.http_api import http_routes
from signaling.devserver.pages import page_routes
from signaling.devserver.settings import Settings
from signaling.devserver.store import Store
from signaling.devserver.sync import sync_routes


def create_app(settings: Settings) -> Starlette:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    backend = Backend(
        settings, Store(settings.database, settings.ids), load_secret(settings.data_dir)
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        backend.store.close()

    routes = [*http_routes(backend), *sync_routes(backend), *page_routes(backend)]
    return Starlette(routes=routes, lifespan=lifespan)
