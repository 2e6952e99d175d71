"""The official `convex` Python client (Rust inside) and ours (`signaling.sync.SyncClient`, plain
asyncio) side by side in an asyncio program, against the dev backend's sync protocol: what N
clients cost the event loop, the process's threads and memory, how soon updates arrive, and what
a client does when the deployment is unreachable.

    .venv/bin/python scripts/bench_sync_clients.py                  # both, 50 clients, 20 updates
    .venv/bin/python scripts/bench_sync_clients.py --client ours --clients 200
    .venv/bin/python scripts/bench_sync_clients.py --client official --closed-port-wait 60

Each client is measured in a fresh process (one dev backend serves both), so neither pays for the
other's threads or heap; a table compares them at the end. Loop lag is measured by a ticker that
sleeps 5 ms: lag = how late it woke up. The subscribers are all signed in as one guest and
subscribe to its getPendingSignals (one socket and one subscription per client), so each signal
the host sends over HTTP is one update per client. Setup ends when every client has its first
result: the official clients are created one after the other (their calls are synchronous, each
connects on threads of its own), ours connect concurrently (`asyncio.gather`).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import multiprocessing
import signal
import socket
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import convex
import psutil

from signaling import functions as fn
from signaling.api import ConnvoAPI
from signaling.devserver import DevServer
from signaling.sync import Subscription, SyncClient

TICK = 0.005
PENDING = "meetings/webrtc/index:getPendingSignals"


class LagMeter:
    """A task sleeping TICK in a loop; `lag` is the worst oversleep since the last `reset`."""

    def __init__(self) -> None:
        self.lag = 0.0
        self._task = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(TICK)
            self.lag = max(self.lag, time.perf_counter() - started - TICK)

    def reset(self) -> float:
        lag, self.lag = self.lag, 0.0
        return lag

    def stop(self) -> None:
        self._task.cancel()


def usage() -> tuple[int, int]:
    """(OS threads, RSS bytes) of this process."""
    me = psutil.Process()
    return me.num_threads(), me.memory_info().rss


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


@dataclass(frozen=True)
class Target:
    """The deployment and the users of one measurement (minted by the parent process)."""

    url: str
    host_token: str
    guest_token: str
    guest_id: str


@dataclass
class Watcher:
    """One subscriber: when each of its results arrived, and how many signals the latest held."""

    arrivals: list[float] = field(default_factory=list)
    signals: int = 0

    def record(self, value: list[Any] | None) -> None:
        self.arrivals.append(time.perf_counter())
        self.signals = len(value or ())


# --- what a client does on a closed port ---------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Expired(Exception):
    pass


def raised(error: Exception) -> str:
    return f"raised {type(error).__name__}: {error}"


def attempt(call: Callable[[], Any], seconds: float) -> tuple[str, float]:
    """(outcome, seconds) of a synchronous client call, cut off by SIGALRM after `seconds`:
    the official client checks for signals about once a second while it blocks."""

    def expire(signum: int, frame: Any) -> None:
        raise Expired

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.perf_counter()
    try:
        call()
        outcome = "returned"
    except Expired:
        outcome = "blocked (GIL held) until SIGALRM"
    except Exception as e:
        outcome = raised(e)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return outcome, time.perf_counter() - started


async def attempt_async(call: Callable[[], Awaitable[Any]], seconds: float) -> tuple[str, float]:
    """(outcome, seconds) of an awaited call, given up after `seconds`."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(seconds):
            value = await call()
        outcome = "returned" if value is None else f"returned {value}"
    except TimeoutError:
        outcome = f"no answer, no error in {seconds:.0f} s"
    except Exception as e:
        outcome = raised(e)
    return outcome, time.perf_counter() - started


async def step(call: str, outcome: str, seconds: float, meter: LagMeter) -> dict[str, Any]:
    await asyncio.sleep(0.05)  # a ticker held up by a blocking call wakes up now
    return {
        "call": call,
        "outcome": outcome,
        "ms": ms(seconds),
        "max_loop_lag_ms": ms(meter.reset()),
    }


# --- the two clients -----------------------------------------------------------------------------


class Clients:
    """Subscribers of one kind. `open` starts n of them (each feeding a Watcher), `close` ends
    them all; `slowest` is each setup step's longest call."""

    name = ""

    def __init__(self, target: Target, wanted: int) -> None:
        self.target, self.wanted = target, wanted
        self.slowest: dict[str, float] = {}

    def _note(self, setup_step: str, started: float) -> None:
        took = time.perf_counter() - started
        self.slowest[setup_step] = max(self.slowest.get(setup_step, 0.0), took)

    def details(self) -> dict[str, Any]:
        return {f"slowest_{name}_ms": ms(seconds) for name, seconds in self.slowest.items()}

    async def open(self, n: int, args: dict[str, Any]) -> list[Watcher]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def closed_port(self, wait: float, meter: LagMeter) -> list[dict[str, Any]]:
        """Runs against a port nobody listens on: does anything raise, or wait forever?"""
        raise NotImplementedError


def _subscribe(
    client: convex.ConvexClient, path: str, subs: list[convex.QuerySubscription]
) -> None:
    subs.append(client.subscribe(path, {}))


class Official(Clients):
    """`convex.ConvexClient`: synchronous calls, a Rust runtime on threads of its own, results
    by async iteration (one reader task per subscription)."""

    name = "official"

    def __init__(self, target: Target, wanted: int) -> None:
        super().__init__(target, wanted)
        self.clients: list[convex.ConvexClient] = []
        self.subs: list[convex.QuerySubscription] = []
        self.readers: list[asyncio.Task[None]] = []

    def _timed(self, setup_step: str, call: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        value = call()
        self._note(setup_step, started)
        return value

    async def open(self, n: int, args: dict[str, Any]) -> list[Watcher]:
        watchers = [Watcher() for _ in range(n)]
        for watcher in watchers:
            client = self._timed("construct", lambda: convex.ConvexClient(self.target.url))
            self._timed("set_auth", functools.partial(client.set_auth, self.target.guest_token))
            sub = self._timed("subscribe", functools.partial(client.subscribe, PENDING, args))
            self.clients.append(client)
            self.subs.append(sub)
            self.readers.append(asyncio.create_task(self._read(sub, watcher)))
            await asyncio.sleep(0)
        return watchers

    async def _read(self, sub: convex.QuerySubscription, watcher: Watcher) -> None:
        async for value in sub:
            watcher.record(value if isinstance(value, list) else None)  # a list of signals
            if watcher.signals >= self.wanted:
                return

    async def close(self) -> None:
        for reader in self.readers:
            reader.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        self.readers.clear()
        self.subs.clear()
        self.clients.clear()  # dropping a client ends it

    async def closed_port(self, wait: float, meter: LagMeter) -> list[dict[str, Any]]:
        return [await self._unreachable(wait, meter, auth) for auth in (False, True)]

    async def _unreachable(self, wait: float, meter: LagMeter, auth: bool) -> dict[str, Any]:
        url = f"http://127.0.0.1:{closed_port()}"
        meter.reset()
        client = convex.ConvexClient(url)
        if auth:
            client.set_auth("any-token")
        subs: list[convex.QuerySubscription] = []
        steps = []
        for call, path in (("subscribe", PENDING), ("subscribe again", PENDING + "X")):
            outcome, took = attempt(functools.partial(_subscribe, client, path, subs), wait)
            steps.append(await step(call, outcome, took, meter))
        if subs:
            outcome, took = await attempt_async(lambda: anext(subs[0]), wait)
            steps.append(await step("anext(subscription)", outcome, took, meter))
        return {"url": url, "set_auth_first": auth, "steps": steps, "threads": usage()[0]}


class Ours(Clients):
    """`signaling.sync.SyncClient`: one reader task per socket on this loop, no threads."""

    name = "ours"

    def __init__(self, target: Target, wanted: int) -> None:
        super().__init__(target, wanted)
        self.clients: list[SyncClient] = []
        self.subs: list[Subscription] = []

    async def open(self, n: int, args: dict[str, Any]) -> list[Watcher]:
        watchers = [Watcher() for _ in range(n)]
        await asyncio.gather(*(self._one(args, watcher) for watcher in watchers))
        return watchers

    async def _one(self, args: dict[str, Any], watcher: Watcher) -> None:
        client = SyncClient(self.target.url, self.target.guest_token)
        started = time.perf_counter()
        await client.connect()
        self._note("connect", started)
        self.clients.append(client)
        sub: Subscription | None = None

        def changed() -> None:
            if sub is None or sub.live:  # not a lost socket
                watcher.record(sub.value if sub else None)

        started = time.perf_counter()
        sub = await client.subscribe(fn.GET_PENDING_SIGNALS, args, changed)
        self._note("subscribe", started)
        self.subs.append(sub)

    def details(self) -> dict[str, Any]:
        return {
            **super().details(),
            "results_by_sub_updates": sum(sub.updates for sub in self.subs),
            "reconnects": sum(client.connections - 1 for client in self.clients),
        }

    async def close(self) -> None:
        await asyncio.gather(*(client.close() for client in self.clients))
        self.clients.clear()
        self.subs.clear()

    async def closed_port(self, wait: float, meter: LagMeter) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{closed_port()}"
        meter.reset()
        client = SyncClient(url, "any-token")
        outcome, took = await attempt_async(client.connect, wait)
        steps = [await step("connect", outcome, took, meter)]

        async def subscribe() -> str:
            args = {"meetingId": "any-meeting"}
            sub = await client.subscribe(fn.GET_PENDING_SIGNALS, args, lambda: None)
            return f"(live={sub.live})"

        outcome, took = await attempt_async(subscribe, wait)
        steps.append(await step("subscribe", outcome, took, meter))
        await client.close()
        return [{"url": url, "steps": steps, "threads": usage()[0]}]


KINDS: dict[str, type[Clients]] = {kind.name: kind for kind in (Official, Ours)}


# --- one measurement (in a child process) --------------------------------------------------------


async def wait_until(done: Callable[[], bool], seconds: float) -> bool:
    deadline = time.perf_counter() + seconds
    while not done():
        if time.perf_counter() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def start_meeting(host: ConnvoAPI, target: Target) -> str:
    meeting = (await host.create_meeting("bench")).meetingId
    await host.add_participant(meeting, target.guest_id)
    await host.start_meeting(meeting)
    return meeting


async def warm_up(clients: Clients, args: dict[str, Any], timeout: float) -> None:
    """One client first: runtimes, imports and parsers start here, outside the figures."""
    watchers = await clients.open(1, args)
    await wait_until(lambda: bool(watchers[0].arrivals), timeout)
    clients.slowest.clear()
    gc.collect()
    await asyncio.sleep(0.2)


async def setup(
    clients: Clients, n: int, args: dict[str, Any], timeout: float, meter: LagMeter
) -> tuple[list[Watcher], dict[str, Any]]:
    meter.reset()
    started = time.perf_counter()
    watchers = await clients.open(n, args)
    calls_s = time.perf_counter() - started
    complete = await wait_until(lambda: all(w.arrivals for w in watchers), timeout)
    return watchers, {
        "clients": n,
        "setup_calls_ms": ms(calls_s),
        "all_first_results_ms": ms(time.perf_counter() - started) if complete else None,
        "max_loop_lag_setup_ms": ms(meter.reset()),
        **clients.details(),
    }


async def send_signals(
    host: ConnvoAPI, meeting: str, target: Target, cli: argparse.Namespace
) -> list[float]:
    sent: list[float] = []
    for n in range(cli.updates):
        sent.append(time.perf_counter())
        candidate = {"candidate": f"candidate:{n} 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0"}
        await host.send_candidate(meeting, "s1", candidate, target.guest_id)
        await asyncio.sleep(cli.interval)
    return sent


def latency_figures(watchers: list[Watcher], sent: list[float]) -> dict[str, Any]:
    """An update's latency: from its send to the client's first result after it (a client may
    coalesce updates: then one result serves several sends)."""
    latencies = [
        next(a for a in w.arrivals if a >= t) - t
        for w in watchers
        for t in sent
        if w.arrivals and w.arrivals[-1] >= t
    ]
    return {
        "update_latency_median_ms": ms(statistics.median(latencies)) if latencies else None,
        "update_latency_p95_ms": (
            ms(statistics.quantiles(latencies, n=20)[-1]) if len(latencies) > 1 else None
        ),
    }


async def receive(
    clients: Clients,
    watchers: list[Watcher],
    host: ConnvoAPI,
    meeting: str,
    cli: argparse.Namespace,
    meter: LagMeter,
) -> dict[str, Any]:
    meter.reset()
    sent = await send_signals(host, meeting, clients.target, cli)
    await wait_until(lambda: all(w.signals >= cli.updates for w in watchers), cli.timeout)
    return {
        "max_loop_lag_updates_ms": ms(meter.reset()),
        "updates_seen": sum(len(w.arrivals) - 1 for w in watchers),  # the first result is empty
        "updates_expected": cli.updates * len(watchers),
        "clients_with_every_signal": sum(w.signals >= cli.updates for w in watchers),
        **latency_figures(watchers, sent),
    }


def cost(
    before: tuple[int, int], loaded: tuple[int, int], after: tuple[int, int], n: int
) -> dict[str, Any]:
    return {
        "threads_before": before[0],
        "threads_with_clients": loaded[0],
        "threads_per_client": round((loaded[0] - before[0]) / n, 2),
        "threads_after_close": after[0],
        "rss_per_client_kib": round((loaded[1] - before[1]) / n / 1024, 1),
        "rss_before_mib": round(before[1] / 2**20, 1),
        "rss_with_clients_mib": round(loaded[1] / 2**20, 1),
        "rss_after_close_mib": round(after[1] / 2**20, 1),
    }


async def subscribers(clients: Clients, cli: argparse.Namespace, meter: LagMeter) -> dict[str, Any]:
    host = ConnvoAPI(clients.target.url, clients.target.host_token)
    meeting = await start_meeting(host, clients.target)
    args = {"meetingId": meeting}
    await warm_up(clients, args, cli.timeout)
    before = usage()
    watchers, figures = await setup(clients, cli.clients, args, cli.timeout, meter)
    await asyncio.sleep(0.5)
    loaded = usage()
    figures |= await receive(clients, watchers, host, meeting, cli, meter)
    await clients.close()
    gc.collect()
    await asyncio.sleep(1.0)
    return figures | cost(before, loaded, usage(), cli.clients)


async def measure_async(kind: str, cli: argparse.Namespace, target: Target) -> dict[str, Any]:
    meter = LagMeter()
    clients = KINDS[kind](target, cli.updates)
    result = {
        "subscribers": await subscribers(clients, cli, meter),
        "closed_port": await clients.closed_port(cli.closed_port_wait, meter),
    }
    meter.stop()
    return result


def measure(kind: str, cli: argparse.Namespace, target: Target) -> dict[str, Any]:
    return asyncio.run(measure_async(kind, cli, target))


def in_child(kind: str, cli: argparse.Namespace, server: DevServer) -> dict[str, Any]:
    """One client kind in a fresh process, with users of its own."""
    host, guest = f"bench-host-{kind}", f"bench-guest-{kind}"
    target = Target(server.url, server.token(host), server.token(guest), server.user_id(guest))
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, (kind, cli, target))


# --- the report ----------------------------------------------------------------------------------

ROWS = {
    "clients": "clients",
    "setup: calls returned (ms)": "setup_calls_ms",
    "setup: every first result (ms)": "all_first_results_ms",
    "worst loop lag, setup (ms)": "max_loop_lag_setup_ms",
    "worst loop lag, updates (ms)": "max_loop_lag_updates_ms",
    "threads added per client": "threads_per_client",
    "RSS per client (KiB)": "rss_per_client_kib",
    "update latency p50 (ms)": "update_latency_median_ms",
    "update latency p95 (ms)": "update_latency_p95_ms",
}


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The figures compared in the table; the closed port's from the first run."""
    subs = result["subscribers"]
    steps = result["closed_port"][0]["steps"]
    figures = {label: subs[key] for label, key in ROWS.items()}
    figures["updates seen / expected"] = f"{subs['updates_seen']}/{subs['updates_expected']}"
    for n, s in enumerate(steps, 1):
        figures[f"closed port: call {n}"] = f"{s['call']} {s['outcome'].split(':')[0]}"
        figures[f"closed port: call {n} (ms)"] = s["ms"]
    figures["closed port: worst loop lag (ms)"] = max(s["max_loop_lag_ms"] for s in steps)
    return figures


def table(summaries: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    labels = dict.fromkeys(label for s in summaries.values() for label in s)
    return {label: {kind: s.get(label, "-") for kind, s in summaries.items()} for label in labels}


def print_details(kind: str, result: dict[str, Any]) -> None:
    print(f"{kind}:")
    for key, value in result["subscribers"].items():
        print(f"  {key:34} {value}")
    for run in result["closed_port"]:
        print(f"  closed port {run['url']} ({run['threads']} threads after):")
        for s in run["steps"]:
            print(f"    {s['call']:19} {s['outcome']} ({s['ms']} ms)", end="")
            print(f", worst loop lag {s['max_loop_lag_ms']} ms")
    print(flush=True)


def print_table(rows: dict[str, dict[str, Any]]) -> None:
    kinds = list(next(iter(rows.values())))
    width = max(map(len, rows))
    widths = {k: max(len(k), *(len(str(row[k])) for row in rows.values())) for k in kinds}
    print(f"{'':{width}}  " + "  ".join(f"{k:>{widths[k]}}" for k in kinds))
    for label, row in rows.items():
        print(f"{label:{width}}  " + "  ".join(f"{row[k]!s:>{widths[k]}}" for k in kinds))


def main(cli: argparse.Namespace) -> None:
    kinds = list(KINDS) if cli.client == "both" else [cli.client]
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as data, DevServer(Path(data)) as srv:
        for kind in kinds:
            results[kind] = in_child(kind, cli, srv)
            if not cli.json:
                print_details(kind, results[kind])
    rows = table({kind: summary(result) for kind, result in results.items()})
    if cli.json:
        print(json.dumps({**results, "table": rows}, indent=2))
    else:
        print_table(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", choices=["official", "ours", "both"], default="both")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--updates", type=int, default=20, help="signals sent to the subscribers")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between signals")
    parser.add_argument("--timeout", type=float, default=30.0, help="longest wait for results")
    parser.add_argument("--closed-port-wait", type=float, default=20.0)
    parser.add_argument("--json", action="store_true")
    main(parser.parse_args())
