"""One exception hierarchy for everything that can go wrong on the Connvo wire.

    ConnvoError
    ├── ApplicationError      the backend ran the function and refused (errorData.code)
    │   ├── Unauthorized, Forbidden, NotFound, InvalidArgs, MeetingNotActive,
    │   └── InsufficientPermissions, RateLimitExceeded
    ├── TransportError        the call did not complete: refused, timeout, 5xx, not JSON
    │   ├── Timeout           no answer in time (load reports count it apart)
    │   └── TLSError, AnswerTooLarge   never retried: they would fail the same way again
    └── SchemaError           an answer (or our own args) did not match the published shape

Texts name the function and never carry a token.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ConnvoError(Exception):
    """Base of every error raised by connvo-agent's signaling layer."""


class ApplicationError(ConnvoError):
    # Each subclass's code, and an instance's own when the backend sent one we have no class for
    # (so not a ClassVar: see __init__).
    code: str = "UNKNOWN"
    status_code: ClassVar[int] = 400

    def __init__(
        self,
        function: str,
        message: str,
        *,
        code: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.function = function
        self.message = message
        self.metadata = metadata or {}
        if code is not None and code != type(self).code:
            self.code = code  # an unknown code keeps its own name on the base class
        super().__init__(f"{function}: {self.code}: {message}")


class Unauthorized(ApplicationError):
    code = "UNAUTHORIZED"
    status_code = 401


class Forbidden(ApplicationError):
    code = "FORBIDDEN"
    status_code = 403


class InsufficientPermissions(ApplicationError):
    code = "INSUFFICIENT_PERMISSIONS"
    status_code = 403


class NotFound(ApplicationError):
    code = "NOT_FOUND"
    status_code = 404


class InvalidArgs(ApplicationError):
    code = "VALIDATION_ERROR"
    status_code = 400


class MeetingNotActive(ApplicationError):
    code = "MEETING_NOT_ACTIVE"
    status_code = 400


class RateLimitExceeded(ApplicationError):
    code = "RATE_LIMIT_EXCEEDED"
    status_code = 429


APPLICATION_ERRORS: dict[str, type[ApplicationError]] = {
    cls.code: cls
    for cls in (
        Unauthorized,
        Forbidden,
        InsufficientPermissions,
        NotFound,
        InvalidArgs,
        MeetingNotActive,
        RateLimitExceeded,
    )
}


def application_error(
    function: str, code: str, message: str, metadata: dict[str, Any] | None = None
) -> ApplicationError:
    """The typed exception for an errorData code (ApplicationError itself for unknown codes)."""
    cls = APPLICATION_ERRORS.get(code, ApplicationError)
    return cls(function, message, code=code, metadata=metadata)


class TransportError(ConnvoError):
    """The call did not complete. `sent` is False when the request never reached the server."""

    retriable: ClassVar[bool] = True

    def __init__(self, function: str, reason: str, *, sent: bool = True) -> None:
        self.function = function
        self.reason = reason
        self.sent = sent
        super().__init__(f"{function}: {reason}")


class Timeout(TransportError):
    """No connection or no answer in time: a slow or stalled server, or a lost path."""


class TLSError(TransportError):
    """No verified TLS connection: the server's certificate did not verify against the CA
    bundle, or the server does not speak TLS. Nothing was sent, so no token left this machine."""

    retriable = False


class AnswerTooLarge(TransportError):
    """The answer passed the size cap; reading stopped there."""

    retriable = False


class BadCABundle(ConnvoError):
    """The CA bundle named by --ca-file or $SSL_CERT_FILE cannot be read or holds no
    certificate."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(f"cannot use the CA bundle {path}: {reason}")


class SchemaError(ConnvoError):
    """A value did not match its published schema; `field` is the dotted path of the first error."""

    def __init__(self, function: str, field: str, problem: str, *, direction: str) -> None:
        self.function = function
        self.field = field
        self.problem = problem
        self.direction = direction
        super().__init__(
            f"{function}: {direction} does not match the schema at {field!r}: {problem}"
        )


def error_code(error: ConnvoError) -> str:
    """What a load report counts a failed call as: the backend's code for a refusal, TIMEOUT,
    else the class (TransportError, TLSError, AnswerTooLarge, SchemaError)."""
    if isinstance(error, ApplicationError):
        return error.code
    return "TIMEOUT" if isinstance(error, Timeout) else type(error).__name__
