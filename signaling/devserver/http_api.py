"""Convex's HTTP API: `POST /api/run/{path}` with `{"args": {...}}`.

Answers are `{"status": "success", "value"}` (HTTP 200) or `{"status": "error", "errorMessage",
"errorData"}` (HTTP 400) for application errors, bad requests and bad args alike. A fault of the
dev backend itself, including an answer that does not match the catalogue's result shape, is an
HTTP 500 with `errorMessage` and no `errorData`, as Convex answers uncaught errors.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from signaling.devserver import convex_error as err
from signaling.devserver.convex_error import ConvexError
from signaling.devserver.outcome import server_error

if TYPE_CHECKING:
    from signaling.devserver.backend import Backend


def http_routes(backend: Backend) -> list[Route]:
    async def run(request: Request) -> JSONResponse:
        path = request.path_params["path"]
        try:
            raw_args = _args_of(await request.body())
            subject = backend.subject(request.headers.get("authorization"))
        except ConvexError as e:
            return _error(400, e.message, e.data)
        outcome = await backend.call(path, raw_args, subject)
        if isinstance(outcome.error, ConvexError):
            return _error(400, outcome.error.message, outcome.error.data)
        if outcome.error is not None:
            return _error(500, server_error(path, outcome.error))
        return JSONResponse({"status": "success", "value": outcome.value})

    return [
        Route("/api/run/{path:path}", run, methods=["POST"]),
        Route("/version", _version, methods=["GET"]),
    ]


async def _version(request: Request) -> JSONResponse:
    return JSONResponse({"name": "connvo-dev-backend"})


def _error(status: int, message: str, data: dict[str, Any] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"status": "error", "errorMessage": message}
    if data is not None:
        body["errorData"] = data
    return JSONResponse(body, status_code=status)


def _args_of(body: bytes) -> Any:
    try:
        request = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise err.validation("Request body is not valid JSON") from None
    if not isinstance(request, dict):
        raise err.validation('Request body must be an object {"args": {...}}')
    if request.get("format", "json") != "json":
        raise err.validation(f'Unsupported format {request["format"]!r}; use "json"', "format")
    return request.get("args", {})
