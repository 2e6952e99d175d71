"""Who was there, and what became of each connection: the ledger behind an honest `ok`.

One entry per remote user, kept by the mesh across that user's peers (an ICE restart or a rejoin
continues it). A remote counts as there once its connection got as far as ICE (checking, or
failed for want of a pair to check): both sides exchanged descriptions, so it was alive and
meant to meet us. A crashed client's session that
never answers is not there. A remote that was there must end connected, or have left (its
session closed); anything else (never connected, dropped as unreachable, failed, disconnected)
is a problem that `problems()` names.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

LEFT = frozenset({"left", "rejoined", "closed"})
"""Ends of a stay that are no problem: its session closed, it came back as a new session, or its
connection closed a moment ago (a leaving peer closes its connection, then its session; a
network failure is dropped as unreachable long before aiortc closes)."""
MAX_REMEMBERED = 1024
MEDIA_STOPPED = 5.0
"""Seconds without a frame from a connected peer that sent media, at the end of a run, that make
its media dead: a peer's audio flows even when muted (the meeting page sends silence), and no
healthy stream pauses this long."""


@dataclass(frozen=True)
class Outcome:
    """One remote user's connections with this participant, at one moment."""

    user_id: str
    there: bool
    """Its connection got as far as ICE: descriptions were exchanged."""
    connected: bool
    """It was connected at least once."""
    connected_s: float
    """Seconds connected, all connections together."""
    state: str
    """Now: connected, connecting, disconnected, failed, closed, or the reason it was dropped
    (left, rejoined, unreachable, no answer, negotiation failed; "failed, then left" when it
    left a connection that was not live)."""

    @property
    def problem(self) -> str | None:
        if not self.there or self.state == "connected" or self.state in LEFT:
            return None
        if not self.connected:
            return f"never connected to {self.user_id} (its connection ended {self.state})"
        return f"lost the connection to {self.user_id} ({self.state}) and it had not come back"


class Ledger:
    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def transition(self, user_id: str, state: str) -> None:
        entry = self._entries.pop(user_id, None) or _Entry(user_id)
        self._entries[user_id] = entry  # the most recent last, the oldest forgotten first
        entry.move(state)
        while len(self._entries) > MAX_REMEMBERED:
            del self._entries[next(iter(self._entries))]

    def dropped(self, user_id: str, reason: str) -> None:
        """A leave ends a stay properly only from a live connection: one that failed (or never
        connected) first stays a problem, "failed, then left"."""
        if (entry := self._entries.get(user_id)) is not None:
            live = entry.state in ("connected", "closed", "new")
            entry.move(reason if live or reason not in LEFT else f"{entry.state}, then {reason}")

    def outcomes(self) -> tuple[Outcome, ...]:
        now = time.monotonic()
        return tuple(e.outcome(now) for e in self._entries.values())


def problems(outcomes: Iterable[Outcome]) -> list[str]:
    return [p for o in outcomes if (p := o.problem) is not None]


class _Entry:
    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.there = False
        self.connected = False
        self.state = "new"
        self._connected_s = 0.0
        self._since: float | None = None

    def move(self, state: str) -> None:
        now = time.monotonic()
        if self._since is not None and state != "connected":
            self._connected_s += now - self._since
            self._since = None
        if state == "connected" and self._since is None:
            self._since = now
            self.connected = True
        self.there = self.there or state in ("connecting", "connected", "failed")
        self.state = state

    def outcome(self, now: float) -> Outcome:
        running = now - self._since if self._since is not None else 0.0
        return Outcome(
            self.user_id, self.there, self.connected, self._connected_s + running, self.state
        )
