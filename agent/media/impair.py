"""Impairment of the load bots' send path: loss, delay and jitter applied to each RTP packet
before it leaves, so the QoE figures can be shown to move (and a run can model a bad network).

    Impairment.parse("loss=5,delay=200,jitter=30")   # percent, ms, ms

Every packet is dropped with probability `loss`, else sent after `delay` plus a uniform draw in
[-jitter, +jitter] ms (at least 0): packets may overtake each other, as on a real path.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Impairment:
    loss: float = 0.0
    """Percent of packets dropped."""
    delay: float = 0.0
    """ms added to every packet."""
    jitter: float = 0.0
    """ms: each packet's delay varies by up to this much either way."""

    @classmethod
    def parse(cls, text: str) -> Impairment:
        """`loss=PCT,delay=MS,jitter=MS`, any subset; ValueError naming the part at fault."""
        values: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, number = part.partition("=")
            if name not in ("loss", "delay", "jitter") or name in values:
                raise ValueError(f"{part!r}: expected loss=PCT, delay=MS or jitter=MS, once each")
            try:
                values[name] = float(number)
            except ValueError:
                raise ValueError(f"{part!r}: {number!r} is not a number") from None
        impairment = cls(**values)
        if not 0 <= impairment.loss <= 100 or impairment.delay < 0 or impairment.jitter < 0:
            raise ValueError(f"{text!r}: loss is 0-100 %, delay and jitter at least 0 ms")
        return impairment

    def __bool__(self) -> bool:
        return bool(self.loss or self.delay or self.jitter)

    def send(self, send: Callable[[bytes], Awaitable[None]], data: bytes) -> None:
        """Sends `data` through `send` as this path would: maybe never, maybe later."""
        if random.random() * 100 < self.loss:
            return
        wait = max(0.0, self.delay + random.uniform(-self.jitter, self.jitter)) / 1000
        asyncio.get_running_loop().call_later(wait, _start, send, data)


_held: set[asyncio.Task[None]] = set()  # tasks need a reference until they finish


def _start(send: Callable[[bytes], Awaitable[None]], data: bytes) -> None:
    task = asyncio.get_running_loop().create_task(_quietly(send, data))
    _held.add(task)
    task.add_done_callback(_held.discard)


async def _quietly(send: Callable[[bytes], Awaitable[None]], data: bytes) -> None:
    with contextlib.suppress(ConnectionError, OSError):  # closed while the packet was held
        await send(data)
