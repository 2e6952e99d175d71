"""`connvo-agent serve`: the dev backend, a Connvo-compatible server with its meeting page."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from agent.cli import values
from agent.cli.errors import UsageError
from agent.cli.running import fill

HELP = "run the dev backend (a Connvo-compatible server) and its meeting page at /"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=values.count(0, 65535), default=8787, help="0 picks a free port")
    p.add_argument(
        "--data", type=values.writable_dir, help="state directory (default: a fresh temp dir)"
    )
    p.add_argument(
        "--stun-url",
        action="append",
        type=values.ice_server("stun", "stuns"),
        default=[],
        metavar="URL",
        help="an ICE STUN server for rooms (repeatable; default: none)",
    )
    p.add_argument("--turn-url", type=values.ice_server("turn", "turns"), metavar="URL")
    p.add_argument("--turn-username", metavar="U")
    p.add_argument(
        "--turn-credential",
        metavar="C",
        default=os.environ.get("CONNVO_TURN_CREDENTIAL"),
        help="default: $CONNVO_TURN_CREDENTIAL",
    )
    p.add_argument(
        "--transcript-rate",
        type=values.count(1),
        metavar="N",
        help="transcript chunks per user per minute (default: 50, as on Connvo)",
    )
    p.add_argument("--quiet", dest="access_log", action="store_false", help="no access log")
    p.add_argument(
        "--ids",
        choices=("convex", "convex-test"),
        help="the shape of new ids: a deployment's (default), or convex-test's '10004;meetings'",
    )


def run(args: argparse.Namespace) -> int:
    from signaling.devserver import Settings, serve

    if args.turn_url and not (args.turn_username and args.turn_credential):
        raise UsageError("--turn-url needs --turn-username and --turn-credential")
    data = args.data or Path(tempfile.mkdtemp(prefix="connvo-dev-"))
    settings = fill(Settings, args, data_dir=data.resolve(), stun_urls=tuple(args.stun_url))
    try:
        serve(settings)
    except OSError as e:  # the port is taken, the host is not ours, the data dir not writable
        raise UsageError(f"cannot serve on --host {args.host} --port {args.port}: {e}") from None
    return 0
