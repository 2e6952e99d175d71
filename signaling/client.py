"""The Convex HTTP client: `POST {url}/api/run/{path}` with a bearer token, answers unwrapped.

Every bot of a process shares one httpx connection pool (`shared_http()`): hundreds of bots
polling signals must not each hold their own sockets. Retries follow what is safe: a request
that never reached the server, or was refused by the rate limiter, never ran and can always be
sent again; one that may have run (timeout, 5xx, garbled answer) is repeated only for functions
marked retry-safe in the catalogue. Application errors are answers, never retried otherwise.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import weakref
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

from signaling.errors import (
    ApplicationError,
    RateLimitExceeded,
    SchemaError,
    TransportError,
    application_error,
)
from signaling.functions import FUNCTIONS, Function

log = logging.getLogger(__name__)

_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def shared_http() -> httpx.AsyncClient:
    """The process-wide connection pool of the running event loop."""
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None or pool.is_closed:
        pool = httpx.AsyncClient(
            timeout=httpx.Timeout(10.0, connect=5.0),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=100),
            trust_env=False,  # a proxy from the environment must not see our tokens
        )
        _pools[loop] = pool
    return pool


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 3.0

    def delay(self, attempt: int) -> float:
        """Exponential backoff with full jitter, so many bots do not retry in lockstep."""
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(attempts=1)


def _field_path(error: ValidationError) -> str:
    first = error.errors()[0]
    return ".".join(str(part) for part in first["loc"]) or "(root)"


def _problem(error: ValidationError) -> str:
    return error.errors()[0]["msg"]


class ConvexClient:
    """Runs Connvo functions for one user (one token)."""

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        http: httpx.AsyncClient | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._http = http
        self.retry = retry

    def __repr__(self) -> str:
        return f"ConvexClient({self.url!r}, token={'***' if self._token else None})"

    async def call(self, path: Function | str, args: BaseModel | dict[str, Any]) -> Any:
        """Validate args, run the function, validate and parse the answer."""
        fn = path if isinstance(path, Function) else FUNCTIONS[path]
        payload = _dump_args(fn, args)
        value = await self.run(fn.path, payload, retry_safe=fn.retry_safe)
        try:
            return fn.result_adapter.validate_python(value)
        except ValidationError as e:
            raise SchemaError(fn.path, _field_path(e), _problem(e), direction="answer") from None

    async def run(self, path: str, args: dict[str, Any], *, retry_safe: bool = False) -> Any:
        """Run any function path with raw args; answers the unwrapped `value`."""
        for attempt in range(self.retry.attempts):
            try:
                return await self._once(path, args)
            except (TransportError, RateLimitExceeded) as e:
                may_repeat = retry_safe or isinstance(e, RateLimitExceeded) or not e.sent
                if not may_repeat or attempt + 1 >= self.retry.attempts:
                    raise
                log.debug("%s: retrying after %s", path, e)
                await asyncio.sleep(self.retry.delay(attempt))
        raise AssertionError("unreachable")

    async def _once(self, path: str, args: dict[str, Any]) -> Any:
        http = self._http or shared_http()
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        try:
            response = await http.post(
                f"{self.url}/api/run/{path}", json={"args": args, "format": "json"}, headers=headers
            )
        except httpx.ConnectError:
            raise TransportError(path, f"cannot connect to {self.url}", sent=False) from None
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as e:  # no byte of the request went out
            raise TransportError(path, f"timed out ({type(e).__name__})", sent=False) from None
        except httpx.TimeoutException as e:
            raise TransportError(path, f"timed out ({type(e).__name__})") from None
        except httpx.HTTPError as e:
            raise TransportError(path, f"{type(e).__name__}") from None
        return _unwrap(path, response)


def _dump_args(fn: Function, args: BaseModel | dict[str, Any]) -> dict[str, Any]:
    try:
        model = args if isinstance(args, fn.args) else fn.args.model_validate(args)
    except ValidationError as e:
        raise SchemaError(fn.path, _field_path(e), _problem(e), direction="args") from None
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def _unwrap(path: str, response: httpx.Response) -> Any:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise TransportError(
            path, f"HTTP {response.status_code} with a body that is not JSON"
        ) from None
    status = body.get("status") if isinstance(body, dict) else None
    if status == "success" and response.status_code == 200:
        return body.get("value")
    if status == "error":
        raise _error_from(path, body)
    if response.status_code >= 500:
        raise TransportError(path, f"HTTP {response.status_code}")
    raise SchemaError(
        path, "status", f"expected success or error, got {status!r}", direction="answer"
    )


def _error_from(path: str, body: dict[str, Any]) -> ApplicationError | TransportError:
    data = body.get("errorData")
    message = str(body.get("errorMessage") or "")
    if isinstance(data, dict) and isinstance(data.get("code"), str):
        return application_error(
            path, data["code"], str(data.get("message") or message), data.get("metadata")
        )
    # Convex answers internal failures without errorData: treat them as a server fault.
    return TransportError(path, f"server error: {message or 'no message'}")
