"""How a room behaves: signals pushed or polled, and the mesh convention's timings."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.pump import PollSettings
from agent.stats import Signals
from signaling import convention


@dataclass(frozen=True)
class RoomSettings:
    signals: Signals = "push"
    """push: subscribe to signals and sessions over the sync protocol where the deployment
    speaks it (else, and while its socket is down, poll); poll: never open a socket."""
    poll: PollSettings = field(default_factory=PollSettings)
    discovery_interval: float = convention.DISCOVERY_INTERVAL
    """While nothing is pushed: how often the session list is read again, to find peers and
    notice who left."""
    answer_timeout: float = convention.ANSWER_TIMEOUT
    """An offer unanswered this long is a stale session: dropped, the join goes on."""
    stale_retry: float = convention.STALE_RETRY
    """A stale session is offered to again this long after, then twice as long after each
    further unanswered try (at most 10 minutes)."""
    quality_interval: float = convention.QUALITY_INTERVAL
    """How often peers are measured (and quality reported); silence is noticed at this pace."""
    dead_after: float = convention.DEAD_AFTER
    """A peer silent this long (no connection, or no media where media flows) has left."""
    max_participants: int | None = None
