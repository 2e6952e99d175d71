"""The refusals the dev backend answers, built as the real `createError` helpers build them
(convex/lib/errors.ts), so codes, messages, status codes and metadata match."""

from __future__ import annotations

from typing import Any


class ConvexError(Exception):
    """An application error: answered as `errorData`, never as a server fault."""

    def __init__(
        self, code: str, message: str, status_code: int, metadata: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status_code = status_code
        self.metadata = metadata

    @property
    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "statusCode": self.status_code,
        }
        if self.metadata is not None:
            data["metadata"] = self.metadata
        return data


def unauthorized(message: str = "Authentication required") -> ConvexError:
    return ConvexError("UNAUTHORIZED", message, 401)


def forbidden(
    message: str = "Access denied", metadata: dict[str, Any] | None = None
) -> ConvexError:
    return ConvexError("FORBIDDEN", message, 403, metadata)


def not_found(resource: str, doc_id: str | None = None) -> ConvexError:
    """`not_found("Meeting", id)` says "Meeting with ID ... not found"; like the original,
    `not_found("WebRTC session not found")` says "... not found not found"."""
    suffix = f" with ID {doc_id}" if doc_id else ""
    return ConvexError(
        "NOT_FOUND", f"{resource}{suffix} not found", 404, {"id": doc_id} if doc_id else None
    )


def validation(message: str, field: str | None = None) -> ConvexError:
    return ConvexError("VALIDATION_ERROR", message, 400, {"field": field} if field else {})


def meeting_not_active(meeting_id: str) -> ConvexError:
    return ConvexError(
        "MEETING_NOT_ACTIVE", "Meeting is not currently active", 400, {"meetingId": meeting_id}
    )


def insufficient_permissions(required_role: str, current_role: str | None) -> ConvexError:
    return ConvexError(
        "INSUFFICIENT_PERMISSIONS",
        f"Requires {required_role} role",
        403,
        {"requiredRole": required_role, "currentRole": current_role},
    )


def rate_limited(
    action: str, limit: int, window_start: int, reset_time: int, now: int
) -> ConvexError:
    """The metadata the real limiter answers (BACKEND.md, observed): times in epoch ms."""
    seconds = -(-(reset_time - now) // 1000)
    return ConvexError(
        "RATE_LIMIT_EXCEEDED",
        f"Rate limit exceeded for {action}. Try again in {seconds} seconds.",
        429,
        {
            "action": action,
            "limit": limit,
            "resetTime": reset_time,
            "retryAfterSeconds": seconds,
            "windowStart": window_start,
        },
    )
