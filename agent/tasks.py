"""A room's background tasks: the signal pump, periodic discovery and health checks, recoveries.

They run in the room's context (its ICE addresses, its counting receivers), what they raise is
logged rather than lost or raised into aiortc, and leaving cancels them all at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from signaling.errors import ConnvoError

log = logging.getLogger(__name__)


class Background:
    def __init__(self, context: contextvars.Context) -> None:
        self._context = context
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Runs `coro` unwrapped, so a task cancelled before it started leaves no "never
        awaited" coroutine behind. After `cancel()` nothing new starts."""
        if self._closed:
            coro.close()
            return
        task = asyncio.create_task(coro, context=self._context)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def every(self, interval: float, action: Callable[[], Awaitable[None]]) -> None:
        """`action` every `interval` seconds; one that fails is logged and tried again."""
        self.spawn(self._every(interval, action))

    async def cancel(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        error = None if task.cancelled() else task.exception()
        if isinstance(error, ConnvoError):
            log.warning("%s", error)
        elif error is not None:
            log.error("background task failed", exc_info=error)

    @staticmethod
    async def _every(interval: float, action: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await action()
            except ConnvoError as e:
                log.warning("%s", e)
            except Exception:
                log.exception("background task failed")


async def quietly(coro: Coroutine[Any, Any, Any]) -> None:
    """Awaits a call whose refusal changes nothing (closing a session on the way out)."""
    with contextlib.suppress(ConnvoError):
        await coro
