"""Where bots run and which addresses their media takes: the placement of a meeting's bots on
workers (`pack` or `spread`), the ICE addresses that suit the run, and the per-node figures.

`pack` keeps a meeting's bots in one worker (its media stays in one process and on loopback);
`spread` deals them round robin over workers whose nodes alternate, so every meeting of a cluster
has media between hosts, which is what a real meeting has.
"""

from __future__ import annotations

import ipaddress
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal
from urllib.parse import urlsplit

from agent.load.config import MeetingPlan, split
from agent.load.records import BotRecord

Placement = Literal["pack", "spread"]
LOOPBACK = ("127.0.0.1",)
IceChoice = tuple[str, ...] | Literal["loopback", "auto", "default"]
"""Addresses to gather on, `loopback`, `auto` (each node's own non-loopback addresses), or
`default`: loopback unless the run spans hosts, then auto."""


def place(plans: list[MeetingPlan], workers: int, placement: Placement) -> list[list[MeetingPlan]]:
    """Each worker's share. `spread` gives bot i to worker i % workers, so the workers should be
    ordered with their nodes alternating (see `interleave`); a worker holds the part of a meeting
    it runs, and the meeting's size."""
    if placement == "pack":
        return split(plans, workers)
    count = max(1, workers)
    shares: list[list[MeetingPlan]] = [[] for _ in range(count)]
    for plan in plans:
        parts = defaultdict(list)
        for bot in plan.bots:
            parts[bot.index % count].append(bot)
        for worker, bots in parts.items():
            shares[worker].append(replace(plan, bots=tuple(bots), size=len(plan.bots)))
    return [share for share in shares if share]


def interleave(slots: dict[str, int]) -> list[str]:
    """Node names, one per worker slot, taking a slot of each node in turn: {a: 2, b: 1} gives
    [a, b, a], so neighbouring workers sit on different nodes while both have slots."""
    left = dict(slots)
    order = []
    while any(left.values()):
        for node in slots:
            if left[node]:
                order.append(node)
                left[node] -= 1
    return order


def node_of(worker: str) -> str:
    """The node (host name) of a worker named `host:pid` (agent.load.worker)."""
    return worker.rsplit(":", 1)[0]


def nodes(records: Sequence[BotRecord]) -> dict[str, Any]:
    """Per node, its bots, how many succeeded and its failures (a node that cannot reach the
    backend shows here by name); and how many meetings had bots on more than one node."""
    per_node: dict[str, dict[str, Any]] = {}
    hosts = defaultdict(set)
    for r in records:
        node = per_node.setdefault(node_of(r.worker), {"bots": 0, "ok": 0, "failures": Counter()})
        node["bots"] += 1
        node["ok"] += r.ok
        if not r.ok:
            node["failures"][f"{r.failure_phase}:{r.failure_code}"] += 1
        hosts[r.meeting].add(node_of(r.worker))
    for node in per_node.values():
        node["failures"] = dict(node["failures"])
    spanning = sum(len(h) > 1 for h in hosts.values())
    return {"nodes": per_node, "meetings": len(hosts), "meetings_spanning_nodes": spanning}


def lines(summary: dict[str, Any]) -> list[str]:
    """The per-node part of the table (nothing for a run on one node)."""
    placement = summary.get("placement")
    if not placement or len(placement["nodes"]) < 2:
        return []
    out = [
        "",
        f"nodes {len(placement['nodes'])}: {placement['meetings_spanning_nodes']} of "
        f"{placement['meetings']} meetings spanned nodes",
    ]
    for name, node in sorted(placement["nodes"].items()):
        failures = ", ".join(f"{k} {v}" for k, v in sorted(node["failures"].items()))
        out.append(
            f"  {name}: {node['bots']} bots, ok {node['ok']}"
            + (f", failed: {failures}" if failures else "")
        )
    return out


def spans_hosts(url: str) -> bool:
    """Whether a backend URL names another host than this one's loopback (names are not looked
    up: `localhost` and loopback addresses are this machine, anything else is not)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def ice_addresses(
    choice: IceChoice, default: tuple[str, ...] | None, spread: str | None
) -> tuple[tuple[str, ...] | None, str | None]:
    """The addresses bots gather on (None: every non-loopback one of their node, which aioice
    reads), and a note when the default was changed: `spread` says why the run spans hosts."""
    if choice == "loopback":
        return LOOPBACK, None
    if choice == "auto":
        return None, None
    if choice != "default":
        return choice, None
    if spread is None:
        return default, None
    note = (
        f"ICE: each bot gathers on its own node's addresses (auto), as {spread}; "
        "--ice-address loopback keeps media on loopback"
    )
    return None, note
