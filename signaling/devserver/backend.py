"""What both transports (HTTP, the sync protocol) run functions through: one `Backend` checks the
caller, the args and the answer as Convex does, runs each function as one transaction, and
publishes its writes to the hub, so that subscriptions see writes made over either."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from signaling.devserver import convex_error as err
from signaling.devserver.auth import InvalidToken, upsert_user, verify
from signaling.devserver.convex_error import ConvexError
from signaling.devserver.guards import Ctx
from signaling.devserver.handlers import ENDPOINTS, Endpoint
from signaling.devserver.hub import Hub
from signaling.devserver.outcome import BadAnswer, Outcome
from signaling.devserver.settings import Settings
from signaling.devserver.store import Doc, Read, Store, Write, is_id
from signaling.functions import Kind

log = logging.getLogger("connvo.devserver")

ID_FIELDS = {
    "meetingId": "meetings",
    "userId": "users",
    "targetUserId": "users",
    "organizerId": "users",
    "lastSignalId": "webrtcSignals",
    "signalIds": "webrtcSignals",
}
"""Args that Convex declares as v.id(table): a value of another shape fails validation."""


class Backend:
    """Runs functions for both transports: HTTP (`/api/run`) and the sync protocol."""

    def __init__(self, settings: Settings, store: Store, secret: bytes) -> None:
        self.settings = settings
        self.store = store
        self.hub = Hub()
        self._secret = secret

    @property
    def secret(self) -> bytes:
        return self._secret

    async def provision(self, user_name: str) -> Doc:
        """The user `user_name`, created if new (the meeting page's sign-in)."""

        def upsert() -> tuple[Doc, list[Write]]:
            with self.store.transaction() as tx:
                user = tx.get("users", upsert_user(tx, user_name, None))
                assert user is not None
                return user, tx.writes

        user, writes = await run_in_threadpool(upsert)
        self.hub.publish(writes)
        return user

    async def call(
        self, path: str, raw_args: Any, subject: str | None, kind: Kind | None = None
    ) -> Outcome:
        """Runs `path` as one transaction and tells the sync hub what it wrote. `kind` is how
        the caller asked for it; the sync protocol refuses a mutation run as a query."""
        try:
            endpoint = _endpoint(path, kind)
            args = _validate_args(endpoint, raw_args)
        except ConvexError as e:
            return Outcome(error=e)
        outcome = await run_in_threadpool(self.execute, endpoint, args, subject)
        if outcome.writes:
            self.hub.publish(outcome.writes)
        return outcome

    def subject(self, header: str | None) -> str | None:
        """The verified token's subject; None without an Authorization header."""
        if header is None:
            return None
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise err.unauthorized("Invalid authentication token: not a bearer token")
        return self.verify(token.strip())

    def verify(self, token: str) -> str:
        try:
            return verify(token, self._secret)
        except InvalidToken as e:
            raise err.unauthorized(f"Invalid authentication token: {e}") from None

    def execute(self, endpoint: Endpoint, args: BaseModel, subject: str | None) -> Outcome:
        """Runs one function as one transaction; an error or a bad answer rolls it back."""
        reads: list[Read] = []
        try:
            with self.store.transaction() as tx:
                reads = tx.reads
                value = endpoint.handler(Ctx(tx, self.settings, subject), args)
                return Outcome(_checked(endpoint, value), None, tx.reads, tx.writes)
        except ConvexError as e:
            return Outcome(error=e, reads=reads)
        except BadAnswer as e:
            log.error("%s", e)
            return Outcome(error=e, reads=reads)
        except Exception as e:
            log.exception("%s failed", endpoint.path)
            return Outcome(error=e, reads=reads)


def _endpoint(path: str, kind: Kind | None) -> Endpoint:
    endpoint = ENDPOINTS.get(path)
    if endpoint is None:
        raise ConvexError(
            "NOT_FOUND", f"Could not find public function for '{path}'", 404, {"path": path}
        )
    if kind is not None and endpoint.kind != kind:
        raise err.validation(
            f"Trying to execute {path} as {kind.title()}, but it is defined as "
            f"{endpoint.kind.title()}."
        )
    return endpoint


def _checked(endpoint: Endpoint, value: Any) -> Any:
    try:
        checked = endpoint.result.validate_python(value)
    except ValidationError as e:
        raise BadAnswer(
            f"dev backend answer of {endpoint.path} does not match its result shape: {e}"
        ) from None
    return endpoint.result.dump_python(checked, mode="json", by_alias=True, exclude_none=True)


def _validate_args(endpoint: Endpoint, raw: Any) -> BaseModel:
    if not isinstance(raw, dict):
        raise err.validation("ArgumentValidationError: args must be an object", "args")
    try:
        args = endpoint.args.model_validate(raw, strict=True)
    except ValidationError as e:
        raise _argument_error(e) from None
    for name, table in ID_FIELDS.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        if not all(is_id(table, v) for v in values):
            raise err.validation(
                f'ArgumentValidationError: Value does not match validator v.id("{table}")'
                f" at .{name}",
                name,
            )
    return args


def _argument_error(error: ValidationError) -> ConvexError:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    if first["type"] == "missing":
        text = f"Object is missing the required field `{field}`"
    elif first["type"] == "extra_forbidden":
        text = f"Object contains extra field `{field}` that is not in the validator"
    else:
        text = f"Value does not match validator at .{field}: {first['msg']}"
    return err.validation(f"ArgumentValidationError: {text}", field)
