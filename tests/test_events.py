"""A subscriber that does not keep up: bounded memory and a clear overflow event."""

from __future__ import annotations

import gc

from agent.events import MAX_BEHIND, EventBus, EventsDropped, ParticipantJoined


async def test_a_slow_subscriber_loses_the_overflow_and_is_told_how_much():
    bus = EventBus()
    events = bus.subscribe()
    for i in range(MAX_BEHIND + 500):
        bus.emit(ParticipantJoined(f"user{i}", "s"))
    first = [await anext(events) for _ in range(MAX_BEHIND)]
    assert [e.user_id for e in first] == [f"user{i}" for i in range(MAX_BEHIND)]
    bus.emit(ParticipantJoined("later", "s"))
    bus.close()
    rest = [e async for e in events]
    assert rest == [EventsDropped(500), ParticipantJoined("later", "s")]


async def test_subscribing_after_close_ends_at_once():
    bus = EventBus()
    bus.close()
    assert [e async for e in bus.subscribe()] == []


async def test_a_subscription_never_iterated_is_forgotten_with_it():
    bus = EventBus()
    events = bus.subscribe()
    bus.emit(ParticipantJoined("u", "s"))
    del events
    gc.collect()
    assert len(bus._queues) == 0
