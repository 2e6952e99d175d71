"""A Connvo-compatible backend for local use and tests: Convex's HTTP API over SQLite.

Entry points: `serve(Settings(...))` (blocking), `DevServer` (a child process for tests and
demos), `mint_token(data_dir, user)`, `create_app(settings)` (the ASGI app).
"""

from signaling.devserver.app import create_app
from signaling.devserver.auth import mint_token, provision_user
from signaling.devserver.process import DevServer, DevServerError
from signaling.devserver.server import serve
from signaling.devserver.settings import Settings

__all__ = [
    "DevServer",
    "DevServerError",
    "Settings",
    "create_app",
    "mint_token",
    "provision_user",
    "serve",
]
