"""What both ways of talking to a deployment share: the HTTP calls (`signaling.client`) and the
sync socket (`signaling.sync`) trust the same CA bundle, name a TLS failure the same way, and
turn an answer or a failure into the same typed result. Both read answers up to
`convention.MAX_ANSWER_BYTES`."""

from __future__ import annotations

import functools
import os
import ssl
from typing import Any
from urllib.parse import urlsplit

import certifi
from pydantic import ValidationError

from signaling.errors import (
    ApplicationError,
    BadCABundle,
    SchemaError,
    TLSError,
    TransportError,
    application_error,
)
from signaling.functions import Function


class HTTPFailure(Exception):
    """What a transport raises when a POST does not complete; ConvexClient raises `error` for
    it, naming the function. `sent` is False when no byte of the request reached the server."""

    def __init__(
        self, reason: str, *, sent: bool, error: type[TransportError] = TransportError
    ) -> None:
        super().__init__(reason)
        self.reason, self.sent, self.error = reason, sent, error


def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A verifying client context (certificate and host name checked) that trusts one bundle:
    `ca_file`, else $SSL_CERT_FILE, else certifi's. Cached per bundle."""
    return _context(ca_file or os.environ.get("SSL_CERT_FILE") or certifi.where())


@functools.cache
def _context(path: str) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as e:  # missing, unreadable, or not PEM certificates
        raise BadCABundle(path, e.strerror or str(e)) from None


def tls_failure(error: BaseException, origin: str) -> HTTPFailure | None:
    """The TLSError failure when `error` comes from a TLS handshake that failed."""
    found: ssl.SSLError | None = None
    cause: BaseException | None = error
    while cause is not None:  # down to the innermost SSLError: the one with the reason
        found = cause if isinstance(cause, ssl.SSLError) else found
        cause = cause.__cause__ or cause.__context__
    if found is None:
        return None
    if isinstance(found, ssl.SSLCertVerificationError):
        why = f"certificate not trusted ({found.verify_message}): name its CA with --ca-file"
        why += " or $SSL_CERT_FILE"
    else:
        why = f"TLS handshake failed ({found.reason or type(found).__name__}): not a TLS server?"
    return HTTPFailure(f"{origin}: {why}", sent=False, error=TLSError)


def origin_of(url: str) -> str:
    """host:port of a URL, for error texts (no path, no query, nothing secret)."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def parse_answer(fn: Function, value: Any) -> Any:
    """`value` parsed with the function's result shape, or SchemaError naming the field."""
    try:
        return fn.result_adapter.validate_python(value)
    except ValidationError as e:
        raise schema_error(fn, e, "answer") from None


def schema_error(fn: Function, error: ValidationError, direction: str) -> SchemaError:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "(root)"
    return SchemaError(fn.path, field, first["msg"], direction=direction)


def error_from(path: str, body: dict[str, Any]) -> ApplicationError | TransportError:
    """The typed error of a failure carrying `errorMessage` and maybe `errorData` (an HTTP
    answer, or a failed query pushed over the sync protocol)."""
    data = body.get("errorData")
    message = str(body.get("errorMessage") or "")
    if isinstance(data, dict) and isinstance(data.get("code"), str):
        return application_error(
            path, data["code"], str(data.get("message") or message), data.get("metadata")
        )
    # Convex answers internal failures without errorData: treat them as a server fault.
    return TransportError(path, f"server error: {message or 'no message'}")
