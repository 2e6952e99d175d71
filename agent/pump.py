"""The signal pump: reads this user's pending signals, hands them over in order, marks them.

Pushed when it can: given a live subscription to getPendingSignals (`signaling.sync`), it
handles each result the deployment pushes and makes no read calls at all. Polled otherwise (a
deployment without the sync protocol, or while the socket is down): every poll is a billed
function call on the real service, so it polls at `fast` while a negotiation is in flight (or
signals just arrived) and backs off towards `idle`. `nudge()` wakes it at once, e.g. right after
an offer went out. Either way a signal is handled once: ids are remembered, and marked processed
once handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agent.stats import Counters
from signaling import convention
from signaling.api import ConnvoAPI
from signaling.errors import ConnvoError
from signaling.models import Signal
from signaling.sync import Subscription

log = logging.getLogger(__name__)

PAGE = convention.SIGNAL_PAGE  # the backend returns at most 50 signals per call
REMEMBER = convention.REMEMBERED_SIGNALS


@dataclass(frozen=True)
class PollSettings:
    fast: float = convention.POLL_FAST
    idle: float = convention.POLL_IDLE


class SignalPump:
    def __init__(
        self,
        api: ConnvoAPI,
        meeting_id: str,
        handle: Callable[[Signal], Awaitable[None]],
        busy: Callable[[], bool],
        settings: PollSettings,
        *,
        counters: Counters,
        pushed: Subscription | None = None,
        clock_offset_ms: float = 0.0,
    ) -> None:
        """`clock_offset_ms`: the backend's clock less ours, to time pushed signals
        (Counters.push_delays)."""
        self._api = api
        self._meeting_id = meeting_id
        self._handle = handle
        self._busy = busy
        self._settings = settings
        self._pushed = pushed
        self._wake = asyncio.Event()
        self._seen: OrderedDict[str, bool] = OrderedDict()  # id -> marked processed
        self._counters = counters
        self._pushed_seen = 0  # the subscription's `updates` last handled
        self._clock_offset_ms = clock_offset_ms

    def nudge(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        delay = self._settings.fast
        while True:
            self._wake.clear()
            pushed = self._pushed is not None and self._pushed.live
            try:
                count = await (self._take_pushed() if pushed else self.poll_once())
                if self._counters.reading_fails:
                    log.warning("reading signals works again")
                self._counters.reading_fails = False
            except ConnvoError as e:
                # Once per outage, not once per poll: a backend down for a minute is one line.
                level = logging.DEBUG if self._counters.reading_fails else logging.WARNING
                log.log(level, "reading signals failed: %s", e)
                self._counters.reading_fails, count = True, 0
            if pushed and not self._counters.reading_fails:
                await self._wake.wait()  # the next result, or the socket went down
                continue
            if count >= PAGE:
                continue
            if count or self._busy():
                delay = self._settings.fast
            else:
                delay = min(self._settings.idle, delay * 2)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):  # wait_for (3.11) can swallow a cancel
                    await self._wake.wait()

    async def poll_once(self) -> int:
        """Handle one page of signals; answers how many came back."""
        self._counters.signal_polls += 1
        return await self._take(await self._api.pending_signals(self._meeting_id))

    async def _take_pushed(self) -> int:
        assert self._pushed is not None
        sub = self._pushed
        if sub.error is not None:
            raise sub.error
        if sub.updates != self._pushed_seen:  # a nudge wakes the pump too: count results only
            self._pushed_seen = sub.updates
            self._counters.signals_pushed += 1
        return await self._take(sub.value, pushed=True)

    async def _take(self, signals: list[Signal], pushed: bool = False) -> int:
        """Hands over the signals not seen before, in order, then marks what is not marked yet
        (a failed mark is retried with the next page: the signal comes back until marked)."""
        unmarked: list[str] = []
        for signal in signals:
            if signal.id not in self._seen:
                if pushed:
                    self._time_push(signal)
                self._remember(signal.id)
                try:
                    await self._handle(signal)
                except Exception as e:  # one bad signal must not stop the meeting
                    log.warning("signal %s from %s rejected: %s", signal.id, signal.fromUserId, e)
            if not self._seen.get(signal.id, True):
                unmarked.append(signal.id)
        if unmarked:
            await self._api.mark_processed(unmarked)
            for signal_id in unmarked:
                if signal_id in self._seen:
                    self._seen[signal_id] = True
        return len(signals)

    def _time_push(self, signal: Signal) -> None:
        now = time.time()
        delay = 1000 * now + self._clock_offset_ms - signal.timestamp
        self._counters.push_delays.append((now, delay))

    def _remember(self, signal_id: str) -> None:
        self._seen[signal_id] = False
        if len(self._seen) > REMEMBER:
            self._seen.popitem(last=False)
