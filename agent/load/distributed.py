"""Workers as Ray actors: async actors, one per core of the cluster (or `workers`), each hosting
whole meetings of bots in its event loop; the driver polls their progress and gathers their
records into the same summary and report as local workers.

`--ray auto` joins a running cluster, `--ray ray://HOST:10001` a remote one, `--ray local`
starts a local instance for the run. Every node needs connvo-agent installed, and must reach the
backend's URL: the embedded dev backend listens on 127.0.0.1, so it only suits a local instance.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import Callable

from agent.load.config import LoadConfig, MeetingPlan, split
from agent.load.worker import Worker, WorkerResult

INSTALL_HINT = "Ray is not installed: pip install 'connvo-agent[ray]'"
PROGRESS_EVERY = 0.5
START_DELAY = 1.0


class RayMissing(RuntimeError):
    def __init__(self) -> None:
        super().__init__(INSTALL_HINT)


def require_ray() -> None:
    """Fails before anything is set up when Ray is missing; does not import it (run_ray sets
    the environment Ray reads at import)."""
    if importlib.util.find_spec("ray") is None:
        raise RayMissing()


class LoadActor:
    """Made a Ray actor by `run_ray` (ray.remote), so importing this module needs no Ray."""

    def __init__(self) -> None:
        self.worker = Worker()

    async def ready(self) -> str:
        return self.worker.name

    async def run(self, config: LoadConfig, plans: list[MeetingPlan], t0: float) -> WorkerResult:
        return await self.worker.run(config, plans, t0)

    async def progress(self) -> dict[str, float]:
        return self.worker.progress()


def run_ray(
    address: str,
    config: LoadConfig,
    plans: list[MeetingPlan],
    workers: int | None,
    progress: Callable[[dict[str, dict[str, float]]], None],
) -> list[WorkerResult]:
    local = address == "local"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a load tester does not phone home
    if local:
        # Ray's switch for "no multi-node cluster": then a local instance binds and talks on
        # loopback instead of this machine's network address (read when ray is imported).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise RayMissing() from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=None if local else address,
            num_cpus=workers if local and workers else None,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
    try:
        count = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        shares = split(plans, count)
        actor = ray.remote(num_cpus=1, max_concurrency=64)(LoadActor)  # type: ignore[call-overload]  # ray types remote(**options) for functions only, without actor options
        actors = [actor.remote() for _ in shares]
        names = ray.get([a.ready.remote() for a in actors])
        t0 = time.time() + START_DELAY
        pending = [a.run.remote(config, share, t0) for a, share in zip(actors, shares, strict=True)]
        while True:
            _done, waiting = ray.wait(pending, num_returns=len(pending), timeout=PROGRESS_EVERY)
            state = ray.get([a.progress.remote() for a in actors])
            progress(dict(zip(names, state, strict=True)))
            if not waiting:
                return ray.get(pending)
    finally:
        if started_here:
            ray.shutdown()
