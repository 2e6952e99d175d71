"""`connvo-agent demo`: bots meeting each other on an embedded dev backend, nothing to set up."""

from __future__ import annotations

import argparse
import json

from agent.cli import values
from agent.cli.running import run_async

HELP = "a meeting of bots on an embedded dev backend"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--participants", type=values.count(2), default=3, metavar="N")
    p.add_argument("--duration", type=values.seconds(), default=5.0, metavar="S")
    p.add_argument("--json", action="store_true", help="end with one JSON summary line")


def run(args: argparse.Namespace) -> int:
    from agent.demo import print_report, run_demo

    report = run_async(run_demo(args.participants, args.duration, quiet=args.json))
    if args.json:
        print(json.dumps(report.as_json()), flush=True)
    else:
        print_report(report)
    return 0 if report.ok else 1
