"""Workers as Ray actors: async actors, one per CPU of the cluster (or `workers`), each pinned to
a node and hosting bots in its event loop; the driver polls their progress and gathers their
records into the same summary and report as local workers.

`--ray auto` joins a running cluster, `--ray HOST:6379` or `ray://HOST:10001` a remote one,
`--ray local` starts a local instance for the run. Every node needs connvo-agent installed, and
must reach the backend: with more than one node, the embedded dev backend listens on the driver
node's address (`RayCluster.backend_host`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from agent.load.config import LoadConfig, MeetingPlan
from agent.load.placement import interleave, place
from agent.load.worker import Worker, WorkerResult

INSTALL_HINT = "Ray is not installed: pip install 'connvo-agent[ray]'"
PROGRESS_EVERY = 0.5
START_DELAY = 1.0


class RayMissing(RuntimeError):
    def __init__(self) -> None:
        super().__init__(INSTALL_HINT)


class ClusterUnusable(RuntimeError):
    """The cluster cannot run this load as asked (said before anything starts)."""


def require_ray() -> None:
    """Fails before anything is set up when Ray is missing; does not import it (RayCluster sets
    the environment Ray reads at import)."""
    if importlib.util.find_spec("ray") is None:
        raise RayMissing()


class LoadActor:
    """Made a Ray actor by `RayCluster.run` (ray.remote), so importing this module needs no Ray."""

    def __init__(self) -> None:
        self.worker = Worker()

    async def ready(self) -> str:
        return self.worker.name

    async def run(self, config: LoadConfig, plans: list[MeetingPlan], t0: float) -> WorkerResult:
        return await self.worker.run(config, plans, t0)

    async def progress(self) -> dict[str, float]:
        return self.worker.progress()


class RayCluster:
    """A Ray cluster joined for one run (and left after it, if joined here): its nodes first, so
    that the backend and the ICE addresses can suit them before anything starts."""

    def __init__(self, address: str, workers: int | None = None) -> None:
        self.address = address
        self.workers = workers
        self.nodes: list[dict[str, Any]] = []
        self._started_here = False

    def __enter__(self) -> RayCluster:
        ray = _import_ray(local=self.address == "local")
        if not ray.is_initialized():
            local = self.address == "local"
            try:
                ray.init(
                    address=None if local else self.address,
                    num_cpus=self.workers if local and self.workers else None,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.ERROR,
                )
            except ConnectionError as e:
                raise ClusterUnusable(f"{e}{_auth_hint()}") from None
            self._started_here = True
        self.nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU")]
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._started_here:
            import ray

            ray.shutdown()

    @property
    def spread(self) -> str | None:
        """Why bots of this cluster are on several hosts (None: one node)."""
        return f"Ray has {len(self.nodes)} nodes" if len(self.nodes) > 1 else None

    def backend_host(self) -> str:
        """Where an embedded backend must listen for every node to reach it: loopback on one
        node, else this driver's node address. A client (ray://) may be outside the cluster."""
        if len(self.nodes) < 2:
            return "127.0.0.1"
        if self.address.startswith("ray://"):
            raise ClusterUnusable(
                f"--ray {self.address} has {len(self.nodes)} nodes and connects from outside "
                "them: give --url, a backend every node reaches"
            )
        import ray

        here = ray.get_runtime_context().get_node_id()
        return next(n["NodeManagerAddress"] for n in self.nodes if n["NodeID"] == here)

    def run(
        self,
        config: LoadConfig,
        plans: list[MeetingPlan],
        progress: Callable[[dict[str, dict[str, float]]], None],
    ) -> list[WorkerResult]:
        """Actors on the nodes in turn (one per CPU), the meetings placed over them."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        slots = interleave({n["NodeID"]: int(n["Resources"]["CPU"]) for n in self.nodes})
        slots = slots[: self.workers] if self.workers else slots
        shares = place(plans, len(slots), config.placement)
        actor = ray.remote(num_cpus=1, max_concurrency=64)(LoadActor)  # type: ignore[call-overload]  # ray types remote(**options) for functions only, without actor options
        actors = [
            actor.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)
            ).remote()
            for node, _ in zip(slots, shares, strict=False)
        ]
        names = ray.get([a.ready.remote() for a in actors])
        t0 = time.time() + START_DELAY
        pending = [a.run.remote(config, share, t0) for a, share in zip(actors, shares, strict=True)]
        while True:
            _done, waiting = ray.wait(pending, num_returns=len(pending), timeout=PROGRESS_EVERY)
            state = ray.get([a.progress.remote() for a in actors])
            progress(dict(zip(names, state, strict=True)))
            if not waiting:
                return ray.get(pending)


def _auth_hint() -> str:
    """Ray 2.60 turns token authentication on by itself for a local instance, not for a
    cluster given by address: a cluster that has it refuses this driver without a word why."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        return ""
    return (
        " (if its nodes use token authentication: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN,"
        " as for their `ray start`)"
    )


def _import_ray(local: bool) -> Any:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a load tester does not phone home
    if local:
        # Ray's switch for "no multi-node cluster": then a local instance binds and talks on
        # loopback instead of this machine's network address (read when ray is imported).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise RayMissing() from None
    return ray
