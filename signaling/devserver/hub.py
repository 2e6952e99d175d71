"""Which subscriptions a committed write touches, so that only their connections run them again
(`sync.SyncConnection`); the backend publishes every write here, whichever transport made it."""

from __future__ import annotations

import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any, Protocol

from signaling.devserver.store import Read, Write

RECENT = 4096
"""Publishes remembered, to catch a write that lands while a query runs (Hub.touched_since)."""

_ANY = object()


class Subscriber(Protocol):
    def invalidate(self, query_id: int) -> None:
        """The query's result may have changed: run it again."""


@dataclass(frozen=True)
class _Watch:
    connection: Subscriber
    query_id: int
    read: Read


def _keys(read: Read) -> list[tuple[str, Any]]:
    """Where a read is filed: by meeting when it names one, else by document id, else under
    the table as a whole. A write is looked up under the same three keys."""
    where = dict(read.where)
    for field in ("meetingId", "_id"):
        if field in where:
            value = where[field]
            values = value if isinstance(value, frozenset) else (value,)
            return [(read.table, v) for v in values]
    return [(read.table, _ANY)]


class Hub:
    """Every subscription's reads, filed so a write finds the few it touches."""

    def __init__(self) -> None:
        self._watches: dict[tuple[str, Any], set[_Watch]] = defaultdict(set)
        self._ts = time.time_ns()  # a restarted server never goes back in time
        self._recent: deque[tuple[int, list[Write]]] = deque(maxlen=RECENT)

    @property
    def ts(self) -> int:
        return self._ts

    def advance(self) -> int:
        """A new timestamp (nanoseconds, strictly increasing): one per committed write."""
        self._ts = max(self._ts + 1, time.time_ns())
        return self._ts

    def watch(self, connection: Subscriber, query_id: int, reads: list[Read]) -> list[Any]:
        handles = []
        for read in set(reads):
            item = _Watch(connection, query_id, read)
            for key in _keys(read):
                self._watches[key].add(item)
                handles.append((key, item))
        return handles

    def unwatch(self, handles: list[Any]) -> None:
        for key, item in handles:
            watches = self._watches.get(key)
            if watches is not None:
                watches.discard(item)
                if not watches:
                    del self._watches[key]

    def touched_since(self, ts: int, reads: list[Read]) -> bool:
        """Whether a write published after `ts` matches one of `reads`: a query that ran while
        it was published could not be watching yet. Unsure (the log moved on) counts as yes."""
        if len(self._recent) == RECENT and self._recent[0][0] > ts:
            return True
        for published, writes in reversed(self._recent):
            if published <= ts:
                return False
            for write in writes:
                docs = [d for d in (write.before, write.after) if d is not None]
                if any(read.matches(write.table, doc) for read in reads for doc in docs):
                    return True
        return False

    def publish(self, writes: list[Write]) -> None:
        self._recent.append((self.advance(), writes))
        for write in writes:
            for doc in (write.before, write.after):
                if doc is None:
                    continue
                for key in ((write.table, doc.get("meetingId")), (write.table, doc.get("_id"))):
                    self._notify(self._watches.get(key, ()), write.table, doc)
                self._notify(self._watches.get((write.table, _ANY), ()), write.table, doc)

    @staticmethod
    def _notify(watches: Any, table: str, doc: dict[str, Any]) -> None:
        for item in list(watches):
            if item.read.matches(table, doc):
                item.connection.invalidate(item.query_id)
