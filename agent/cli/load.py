"""`connvo-agent load`: many meetings of bots, on an embedded dev backend or a real deployment,
with per-phase latencies, a report, and an exit code that CI can gate on."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

from agent.cli import values
from agent.cli.errors import UsageError
from agent.cli.options import ca_file_option, signal_options, token
from agent.cli.running import fill
from agent.pump import PollSettings

if TYPE_CHECKING:
    from agent.load.config import LoadConfig
    from agent.load.runner import LoadResult, Target

HELP = "load test: many meetings of bots, per-phase latencies, report"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--meetings", type=values.count(1), default=1, metavar="M")
    p.add_argument(
        "--participants", type=values.count(1), default=4, metavar="N", help="bots per meeting"
    )
    p.add_argument(
        "--duration",
        type=values.seconds(zero=True),
        default=10.0,
        metavar="S",
        help="stay once joined",
    )
    p.add_argument(
        "--ramp",
        type=values.seconds(unit="bots per second"),
        default=10.0,
        metavar="R",
        help="bots joining per second",
    )
    p.add_argument(
        "--stage",
        dest="stages",
        type=values.stages,
        metavar="DURATION:TARGET[,...]",
        help="bots present follow each target linearly, e.g. 30s:100,2m:100,30s:0 (not --ramp)",
    )
    p.add_argument(
        "--churn",
        type=values.seconds(zero=True, unit="bots per minute"),
        metavar="PER_MIN",
        help="that many present bots a minute leave and rejoin at once",
    )
    p.add_argument("--media", choices=["none", "audio", "video", "av"], default="none")
    p.add_argument("--video-size", type=values.video_size, default=(320, 240), metavar="WxH")
    p.add_argument("--fps", type=values.count(1, 60), default=15)
    p.add_argument("--no-chat", dest="chat", action="store_false", help="open no chat channel")
    p.add_argument("--join-timeout", type=values.seconds(), default=30.0, metavar="S")
    p.add_argument(
        "--report", type=values.writable_dir, metavar="DIR", help="write JSON, CSV and report.html"
    )
    p.add_argument("--min-success", type=values.percent, default=100.0, metavar="PCT")
    p.add_argument(
        "--threshold",
        type=values.threshold,
        action="append",
        default=[],
        metavar="EXPR",
        help="fail the run unless EXPR holds, e.g. 'connected.p95<2000' (repeatable)",
    )
    p.add_argument(
        "--allow-saturated",
        action="store_true",
        help="exit 0 even when a worker of the load generator was saturated",
    )
    p.add_argument("--json", action="store_true", help="print the summary as the last line")
    p.add_argument(
        "--workers", type=values.count(0), metavar="K", help="processes (default: one per core)"
    )
    p.add_argument(
        "--ray", metavar="ADDRESS", help="Ray cluster: auto, HOST:6379, ray://HOST:10001, local"
    )
    p.add_argument(
        "--placement",
        choices=["pack", "spread"],
        help="pack (default): whole meetings per worker; spread: a meeting's bots over the"
        " workers of different nodes (of processes on one node)",
    )
    p.add_argument(
        "--ice-address",
        type=values.ice_choice,
        metavar="loopback|auto|ADDR[,ADDR]",
        help="where bots gather ICE candidates; auto: each node's own non-loopback addresses"
        " (default: loopback, auto when --url is another host or Ray has several nodes)",
    )
    p.add_argument(
        "--relay-share",
        type=values.percent,
        metavar="PCT",
        help="with --url: this share of bots connects only through the deployment's TURN server",
    )
    p.add_argument(
        "--url", type=values.url, help="a real deployment (default: an embedded dev backend)"
    )
    ca_file_option(p)
    p.add_argument(
        "--host-token", help="with --url: the host's token (default: $CONNVO_HOST_TOKEN)"
    )
    p.add_argument(
        "--tokens", type=values.token_file, metavar="FILE", help="with --url: a token per line"
    )
    signal_options(p, PollSettings(0.25, 2.0))  # slower than a lone bot's: see LoadConfig
    p.add_argument(
        "--impair",
        type=values.impairment,
        metavar="loss=PCT,delay=MS,jitter=MS",
        help="impair every packet the bots send (any subset), e.g. loss=5 or delay=200,jitter=30",
    )
    p.add_argument(
        "--metrics-port",
        type=values.count(0, 65535),
        metavar="PORT",
        help="serve live Prometheus metrics at /metrics during the run (0 picks a free port)",
    )
    p.add_argument(
        "--metrics-host",
        type=values.ice_address,
        metavar="ADDRESS",
        help="with --metrics-port: the address to listen on (default 127.0.0.1)",
    )


def run(args: argparse.Namespace) -> int:
    from agent.load.config import LoadConfig, relay_share
    from agent.load.distributed import ClusterUnusable, RayMissing
    from agent.load.live import MetricsUnavailable
    from agent.load.metrics import exit_code
    from agent.load.runner import run_load
    from agent.load.thresholds import apply

    config = fill(LoadConfig, args)
    if config.stages and config.placement == "spread":
        raise UsageError("--stage goes with --placement pack: stages keep whole meetings together")
    if config.stages and max(t for _, t in config.stages) > config.bots:
        top = max(t for _, t in config.stages)
        raise UsageError(
            f"--stage: a target of {top} is above --meetings x --participants ({config.bots})"
        )
    target = _deployment(args, config)
    if args.metrics_host and args.metrics_port is None:
        raise UsageError("--metrics-host goes with --metrics-port")
    if args.relay_share:
        if target is None:
            raise UsageError("--relay-share goes with --url: the embedded backend has no TURN")
        config = replace(config, relay_only_bots=relay_share(config.bots, args.relay_share))
    try:
        result = run_load(
            config,
            target=target,
            workers=args.workers,
            ray=args.ray,
            metrics_port=args.metrics_port,
            metrics_host=args.metrics_host or "127.0.0.1",
            ice=args.ice_address or "default",
        )
    except (RayMissing, ClusterUnusable) as e:
        raise UsageError(str(e)) from None
    except MetricsUnavailable as e:
        raise UsageError(f"--metrics-port {args.metrics_port}: {e}") from None
    apply(result.summary, args.threshold)
    _report(args, result)
    return exit_code(result.summary, args.min_success, args.allow_saturated)


def _deployment(args: argparse.Namespace, config: LoadConfig) -> Target | None:
    """The real deployment of --url, with a token for every bot; None: an embedded backend."""
    from agent.load.runner import Target

    if not args.url:
        if args.tokens or args.host_token or args.ca_file:
            raise UsageError(
                "--tokens, --host-token and --ca-file go with --url (a real deployment)"
            )
        return None
    if not args.tokens:
        raise UsageError("--url needs --tokens FILE (a token per bot) and --host-token")
    if len(args.tokens) < config.bots:
        raise UsageError(
            f"--tokens: {config.bots} bots (--meetings {config.meetings}, --participants "
            f"{config.participants}) need {config.bots} tokens, the file has {len(args.tokens)}"
        )
    host_token = token(args, "--host-token", "CONNVO_HOST_TOKEN")
    return Target(args.url, host_token, args.tokens, args.ca_file)


def _report(args: argparse.Namespace, result: LoadResult) -> None:
    """The table (on stderr when stdout is for --json), the files of --report, the JSON line."""
    from agent.load.report import table, write

    out = sys.stderr if args.json else sys.stdout
    print(table(result.summary, color=out.isatty()), file=out)
    if args.report:
        write(result, args.report)
        print(f"report: {args.report / 'report.html'}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.summary), flush=True)
