"""The signal pump against the real dev backend: order, no signal handled twice, every batch
marked processed, and a failed markSignalsProcessed retried by the next poll."""

from __future__ import annotations

import asyncio
import contextlib

from conftest import Backend
from relay import Relay

from agent.pump import PollSettings, SignalPump
from agent.stats import Counters
from signaling.api import ConnvoAPI
from signaling.models import Signal

QUICK = PollSettings(fast=0.01, idle=0.05)


async def _send_candidates(backend: Backend, count: int):
    meeting = await backend.meeting(2)
    sender, reader = meeting[1], meeting[0]
    for i in range(count):
        candidate = {"candidate": f"candidate:{i} 1 udp 1 127.0.0.1 {5000 + i} typ host"}
        await sender.api.send_candidate(meeting.id, "sender-session", candidate, reader.user_id)
    return meeting, reader


async def _pump_until(api: ConnvoAPI, meeting_id: str, count: int) -> tuple[list[str], Counters]:
    handled: list[str] = []

    async def handle(signal: Signal) -> None:
        handled.append(signal.data.candidate)

    counters = Counters()
    pump = SignalPump(api, meeting_id, handle, lambda: True, QUICK, counters=counters)
    task = asyncio.create_task(pump.run())
    try:
        async with asyncio.timeout(30):
            while len(handled) < count or await api.pending_signals(meeting_id):
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # more polls: nothing may come back a second time
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return handled, counters


async def test_pages_of_signals_are_handled_once_in_order_and_marked(backend: Backend):
    meeting, reader = await _send_candidates(backend, 120)  # three pages of at most 50
    handled, counters = await _pump_until(reader.api, meeting.id, 120)
    assert handled == [f"candidate:{i} 1 udp 1 127.0.0.1 {5000 + i} typ host" for i in range(120)]
    assert await reader.api.pending_signals(meeting.id) == []
    assert counters.signal_polls >= 3


async def test_a_failed_mark_is_retried_and_nothing_is_handled_twice(backend: Backend):
    meeting, reader = await _send_candidates(backend, 30)
    async with Relay(backend.url, fail={"markSignalsProcessed": 2}) as relay:
        api = ConnvoAPI(relay.url, reader.token)
        handled, _ = await _pump_until(api, meeting.id, 30)
    marks = [call for call in relay.calls if call.function == "markSignalsProcessed"]
    assert [c.status for c in marks[:2]] == ["injected failure"] * 2 and len(marks) >= 3
    assert len(handled) == len(set(handled)) == 30
    assert await reader.api.pending_signals(meeting.id) == []
