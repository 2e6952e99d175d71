"""What running one function produced, for either transport (HTTP or the sync protocol)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from signaling.devserver.store import Read, Write


class BadAnswer(Exception):
    """The dev backend produced a value outside its function's result shape."""


@dataclass
class Outcome:
    """Its JSON value or its error, what it read (a sync subscription runs again when a write
    touches that) and what it wrote (committed only without an error)."""

    value: Any = None
    error: Exception | None = None
    reads: list[Read] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)


def server_error(path: str, error: Exception) -> str:
    """Convex's wording for a fault of the backend itself: no errorData, no internals."""
    if isinstance(error, BadAnswer):
        return f"Server Error: {error}"
    return f"Server Error: {type(error).__name__} in {path}"
