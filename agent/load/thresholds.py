"""Pass/fail criteria on a run's summary, as k6 users write them: `connected.p95<2000`,
`success_rate>=99`, `freeze_ratio<0.01`, `mos.p5>3.5`.

An expression is `metric[.stat] op number`, op one of < <= > >= ==. The metric is a join phase
(`phases_ms`), a media figure (`media`), `success_rate`, a QoE figure (`qoe`), or the backend's:
`backend.NAME` a function's call latency in ms (its path or last name: `createWebRTCSession`),
`backend.push_delay_ms`, `backend.errors` and `backend.calls` (all functions). The stat is a key
of that metric's distribution (p50, p95, p99, max, count; mos has p5 and p50). A name that is none
of these is refused when parsing, like k6 refuses a threshold on an unknown metric. A metric the
run did not produce (no video, no samples) fails with value None and the reason: a threshold that
cannot be checked must not pass.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from agent.load.backend import find
from agent.load.records import PHASES
from signaling.functions import FUNCTIONS

MEDIA = ("bitrate", "packetLoss", "latency", "jitter")
DISTRIBUTIONS = (*PHASES, *MEDIA, "mos", "e2e_latency_ms", "concealed_ratio")
"""Metrics that need a stat: `connected.p95`, `mos.p5`."""
SCALARS = ("success_rate", "ok", "failed", "bots", "freeze_count", "freeze_ratio", "fps_ratio")
STAT = re.compile(r"p\d{1,2}|count|max")
SECTIONS = ("phases_ms", "media", "qoe")
"""Where a metric name is looked up, after the summary's top level."""
KNOWN = (*SCALARS, *DISTRIBUTIONS)
BACKEND_SCALARS = ("errors", "calls")
BACKEND_FUNCTIONS = {*FUNCTIONS, *(f.name for f in FUNCTIONS.values())}
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "<": operator.lt,
    ">": operator.gt,
}
_MISSING = object()
_SYNTAX = re.compile(
    r"\s*(?P<metric>backend\.[\w/]+?|[A-Za-z_][A-Za-z0-9_]*)(?:\.(?P<stat>p\(\d+\)|[A-Za-z0-9_]+))?"
    r"\s*(?P<op><=|>=|==|<|>)\s*(?P<limit>\S+)\s*"
)


@dataclass(frozen=True)
class Threshold:
    expression: str
    metric: str
    stat: str | None
    op: str
    limit: float

    def check(self, summary: dict[str, Any]) -> dict[str, Any]:
        """{"expression", "value", "ok"}, and "reason" when the value is missing."""
        value, reason = resolve(summary, self.metric, self.stat)
        if value is None:
            return {"expression": self.expression, "value": None, "ok": False, "reason": reason}
        ok = OPERATORS[self.op](value, self.limit)
        return {"expression": self.expression, "value": value, "ok": ok}


def parse(text: str) -> Threshold:
    """A Threshold, or ValueError saying what is wrong with `text`."""
    match = _SYNTAX.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not metric[.stat] op number (op: < <= > >= ==)")
    metric, stat, op = match["metric"], match["stat"], match["op"]
    _known(text, metric)
    if stat is not None and stat.startswith("p("):  # k6's p(95)
        stat = f"p{stat[2:-1]}"
    scalar = metric in SCALARS or metric.removeprefix("backend.") in BACKEND_SCALARS
    if (stat is None) != scalar:
        need = "takes no stat" if scalar else "needs a stat, e.g. .p95"
        raise ValueError(f"{text!r}: {metric} {need}")
    if stat is not None and not STAT.fullmatch(stat):
        raise ValueError(f"{text!r}: {stat!r} is not a stat (p5 .. p99, count, max)")
    try:
        limit = float(match["limit"])
    except ValueError:
        raise ValueError(f"{text!r}: {match['limit']!r} is not a number") from None
    if not math.isfinite(limit):
        raise ValueError(f"{text!r}: the limit must be a finite number")
    return Threshold(text.strip(), metric, stat, op, limit)


def _known(text: str, metric: str) -> None:
    if not metric.startswith("backend."):
        if metric not in KNOWN:
            raise ValueError(f"{text!r}: unknown metric {metric!r} (known: {', '.join(KNOWN)})")
        return
    name = metric.removeprefix("backend.")
    if name not in (*BACKEND_SCALARS, "push_delay_ms", *BACKEND_FUNCTIONS):
        raise ValueError(
            f"{text!r}: {name!r} is no Connvo function (nor errors, calls, push_delay_ms)"
        )


def resolve(summary: dict[str, Any], metric: str, stat: str | None) -> tuple[float | None, str]:
    """The metric's value in the summary, or None and why it has none."""
    node = _find(summary, metric)
    if node is _MISSING:
        return None, f"{metric} is not in this run's summary"
    if node is None:
        return None, f"{metric} has no value in this run"
    if stat is None:
        if isinstance(node, dict):
            return None, f"{metric} is a distribution: name a stat ({', '.join(node) or 'none'})"
        return _number(node, metric)
    if not isinstance(node, dict):
        return None, f"{metric} is a single number: drop .{stat}"
    if stat not in node:
        if node.get("count") == 0:
            return None, f"{metric} has no samples in this run"
        return None, f"{metric} has no {stat} (it has {', '.join(node) or 'nothing'})"
    return _number(node[stat], f"{metric}.{stat}")


def apply(summary: dict[str, Any], thresholds: Iterable[Threshold]) -> list[dict[str, Any]]:
    """Checks every threshold and stores the results in `summary["thresholds"]`."""
    summary["thresholds"] = [t.check(summary) for t in thresholds]
    return summary["thresholds"]


def _find(summary: dict[str, Any], metric: str) -> Any:
    """The metric's node: the top level's, else the first section's that has it; _MISSING."""
    if metric.startswith("backend."):
        return _backend(summary.get("backend") or {}, metric.removeprefix("backend."))
    if metric in summary and not isinstance(summary[metric], dict):
        return summary[metric]
    for section in SECTIONS:
        found = summary.get(section) or {}
        if metric in found:
            return found[metric]
    return _MISSING


def _backend(backend: dict[str, Any], name: str) -> Any:
    """A backend figure; a function's is its calls' latency (ms), none when it was not called."""
    if name in backend:
        return backend[name]
    figures = find(backend.get("functions") or {}, name)
    return {"count": 0} if figures is None else figures["latency_ms"]


def _number(value: Any, name: str) -> tuple[float | None, str]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, f"{name} has no value in this run"
    return float(value), ""
