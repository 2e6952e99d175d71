"""Typed events a Room emits, in the order they happen, and their delivery to subscribers."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.media.tracks import RemoteTrack


@dataclass(frozen=True)
class ParticipantJoined:
    user_id: str
    session_id: str


@dataclass(frozen=True)
class ParticipantLeft:
    user_id: str
    session_id: str
    reason: str


@dataclass(frozen=True)
class ConnectionStateChanged:
    user_id: str
    state: str


@dataclass(frozen=True)
class ChatMessage:
    id: str
    sender: str
    text: str
    ts: float


@dataclass(frozen=True)
class TrackReceived:
    user_id: str
    session_id: str
    track: RemoteTrack


@dataclass(frozen=True)
class EventsDropped:
    """This subscriber fell `count` events behind the room's limit and lost them (the oldest
    are kept); it comes before the first event after the gap."""

    count: int


@dataclass(frozen=True)
class SessionReplaced:
    """A newer session of this user joined (a restarted bot): this room leaves."""

    by_session_id: str


Event = (
    ParticipantJoined
    | ParticipantLeft
    | ConnectionStateChanged
    | ChatMessage
    | TrackReceived
    | EventsDropped
    | SessionReplaced
)


MAX_BEHIND = 1024
"""Events one subscriber may fall behind before it loses some (see EventsDropped)."""


class EventBus:
    """Each subscriber gets every event from when it subscribed until `close()`. Memory is
    bounded: a subscriber MAX_BEHIND events behind loses the newest until it catches up, then
    gets one EventsDropped before the next event."""

    def __init__(self) -> None:
        # Weak: a subscription that is dropped without ever being iterated goes away with it.
        self._queues: weakref.WeakKeyDictionary[asyncio.Queue[Event | None], list[int]] = (
            weakref.WeakKeyDictionary()
        )
        self._closed = False

    def subscribe(self) -> AsyncIterator[Event]:
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._queues[queue] = [0]
        if self._closed:
            queue.put_nowait(None)
        return self._iterate(queue)

    async def _iterate(self, queue: asyncio.Queue[Event | None]) -> AsyncIterator[Event]:
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._queues.pop(queue, None)

    def emit(self, event: Event) -> None:
        for queue, dropped in list(self._queues.items()):
            if queue.qsize() >= MAX_BEHIND:
                dropped[0] += 1
                continue
            if dropped[0]:
                queue.put_nowait(EventsDropped(dropped[0]))
                dropped[0] = 0
            queue.put_nowait(event)

    def close(self) -> None:
        self._closed = True
        for queue in list(self._queues):
            queue.put_nowait(None)
