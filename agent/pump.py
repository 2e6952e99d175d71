"""The signal pump: reads this user's pending signals, hands them over in order, marks them.

Every poll is a billed function call on the real service, so the pump polls at `fast` while a
negotiation is in flight (or signals just arrived) and backs off towards `idle` otherwise.
`nudge()` wakes it at once, e.g. right after an offer went out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from signaling.api import ConnvoAPI
from signaling.errors import ConnvoError
from signaling.models import Signal

log = logging.getLogger(__name__)

PAGE = 50  # the backend returns at most 50 signals per call


@dataclass(frozen=True)
class PollSettings:
    fast: float = 0.05
    idle: float = 1.0


class SignalPump:
    def __init__(
        self,
        api: ConnvoAPI,
        meeting_id: str,
        handle: Callable[[Signal], Awaitable[None]],
        busy: Callable[[], bool],
        settings: PollSettings,
    ) -> None:
        self._api = api
        self._meeting_id = meeting_id
        self._handle = handle
        self._busy = busy
        self._settings = settings
        self._wake = asyncio.Event()
        self._seen: set[str] = set()
        self._seen_order: deque[str] = deque()
        self.polls = 0
        """getPendingSignals calls so far: each is a billed function call on Convex."""
        self.failing = False
        """The last read failed (after the client's own retries): the backend is out of reach."""

    def nudge(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        delay = self._settings.fast
        while True:
            try:
                count = await self.poll_once()
                if self.failing:
                    log.warning("reading signals works again")
                self.failing = False
            except ConnvoError as e:
                # Once per outage, not once per poll: a backend down for a minute is one line.
                level = logging.DEBUG if self.failing else logging.WARNING
                log.log(level, "reading signals failed: %s", e)
                self.failing, count = True, 0
            if count >= PAGE:
                continue
            if count or self._busy():
                delay = self._settings.fast
            else:
                delay = min(self._settings.idle, delay * 2)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):  # wait_for (3.11) can swallow a cancel
                    await self._wake.wait()

    async def poll_once(self) -> int:
        """Handle one page of signals; answers how many came back."""
        self.polls += 1
        signals = await self._api.pending_signals(self._meeting_id)
        done: list[str] = []
        for signal in signals:
            if signal.id not in self._seen:
                self._remember(signal.id)
                try:
                    await self._handle(signal)
                except Exception as e:  # one bad signal must not stop the meeting
                    log.warning("signal %s from %s rejected: %s", signal.id, signal.fromUserId, e)
            done.append(signal.id)
        if done:
            await self._api.mark_processed(done)
        return len(signals)

    def _remember(self, signal_id: str) -> None:
        self._seen.add(signal_id)
        self._seen_order.append(signal_id)
        if len(self._seen_order) > 4096:
            self._seen.discard(self._seen_order.popleft())
