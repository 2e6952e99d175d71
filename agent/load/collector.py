"""Python's cyclic garbage collector, kept from freezing every stream of a load worker at once.

A full collection (generation 2) walks every object the collector tracks, holding the GIL: the
event loop and the video encoder's thread stop together, so every stream the worker sends stalls
at the same moment. Its cost grows with the live objects, and bots that join make many that
live: full collections come often while bots join, each longer than the last. The worker of 48
A+V bots (scripts/bench_saturation.py, gc.callbacks): 42, 93, 94, 153 and 174 ms in its first 6 s,
each a 160-240 ms gap in the shared video feed, so on every video stream at once: with a frame
interval before it, a freeze by the browsers' rule whenever the machine is busy. The generator
made those freezes itself (freeze_ratio 0.007 to 0.05 from run to run).

While a worker's bots join, every FREEZE_EVERY seconds it collects the young generations (the
cyclic garbage of the joins so far goes) and moves the survivors to the permanent generation
(gc.freeze()), which no collection walks: a full collection then walks only what was made since.
A joined bot's objects live until it leaves, so little is held that a collection would have
freed; `release()` hands everything back to the collector when the worker's bots are gone.
Measured the same way: one full collection (20 ms) at the start, none more until the bots left.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable

FREEZE_EVERY = 0.5
"""Seconds between freezes while bots join: a full collection walks at most about this much of
the joins' objects."""


async def freeze_joins(joining: Callable[[], bool], until: float) -> None:
    """Freezes the survivors now (the worker's modules and plans), then every FREEZE_EVERY
    seconds, and once more when `joining()` says no bot is left to join, or at `until` (epoch
    seconds: the last join's deadline; a bot stuck joining must not keep it going all run, as
    every cycle frozen stays until `release()`, garbage or not). Run as a task; `release()`
    after the bots left."""
    while True:
        gc.collect(1)
        gc.freeze()
        if not joining() or time.time() > until:
            return
        await asyncio.sleep(FREEZE_EVERY)


def release() -> None:
    """Everything frozen goes back to the collector's oldest generation."""
    gc.unfreeze()
