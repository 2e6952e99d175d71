"""The load driver: a backend (the embedded dev backend in its own process, or a real deployment),
the meetings set up through the API, the bots spread over workers, their records gathered.

    result = run_load(LoadConfig(meetings=50, participants=4, media="none"))
    print(result.summary["success_rate"])

Workers: `workers=0` runs every bot in this process (tests, small runs); `workers=N` starts N
processes; `ray=ADDRESS` uses Ray actors (see `distributed`); `config.placement` says whether a
meeting's bots share a worker (see `placement`). Against a real deployment
(`target=Target(url, host_token, tokens)`) the host creates, starts and finally ends the meetings;
each bot needs its own user's token, as the backend addresses signals to users.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.load import backend, stages
from agent.load.backend import Call
from agent.load.config import LoadConfig, MeetingPlan, plan_meetings
from agent.load.live import LiveMetrics
from agent.load.metrics import summarize
from agent.load.placement import IceChoice, ice_addresses, nodes, place, spans_hosts
from agent.load.progress import ProgressDisplay
from agent.load.records import BotRecord, Usage
from agent.load.worker import Worker, WorkerResult
from signaling.api import ConnvoAPI
from signaling.devserver.process import DevServer
from signaling.errors import ConnvoError

if TYPE_CHECKING:
    from agent.load.distributed import RayCluster

SETUP_CONCURRENCY = 16


@dataclass(frozen=True)
class Target:
    """A deployment to load: its URL, a host's token, and one token per bot."""

    url: str
    host_token: str = field(repr=False)
    tokens: tuple[str, ...] = field(repr=False)
    ca_file: str | None = None
    """The CA bundle for an https URL (None: $SSL_CERT_FILE, else certifi's)."""


@dataclass
class LoadResult:
    records: list[BotRecord]
    usage: list[Usage]
    summary: dict[str, Any]
    started_at: float
    calls: list[Call] = field(default_factory=list)
    """Every function call of the bots (agent.load.backend)."""


def run_load(
    config: LoadConfig,
    *,
    target: Target | None = None,
    workers: int | None = None,
    ray: str | None = None,
    quiet: bool = False,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    ice: IceChoice = "default",
) -> LoadResult:
    """Runs the whole load and answers every bot's record; blocking (it owns the event loops).

    `metrics_port`: serve live Prometheus metrics (agent.load.live) on metrics_host:port from
    before the backend starts to the end of the run (0: any free port; the URL goes to stderr
    unless `quiet`). MetricsUnavailable when it cannot listen there. `ice`: the addresses bots
    gather on (agent.load.placement.ice_addresses; `default` keeps config.ice_addresses unless
    the run spans hosts). With Ray, the cluster is joined first: ClusterUnusable before anything
    starts when it cannot run the load as asked."""
    if ray is not None:
        from agent.load.distributed import require_ray

        require_ray()
    live = None
    if metrics_port is not None:
        live = LiveMetrics(config.bots)
        live.start(metrics_port, metrics_host)
        if not quiet:
            print(f"metrics: {live.url}", file=sys.stderr, flush=True)
    try:
        with _cluster(ray, workers) as cluster:
            return _on(cluster, config, target, workers, quiet, live, ice)
    finally:
        if live is not None:
            live.close()


def _on(
    cluster: RayCluster | None,
    config: LoadConfig,
    target: Target | None,
    workers: int | None,
    quiet: bool,
    live: LiveMetrics | None,
    ice: IceChoice,
) -> LoadResult:
    """The load on a backend that every worker reaches, with ICE addresses that suit it."""
    spread = cluster.spread if cluster else None
    if target is not None and spans_hosts(target.url):
        spread = "--url is another host"
    addresses, note = ice_addresses(ice, config.ice_addresses, spread)
    config = replace(config, ice_addresses=addresses)
    host = cluster.backend_host() if cluster and target is None else "127.0.0.1"
    if note and not quiet:
        print(note, file=sys.stderr, flush=True)
    if target is not None:
        return _run(config, target, workers, cluster, quiet, dev=False, live=live)
    with (
        tempfile.TemporaryDirectory(prefix="connvo-load-") as data,
        DevServer(Path(data), host=host) as server,
    ):
        if host != "127.0.0.1" and not quiet:
            print(f"embedded backend on {server.url}: every Ray node reaches it", file=sys.stderr)
        tokens = tuple(server.token(f"load-bot{i}") for i in range(config.bots))
        embedded = Target(server.url, server.token("load-host"), tokens)
        return _run(config, embedded, workers, cluster, quiet, dev=True, live=live)


def _cluster(ray: str | None, workers: int | None) -> contextlib.AbstractContextManager[Any]:
    """The Ray cluster of `ray`, joined for the run; a null context without Ray."""
    if ray is None:
        return contextlib.nullcontext()
    from agent.load.distributed import RayCluster

    return RayCluster(ray, workers)


def _run(
    config: LoadConfig,
    target: Target,
    workers: int | None,
    ray: RayCluster | None,
    quiet: bool,
    dev: bool,
    live: LiveMetrics | None = None,
) -> LoadResult:
    if len(target.tokens) < config.bots:
        raise ValueError(f"{config.bots} bots need {config.bots} tokens, got {len(target.tokens)}")
    meeting_ids = asyncio.run(setup_meetings(config, target, dev))
    plans = plan_meetings(config, target.url, meeting_ids, list(target.tokens), target.ca_file)
    display = ProgressDisplay(config.bots, quiet=quiet)
    progress = display.update
    if live is not None:
        progress = _both(display.update, live.update)
    started = time.time()
    try:
        results = _execute(config, plans, workers, ray, progress)
    finally:
        display.close()
        asyncio.run(_teardown(target, meeting_ids))
    records = sorted((r for res in results for r in res.records), key=lambda r: r.bot)
    usage = [u for res in results for u in res.usage]
    loop_lag = {res.worker: res.loop_lag for res in results}
    calls = {res.worker: res.calls for res in results}
    summary = summarize(records, usage, config.as_json(), loop_lag)
    summary["placement"] = nodes(records)
    backend.apply(summary, calls, loop_lag, records, started)
    every = sorted((c for of in calls.values() for c in of), key=lambda c: c[0])
    if config.stages:
        summary["stages"] = stages.summary(config.stages, records, every, started)
    return LoadResult(records, usage, summary, started, every)


def _execute(
    config: LoadConfig,
    plans: list[MeetingPlan],
    workers: int | None,
    ray: RayCluster | None,
    progress: Callable[[dict[str, dict[str, float]]], None],
) -> list[WorkerResult]:
    count = workers if workers is not None else (os.cpu_count() or 1)
    if ray is not None:
        return ray.run(config, plans, progress)
    if count == 0:
        return [asyncio.run(_in_process(config, plans, progress))]
    from agent.load.processes import run_processes

    return run_processes(config, place(plans, count, config.placement), progress)


async def _in_process(
    config: LoadConfig,
    plans: list[MeetingPlan],
    progress: Callable[[dict[str, dict[str, float]]], None],
) -> WorkerResult:
    worker = Worker()
    task = asyncio.create_task(worker.run(config, plans, time.time()))
    while not task.done():
        progress({worker.name: worker.progress()})
        await asyncio.wait([task], timeout=0.5)
    progress({worker.name: worker.progress()})  # the last phases and departures, as workers do
    return task.result()


def _both(*callbacks: Callable[[dict[str, dict[str, Any]]], None]) -> Callable[..., None]:
    def progress(workers: dict[str, dict[str, Any]]) -> None:
        for callback in callbacks:
            callback(workers)

    return progress


# --- meetings ----------------------------------------------------------------------------------


async def setup_meetings(config: LoadConfig, target: Target, dev: bool) -> list[str]:
    """Creates and starts the meetings. A bot token that cannot be looked up is still handed to
    its bot, whose join then fails with the backend's own error, in its record."""
    host = ConnvoAPI(target.url, target.host_token, ca_file=target.ca_file)
    limit = asyncio.Semaphore(SETUP_CONCURRENCY)
    n = config.participants

    async def user_id(token: str) -> str | None:
        async with limit:
            try:
                user = await ConnvoAPI(target.url, token, ca_file=target.ca_file).current_user()
            except ConnvoError:
                return None
            return None if user is None else user.id

    async def meeting(index: int, users: list[str | None]) -> str:
        async with limit:
            created = await host.create_meeting(f"load test {index + 1}", maxParticipants=n)
            meeting_id = created.meetingId
            if dev and n > 4:  # the real backend caps mesh rooms at 4; the dev backend can go on
                await host.configure_dev_room(meeting_id, maxParticipants=n)
            for user in users:
                if user is not None:
                    await host.add_participant(meeting_id, user)
            await host.start_meeting(meeting_id)
            return meeting_id

    users = await asyncio.gather(*(user_id(t) for t in target.tokens[: config.bots]))
    return list(
        await asyncio.gather(
            *(meeting(m, users[m * n : (m + 1) * n]) for m in range(config.meetings))
        )
    )


async def _teardown(target: Target, meeting_ids: list[str]) -> None:
    host = ConnvoAPI(target.url, target.host_token, ca_file=target.ca_file)

    async def end(meeting_id: str) -> None:
        with contextlib.suppress(ConnvoError):  # already ended, or the backend is gone
            await host.end_meeting(meeting_id)

    await asyncio.gather(*(end(m) for m in meeting_ids))
