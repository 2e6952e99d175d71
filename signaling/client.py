"""The Convex HTTP client: `POST {url}/api/run/{path}` with a bearer token, answers unwrapped.

HTTP goes through a `Transport`, the one seam between this client and an HTTP library: by default
the process-wide httpx pool (`shared_http()`), for load bots their own (`agent.load.http`). Every
transport speaks TLS for https and verifies the server against `tls_context()`: the CA bundle of
`--ca-file`, else $SSL_CERT_FILE, else certifi's (`signaling.wire`, shared with the sync socket).
Proxies from the environment stay ignored (`trust_env=False`, which also makes httpx ignore
$SSL_CERT_FILE: it is read there). So a token never travels on a plain connection to an https
URL. Answers are read up to MAX_ANSWER_BYTES.

Retries follow what is safe: a request that never reached the server, or was refused by the rate
limiter, never ran and can always be sent again; one that may have run (timeout, 5xx, garbled
answer) is repeated only for functions marked retry-safe in the catalogue. Application errors are
answers, never retried otherwise; TLS failures and oversized answers would only fail again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import weakref
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from pydantic import BaseModel, ValidationError

from signaling.convention import MAX_ANSWER_BYTES
from signaling.errors import (
    AnswerTooLarge,
    ApplicationError,
    ConnvoError,
    RateLimitExceeded,
    SchemaError,
    Timeout,
    TransportError,
    Unauthorized,
    error_code,
)
from signaling.functions import Function
from signaling.sync import SyncClient
from signaling.wire import (
    HTTPFailure,
    error_from,
    origin_of,
    parse_answer,
    schema_error,
    tls_context,
    tls_failure,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes


CallObserver = Callable[[str, float, "str | None"], None]
"""Told of every call `ConvexClient.run` ends: the function's path, the seconds the caller waited
(retries included), and None or the failure's `error_code`. Load bots count their calls so."""


class Transport(Protocol):
    """What ConvexClient needs from HTTP."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], limit: int) -> Answer:
        """POSTs `body` over a pooled connection (TLS with a verified certificate for https) and
        answers the status and the body. Raises HTTPFailure, with error=TLSError when no verified
        TLS connection could be made and error=AnswerTooLarge past `limit` bytes."""
        ...


class CountingTransport:
    """A Transport that counts the calls it carries, by function name (what a deployment bills),
    over `inner` (default: the shared pool). For benchmarks and tests of call budgets."""

    def __init__(self, inner: Transport | None = None) -> None:
        self.calls: Counter[str] = Counter()
        self._inner = inner

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], limit: int) -> Answer:
        self.calls[url.rsplit("/", 1)[-1]] += 1
        return await (self._inner or shared_http()).post(url, body, headers, limit)


def too_large(limit: int) -> HTTPFailure:
    return HTTPFailure(f"answer larger than {limit} bytes", sent=True, error=AnswerTooLarge)


class HttpxTransport:
    """A Transport over an httpx.AsyncClient: the shared pool, or a caller's own."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def aclose(self) -> None:
        await self.client.aclose()

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], limit: int) -> Answer:
        try:
            async with self.client.stream("POST", url, content=body, headers=headers) as answer:
                return Answer(answer.status_code, await _read_capped(answer, limit))
        except httpx.ConnectError as e:
            failure = tls_failure(e, origin_of(url))
            raise failure or HTTPFailure(
                f"cannot connect to {origin_of(url)}", sent=False
            ) from None
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as e:  # no byte of the request went out
            raise HTTPFailure(
                f"timed out ({type(e).__name__})", sent=False, error=Timeout
            ) from None
        except httpx.TimeoutException as e:
            raise HTTPFailure(f"timed out ({type(e).__name__})", sent=True, error=Timeout) from None
        except httpx.HTTPError as e:
            raise HTTPFailure(type(e).__name__, sent=True) from None


async def _read_capped(answer: httpx.Response, limit: int) -> bytes:
    declared = answer.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks, size = [], 0
    async for chunk in answer.aiter_bytes():  # decoded: a compressed bomb is capped too
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str | None, HttpxTransport]] = (
    weakref.WeakKeyDictionary()
)


def shared_http(ca_file: str | None = None) -> HttpxTransport:
    """The running event loop's connection pool for this CA bundle, shared by every client."""
    pools = _pools.setdefault(asyncio.get_running_loop(), {})
    pool = pools.get(ca_file)
    if pool is None or pool.client.is_closed:
        pool = pools[ca_file] = HttpxTransport(
            httpx.AsyncClient(
                timeout=httpx.Timeout(10.0, connect=5.0),
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=100),
                trust_env=False,  # a proxy from the environment must not see our tokens
                verify=tls_context(ca_file),
            )
        )
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


class ConvexClient:
    """Runs Connvo functions for one user (one token)."""

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        http: Transport | None = None,
        ca_file: str | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        observe: CallObserver | None = None,
    ) -> None:
        """`http`: a transport of the caller's (else the shared pool for `ca_file`, the CA
        bundle; None: $SSL_CERT_FILE, else certifi's). `observe`: told of every call."""
        self.url = url.rstrip("/")
        self._token = token
        self._http = http
        self._ca_file = ca_file
        self.retry = retry
        self._observe = observe

    def __repr__(self) -> str:
        return f"ConvexClient({self.url!r}, token={'***' if self._token else None})"

    def sync_client(self) -> SyncClient:
        """A client of the same deployment, token and CA bundle for the sync protocol: the
        socket that pushes query results (signaling.sync)."""
        return SyncClient(self.url, self._token or "", ca_file=self._ca_file)

    async def call(self, fn: Function, args: BaseModel | dict[str, Any]) -> Any:
        """Validate args, run the function, validate and parse the answer."""
        payload = _dump_args(fn, args)
        return parse_answer(fn, await self.run(fn.path, payload, retry_safe=fn.retry_safe))

    async def run(self, path: str, args: dict[str, Any], *, retry_safe: bool = False) -> Any:
        """Run any function path with raw args; answers the unwrapped `value`."""
        if self._observe is None:
            return await self._run(path, args, retry_safe)
        start = time.monotonic()
        try:
            value = await self._run(path, args, retry_safe)
        except ConnvoError as e:
            self._observe(path, time.monotonic() - start, error_code(e))
            raise
        self._observe(path, time.monotonic() - start, None)
        return value

    async def _run(self, path: str, args: dict[str, Any], retry_safe: bool) -> Any:
        for attempt in range(self.retry.attempts):
            try:
                return await self._once(path, args)
            except (TransportError, RateLimitExceeded) as e:
                may_repeat = isinstance(e, RateLimitExceeded) or (
                    e.retriable and (retry_safe or not e.sent)
                )
                if not may_repeat or attempt + 1 >= self.retry.attempts:
                    raise
                log.debug("%s: retrying after %s", path, e)
                await asyncio.sleep(self.retry.delay(attempt))
        raise AssertionError("unreachable")

    async def _once(self, path: str, args: dict[str, Any]) -> Any:
        http = self._http or shared_http(self._ca_file)
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        body = json.dumps({"args": args, "format": "json"}, separators=(",", ":")).encode()
        try:
            answer = await http.post(f"{self.url}/api/run/{path}", body, headers, MAX_ANSWER_BYTES)
        except HTTPFailure as e:
            raise e.error(path, e.reason, sent=e.sent) from None
        return _unwrap(path, answer)


def _dump_args(fn: Function, args: BaseModel | dict[str, Any]) -> dict[str, Any]:
    try:
        model = args if isinstance(args, fn.args) else fn.args.model_validate(args)
    except ValidationError as e:
        raise schema_error(fn, e, "args") from None
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def _unwrap(path: str, answer: Answer) -> Any:
    """The value of a success; else the typed error. A 401 is Unauthorized whatever its body: a
    deployment (or a gateway before it) that refuses the token need not answer in Convex's shape."""
    try:
        body = json.loads(answer.body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    fields: dict[str, Any] = body if isinstance(body, dict) else {}
    status = fields.get("status")
    if status == "success" and answer.status == 200:
        return fields.get("value")
    error = error_from(path, fields) if status == "error" else None
    if isinstance(error, ApplicationError):
        raise error
    if answer.status == 401:
        raise Unauthorized(path, "the deployment refused the token (HTTP 401)")
    if error is not None:
        raise error
    if body is None:
        raise TransportError(path, f"HTTP {answer.status} with a body that is not JSON")
    if answer.status >= 500:
        raise TransportError(path, f"HTTP {answer.status}")
    raise SchemaError(
        path, "status", f"expected success or error, got {status!r}", direction="answer"
    )
