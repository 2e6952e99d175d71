"""The official `convex` Python client (Rust inside) in an asyncio program, against the dev
backend's sync protocol: what N clients cost the event loop, the process's threads and memory,
and what a client does when the deployment is unreachable.

    .venv/bin/python scripts/bench_sync_clients.py                 # 50 clients, 20 updates
    .venv/bin/python scripts/bench_sync_clients.py --clients 100 --closed-port-wait 60

Loop lag is measured by a ticker that sleeps 5 ms: lag = how late it woke up. The subscribers
are all signed in as one guest and subscribe to its getPendingSignals (one socket and one
subscription per client), so each signal the host sends over HTTP is one update per client.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import signal
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import convex
import psutil

from signaling.api import ConnvoAPI
from signaling.devserver import DevServer

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


async def subscribers(args: argparse.Namespace, server: DevServer, meter: LagMeter) -> dict:
    host_token, guest_token = server.token("bench-host"), server.token("bench-guest")
    host = ConnvoAPI(server.url, host_token)
    meeting = (await host.create_meeting("bench")).meetingId
    await host.add_participant(meeting, server.user_id("bench-guest"))
    await host.start_meeting(meeting)
    warm_up = convex.ConvexClient(server.url)  # the client's process-wide runtime starts here
    warm_up.set_auth(guest_token)
    warm_up_sub = warm_up.subscribe(PENDING, {"meetingId": meeting})
    await anext(warm_up_sub)
    gc.collect()
    await asyncio.sleep(0.2)
    threads0, rss0 = usage()

    meter.reset()
    started = time.perf_counter()
    clients, subs = [], []
    args_ = {"meetingId": meeting}
    worst = {"construct": 0.0, "set_auth": 0.0, "subscribe": 0.0}

    def timed(step: str, call: Any) -> Any:
        t = time.perf_counter()
        value = call()
        worst[step] = max(worst[step], time.perf_counter() - t)
        return value

    for _ in range(args.clients):
        client = timed("construct", lambda: convex.ConvexClient(server.url))
        timed("set_auth", lambda c=client: c.set_auth(guest_token))
        subs.append(timed("subscribe", lambda c=client: c.subscribe(PENDING, args_)))
        clients.append(client)
        await asyncio.sleep(0)
    create_s = time.perf_counter() - started
    create_lag = meter.reset()

    seen: list[list[float]] = [[] for _ in subs]

    async def read(sub: convex.QuerySubscription, arrivals: list[float]) -> None:
        async for value in sub:
            arrivals.append(time.perf_counter())
            if len(value) >= args.updates:
                return

    readers = [
        asyncio.create_task(read(sub, arrivals)) for sub, arrivals in zip(subs, seen, strict=True)
    ]
    while any(not s for s in seen):  # every client has its first (empty) answer
        await asyncio.sleep(0.01)
    first_answer_s = time.perf_counter() - started
    await asyncio.sleep(0.5)
    threads1, rss1 = usage()

    meter.reset()
    sent: list[float] = []
    for n in range(args.updates):
        sent.append(time.perf_counter())
        candidate = {"candidate": f"candidate:{n} 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0"}
        await host.send_candidate(meeting, "s1", candidate, server.user_id("bench-guest"))
        await asyncio.sleep(args.interval)
    async with asyncio.timeout(30):
        await asyncio.gather(*readers)
    receive_lag = meter.reset()
    # an update is the first value after its send: the client may coalesce some
    latencies = [
        next((a for a in arrivals if a >= t), arrivals[-1]) - t for arrivals in seen for t in sent
    ]
    values_per_client = statistics.mean(len(s) - 1 for s in seen)

    del clients, subs, readers, warm_up, warm_up_sub
    gc.collect()
    await asyncio.sleep(1.0)
    threads2, rss2 = usage()
    return {
        "clients": args.clients,
        "create_subscribe_total_ms": ms(create_s),
        **{f"worst_{step}_ms": ms(seconds) for step, seconds in worst.items()},
        "max_loop_lag_creating_ms": ms(create_lag),
        "all_first_answers_ms": ms(first_answer_s),
        "updates_sent": args.updates,
        "values_seen_per_client_mean": round(values_per_client, 1),
        "max_loop_lag_receiving_ms": ms(receive_lag),
        "update_latency_median_ms": ms(statistics.median(latencies)),
        "update_latency_p95_ms": ms(statistics.quantiles(latencies, n=20)[-1]),
        "threads_before": threads0,
        "threads_with_clients": threads1,
        "threads_per_client": round((threads1 - threads0) / args.clients, 2),
        "threads_after_drop": threads2,
        "rss_per_client_kib": round((rss1 - rss0) / args.clients / 1024, 1),
        "rss_before_mib": round(rss0 / 2**20, 1),
        "rss_with_clients_mib": round(rss1 / 2**20, 1),
        "rss_after_drop_mib": round(rss2 / 2**20, 1),
    }


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Expired(Exception):
    pass


def attempt(call: Any, seconds: float) -> tuple[str, float]:
    """(outcome, seconds) of a synchronous client call, cut off by SIGALRM after `seconds`:
    the client checks for signals about once a second while it blocks."""

    def expire(signum: int, frame: Any) -> None:
        raise Expired

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.perf_counter()
    try:
        call()
        outcome = "returned"
    except Expired:
        outcome = f"blocked (GIL held) until interrupted by SIGALRM after {seconds:.0f} s"
    except Exception as e:
        outcome = f"raised {type(e).__name__}: {e}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return outcome, time.perf_counter() - started


async def unreachable(args: argparse.Namespace, meter: LagMeter, auth: bool) -> dict[str, Any]:
    """A client of a port nobody listens on: does anything raise, or does it wait forever?"""
    url = f"http://127.0.0.1:{closed_port()}"
    wait = args.closed_port_wait
    meter.reset()
    client = convex.ConvexClient(url)
    if auth:
        client.set_auth("any-token")
    result: dict[str, Any] = {"url": url, "set_auth_first": auth}
    subs: list[convex.QuerySubscription] = []
    for label, path in (("subscribe", PENDING), ("second_subscribe", PENDING + "X")):
        outcome, took = attempt(lambda p=path: subs.append(client.subscribe(p, {})), wait)
        result[label] = f"{outcome} ({took:.2f} s)"
        await asyncio.sleep(0.05)
        result[f"max_loop_lag_{label}_ms"] = ms(meter.reset())
    if subs:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(wait):
                value = await anext(subs[0])
            outcome = f"value {value!r}"
        except TimeoutError:
            outcome = "no value, no error"
        except Exception as e:
            outcome = f"raised {type(e).__name__}: {e}"
        result["async_iteration"] = f"{outcome} after {time.perf_counter() - started:.1f} s"
        result["max_loop_lag_async_iteration_ms"] = ms(meter.reset())
    result["threads"] = usage()[0]
    return result  # the client is dropped with this frame


async def main(args: argparse.Namespace) -> None:
    meter = LagMeter()
    with DevServer(Path(tempfile.mkdtemp(prefix="bench-sync-"))) as server:
        result = {"subscribers": await subscribers(args, server, meter)}
    result["unreachable"] = await unreachable(args, meter, auth=False)
    result["unreachable_with_auth"] = await unreachable(args, meter, auth=True)
    meter.stop()
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for section, figures in result.items():
        print(f"{section}:")
        for key, value in figures.items():
            print(f"  {key:34} {value}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--updates", type=int, default=20, help="signals sent to the subscribers")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between signals")
    parser.add_argument("--closed-port-wait", type=float, default=20.0)
    parser.add_argument("--json", action="store_true")
    asyncio.run(main(parser.parse_args()))
