"""What a load run leaves behind: the summary table in the terminal, and in a report directory
the raw per-bot records (bots.json, bots.csv, usage.csv), summary.json, and report.html: one
self-contained page, its plots inlined as a base64 PNG."""

from __future__ import annotations

import base64
import csv
import html
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from agent.load import placement
from agent.load.backend import evidence, short
from agent.load.health import saturated_workers
from agent.load.records import PHASES, BotRecord

if TYPE_CHECKING:
    from agent.load.runner import LoadResult


RED, RESET = "\x1b[31m", "\x1b[0m"


def table(summary: dict, color: bool = False) -> str:
    """The summary for a terminal; `color`: saturation and failed thresholds in ANSI red."""
    saturated = summary.get("generator", {}).get("saturated", False)
    lines = [
        f"bots {summary['bots']}: ok {summary['ok']}, failed {summary['failed']}, "
        f"success {summary['success_rate']:.1f}%"
        + (_red(", load generator SATURATED (below)", color) if saturated else ""),
        "",
        f"{'phase (ms)':18} {'count':>6} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}",
    ]
    for phase in PHASES:
        d = summary["phases_ms"].get(phase, {"count": 0})
        if d["count"]:
            cells = " ".join(f"{d[k]:>8.0f}" for k in ("p50", "p95", "p99", "max"))
            lines.append(f"{phase:18} {d['count']:>6} {cells}")
    media = summary["media"]
    if media["bitrate"]["count"]:
        lines.append("")
        lines.append(
            f"media per peer (p50/p95): bitrate {media['bitrate']['p50'] / 1000:.0f}/"
            f"{media['bitrate']['p95'] / 1000:.0f} kbit/s, loss {media['packetLoss']['p50']:.1f}/"
            f"{media['packetLoss']['p95']:.1f} %, RTT {media['latency']['p50']:.0f}/"
            f"{media['latency']['p95']:.0f} ms, jitter {media['jitter']['p50']:.0f}/"
            f"{media['jitter']['p95']:.0f} ms"
        )
    lines += _experience(summary.get("qoe") or {})
    load = summary["load_generator"]
    if load:
        lines.append(
            f"load generator: {load['workers']} workers, cpu mean {load['cpu_percent_mean']:.0f}%"
            f" max {load['cpu_percent_max']:.0f}%, rss max {load['rss_mb_max']:.0f} MB"
        )
    lines += placement.lines(summary)
    for failure, count in sorted(summary["failures"].items()):
        lines.append(f"failed: {count} x {failure}")
    lines += _functions(summary.get("backend") or {})
    lines += _stages(summary.get("stages") or [])
    churn = summary.get("churn") or {}
    if churn.get("per_min"):
        lines.append(
            f"churn {churn['per_min']:g}/min: {churn['left_and_rejoined']} left and rejoined"
        )
    return "\n".join(lines + _health(summary, color) + _thresholds(summary, color))


def _functions(backend: dict) -> list[str]:
    """A line per function the bots called (calls, latency, errors by code), and one for the
    pushed signals' delay."""
    functions = backend.get("functions") or {}
    if not functions:
        return []
    lines = ["", f"{'function (ms)':28} {'calls':>6} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}"]
    for path, f in functions.items():
        errors = ", ".join(f"{n} {code}" for code, n in sorted(f["errors"].items()))
        line = f"{short(path):28} {f['calls']:>6} {_cells(f['latency_ms'])}"
        lines.append(line + (f"  errors: {errors}" if errors else ""))
    push = backend.get("push_delay_ms") or {}
    if push.get("count"):
        lines.append(f"{'pushed signals (delay)':28} {push['count']:>6} {_cells(push)}")
    return lines


def _stages(stages: list[dict]) -> list[str]:
    """A line per stage: its target and the bots present at its end and at most."""
    if not stages:
        return []
    lines = ["", f"{'stage':18} {'target':>6} {'present at end':>15} {'most present':>13}"]
    for i, stage in enumerate(stages, 1):
        name = f"{i}: {stage['duration_s']:g} s"
        lines.append(
            f"{name:18} {stage['target']:>6} {stage['present_end']:>15} {stage['present_max']:>13}"
        )
    return lines


def _cells(d: dict) -> str:
    return " ".join(f"{d[k]:>7.0f}" for k in ("p50", "p95", "p99", "max"))


def _health(summary: dict, color: bool) -> list[str]:
    """A line per worker of the generator, and the verdict when one was saturated."""
    generator = summary.get("generator") or {}
    lines = []
    for name, w in generator.get("workers", {}).items():
        span = f"over {w['steady_s']:.0f} s steady" if w["steady_s"] else "over the whole run"
        line = (
            f"generator {name}: loop lag p50 {w['loop_lag_ms']['p50']:.0f} ms, p99 "
            f"{w['loop_lag_ms']['p99']:.0f} ms, cpu mean {w['cpu_percent_mean']:.0f}% {span}: "
            + ("SATURATED" if w["saturated"] else "healthy")
        )
        lines.append(_red(line, color) if w["saturated"] else line)
    if generator.get("saturated"):
        verdict = "load generator SATURATED: these figures measure the load tester, not the backend"
        lines += [_red(verdict, color), f"rule: {generator['rule']}"]
    elif summary.get("bottleneck") == "backend":
        lines.append(_red("bottleneck: the BACKEND, the generator stayed healthy", color))
        lines += [_red(f"  {line}", color) for line in evidence(summary)]
        lines.append(f"rule: {summary['bottleneck_evidence']['rule']}")
    return lines


def _thresholds(summary: dict, color: bool) -> list[str]:
    results = summary.get("thresholds") or []
    if not results:
        return []
    failed = sum(not t["ok"] for t in results)
    lines = [f"thresholds: {len(results) - failed} passed, {failed} failed"]
    for t in results:
        line = f"  {'ok' if t['ok'] else 'FAIL':4}  {t['expression']:28} {_value(t)}"
        lines.append(line if t["ok"] else _red(line, color))
    return lines


def _value(threshold: dict) -> str:
    """A threshold's value, or null and why there is none."""
    if threshold["value"] is None:
        return f"null ({threshold.get('reason', 'no value')})"
    return f"{threshold['value']:g}"


def _red(text: str, color: bool) -> str:
    return f"{RED}{text}{RESET}" if color else text


def write(result: LoadResult, directory: Path) -> list[Path]:
    """Writes every file of the report; answers their paths."""
    from agent.load.plots import figure

    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        name: directory / name
        for name in ("summary.json", "bots.json", "bots.csv", "usage.csv", "report.html")
    }
    paths["summary.json"].write_text(json.dumps(result.summary, indent=2))
    paths["bots.json"].write_text(json.dumps([asdict(r) for r in result.records], indent=1))
    _csv(paths["bots.csv"], [r.as_row() for r in result.records])
    _csv(paths["usage.csv"], [asdict(u) for u in result.usage])
    stages = result.summary["config"].get("stages") or ()
    png = figure(result.records, result.usage, result.started_at, result.calls, stages)
    paths["report.html"].write_text(page(result.summary, result.records, png))
    return list(paths.values())


def _csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as out:
        if not rows:
            return
        columns = list(dict.fromkeys(k for row in rows for k in row))  # every row's, in order
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _banners(summary: dict) -> str:
    """Red boxes above everything: a saturated generator (each worker and its figures), a backend
    that was the bottleneck (its struggling functions), the failed thresholds. None may be missed
    by someone who only glances at the page."""
    boxes = []
    workers = saturated_workers(summary)
    if workers:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in workers)
        rule = html.escape(summary["generator"]["rule"])
        boxes.append(
            f'<div class="alarm"><strong>Load generator saturated</strong>: these figures measure '
            f"the load tester, not the backend.<ul>{items}</ul>Rule: {rule}.</div>"
        )
    if summary.get("bottleneck") == "backend":
        items = "".join(f"<li>{html.escape(line)}</li>" for line in evidence(summary))
        rule = html.escape(summary["bottleneck_evidence"]["rule"])
        boxes.append(
            f'<div class="alarm"><strong>The backend was the bottleneck</strong>: its functions '
            f"slowed down or failed while the load generator stayed healthy.<ul>{items}</ul>"
            f"Rule: {rule}.</div>"
        )
    failed = [t for t in summary.get("thresholds") or [] if not t["ok"]]
    if failed:
        items = "".join(
            f"<li>{html.escape(t['expression'])}: {html.escape(_value(t))}</li>" for t in failed
        )
        boxes.append(f'<div class="alarm"><strong>Thresholds failed</strong><ul>{items}</ul></div>')
    return "\n".join(boxes)


def page(summary: dict, records: list[BotRecord], png: bytes) -> str:
    image = base64.b64encode(png).decode()
    failed = [r for r in records if not r.ok]
    rows = "".join(
        f"<tr><td>{r.bot}</td><td>{r.meeting}</td><td>{html.escape(r.failure_phase or '')}</td>"
        f"<td>{html.escape(r.failure_code or '')}</td>"
        f"<td>{html.escape(r.failure_message or '')}</td></tr>"
        for r in failed
    )
    failures = (
        f"<h2>Failures</h2><table><tr><th>bot</th><th>meeting</th><th>phase</th><th>code</th>"
        f"<th>message</th></tr>{rows}</table>"
        if failed
        else ""
    )
    config = html.escape(json.dumps(summary["config"]))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>connvo-agent load report</title>
<style>body{{font-family:sans-serif;margin:2em}}pre{{background:#f4f4f4;padding:1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px}}
.alarm{{background:#fde8e8;border:2px solid #c00;color:#900;padding:.5em 1em;margin:1em 0}}
</style></head>
<body><h1>connvo-agent load report</h1>
{_banners(summary)}
<pre>{html.escape(table(summary))}</pre>
<img alt="plots" src="data:image/png;base64,{image}">
{failures}
<h2>Configuration</h2><pre>{config}</pre>
</body></html>
"""


def _experience(qoe: dict) -> list[str]:
    """What participants experienced, in two lines (agent.media.qoe), when media was received."""
    streams = qoe.get("streams") or {}
    lines = []
    if streams.get("audio"):
        mos, hidden = qoe["mos"], qoe["concealed_ratio"]
        lines.append(
            f"audio ({streams['audio']} streams): MOS p5/p50 {_num(mos['p5'], 2)}/"
            f"{_num(mos['p50'], 2)}, concealed p50/p95 {_pct(hidden['p50'])}/{_pct(hidden['p95'])}"
        )
    if streams.get("video"):
        lines.append(
            f"video ({streams['video']} streams): {qoe['freeze_count']} freezes,"
            f" frozen {_pct(qoe['freeze_ratio'])} of the time, frames {_pct(qoe['fps_ratio'])}"
            " of those sent"
        )
    if lines:
        e2e = qoe["e2e_latency_ms"]
        lines.append(f"end-to-end delay p50/p95: {_num(e2e['p50'], 0)}/{_num(e2e['p95'], 0)} ms")
    return lines


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
