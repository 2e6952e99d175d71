"""A room's counters, kept where they happen, and the snapshot its readers take of them.

The pump and the mesh count into one `Counters` the room hands them; `Room.stats()` freezes it,
with the rest of what a bot's summary, a load record or a test reads, into a `RoomStats`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from agent.presence import Outcome, problems
from agent.quality import LinkQuality

Signals = Literal["push", "poll"]


@dataclass
class Counters:
    signal_polls: int = 0
    """getPendingSignals calls: each is a billed function call on Convex."""
    signals_pushed: int = 0
    """Pushed getPendingSignals results handled: no function call each."""
    reading_fails: bool = False
    """The last read of signals failed (after the client's own retries)."""
    failures_reported: int = 0
    """handleConnectionFailure calls."""
    ice_restarts: int = 0
    push_delays: list[tuple[float, float]] = field(default_factory=list)
    """(epoch s, ms) per pushed signal: from the backend storing it (its `timestamp`, on the
    backend's clock, shifted by the offset read off the session's createdAt) to its handling."""


@dataclass(frozen=True)
class RoomStats:
    """One moment of a room."""

    user_id: str
    session_id: str
    signals: Signals
    """How signals reach the room now: pushed over a live socket, or polled."""
    signal_polls: int
    signals_pushed: int
    backend_lost: bool
    """Signals cannot be read: the deployment is out of reach. Connections may still carry
    media, but nobody new can join."""
    replaced: bool
    """A newer session of this user took over; the room left by itself."""
    failures_reported: int
    ice_restarts: int
    push_delays: tuple[tuple[float, float], ...]
    """Counters.push_delays."""
    join_started: float | None
    """time.monotonic() when the join started."""
    connected_at: float | None
    """time.monotonic() when the first peer connection was connected."""
    quality: Mapping[str, LinkQuality] = field(default_factory=lambda: MappingProxyType({}))
    """The last measured quality of each connected peer, by userId."""
    outcomes: tuple[Outcome, ...] = ()
    """Every remote user met, and what became of its connections (agent.presence)."""

    @property
    def problems(self) -> list[str]:
        """Why this room's participant did not meet everyone who was there, one line each:
        a remote that never connected, or whose connection was lost and not back."""
        return problems(self.outcomes)

    @property
    def join_ms(self) -> float | None:
        """From the start of the join to the first peer connection being connected."""
        if self.join_started is None or self.connected_at is None:
            return None
        return 1000 * (self.connected_at - self.join_started)
