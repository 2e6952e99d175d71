"""Workers as local processes, one per core: the driver starts them (spawned, not forked: the
driver may hold an event loop and threads), waits until every one has imported and is ready,
gives them a common start time, relays their progress and collects their records."""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import time
from collections.abc import Callable
from typing import Any

from agent.load.config import LoadConfig, MeetingPlan
from agent.load.worker import Worker, WorkerResult

PROGRESS_EVERY = 0.5
START_DELAY = 0.5
READY_TIMEOUT = 60.0

Progress = Callable[[dict[str, dict[str, float]]], None]


def run_processes(
    config: LoadConfig, shares: list[list[MeetingPlan]], progress: Progress
) -> list[WorkerResult]:
    context = multiprocessing.get_context("spawn")
    messages: Any = context.Queue()
    go = context.Event()
    start = context.Value("d", 0.0)
    processes = [
        context.Process(target=_main, args=(config, share, messages, go, start), daemon=True)
        for share in shares
    ]
    for process in processes:
        process.start()
    try:
        return _supervise(config, shares, processes, messages, go, start, progress)
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()


def _supervise(config, shares, processes, messages, go, start, progress) -> list[WorkerResult]:
    ready: set[str] = set()
    while len(ready) < len(processes):
        kind, name, _ = _next(messages, READY_TIMEOUT, processes)
        ready.add(name)
    start.value = time.time() + START_DELAY
    go.set()
    last_offset = max(bot.start_offset for share in shares for p in share for bot in p.bots)
    limit = (
        START_DELAY + last_offset + config.staged_s + config.join_timeout + config.duration + 120
    )
    deadline = time.monotonic() + limit
    state: dict[str, dict[str, float]] = {}
    results: list[WorkerResult] = []
    while len(results) < len(processes):
        kind, name, payload = _next(messages, deadline - time.monotonic(), processes)
        if kind == "progress":
            state[name] = payload
            progress(state)
        elif kind == "done":
            results.append(payload)
        elif kind == "error":
            raise RuntimeError(f"load worker {name} failed: {payload}")
    return results


def _next(messages: Any, timeout: float, processes: list) -> tuple[str, str, Any]:
    """The next message; a worker that died without a word is an error, not a hang."""
    deadline = time.monotonic() + max(timeout, 0.0)
    while True:
        try:
            return messages.get(timeout=1.0)
        except queue.Empty:
            dead = [p for p in processes if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a load worker exited with code {dead[0].exitcode}") from None
            if time.monotonic() > deadline:
                raise TimeoutError("load workers did not finish in time") from None


def _main(config: LoadConfig, plans: list[MeetingPlan], messages: Any, go: Any, start: Any) -> None:
    worker = Worker()
    messages.put(("ready", worker.name, None))
    go.wait()
    try:
        result = asyncio.run(_run(worker, config, plans, start.value, messages))
    except BaseException as e:
        messages.put(("error", worker.name, f"{type(e).__name__}: {e}"))
        raise
    messages.put(("done", worker.name, result))


async def _run(
    worker: Worker, config: LoadConfig, plans: list[MeetingPlan], t0: float, messages: Any
) -> WorkerResult:
    task = asyncio.create_task(worker.run(config, plans, t0))
    while not task.done():
        messages.put(("progress", worker.name, worker.progress()))
        await asyncio.wait([task], timeout=PROGRESS_EVERY)
    messages.put(("progress", worker.name, worker.progress()))
    return task.result()
