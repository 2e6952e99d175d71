"""Options that several commands take, defined once, and what they make: the meeting options
of join, record and transcribe and their JoinTarget, and a token from an option or the
environment."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from agent.cli import values
from agent.cli.errors import UsageError
from agent.pump import PollSettings

if TYPE_CHECKING:
    from agent.room import JoinTarget


def meeting_options(p: argparse.ArgumentParser) -> None:
    """Which meeting, as whom, how to reach it and for how long: what every command that joins
    one takes."""
    p.add_argument(
        "--url", type=values.url, required=True, help="the Connvo deployment (or dev backend) URL"
    )
    ca_file_option(p)
    p.add_argument(
        "--token", help="bearer token (default: $CONNVO_TOKEN, which keeps it out of `ps`)"
    )
    p.add_argument("--meeting", type=values.meeting_id, required=True, metavar="ID")
    p.add_argument(
        "--duration", type=values.seconds(), metavar="S", help="leave cleanly after S seconds"
    )
    p.add_argument(
        "--ice-address",
        action="append",
        type=values.ice_address,
        metavar="ADDR",
        help="gather ICE candidates only from this local address (repeatable), e.g. 127.0.0.1",
    )
    p.add_argument("--ice-policy", choices=["all", "relay"], default="all")
    signal_options(p, PollSettings())


def ca_file_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ca-file",
        type=values.ca_file,
        metavar="PEM",
        help="CA bundle that verifies an https URL (default: $SSL_CERT_FILE, else certifi's)",
    )


def signal_options(p: argparse.ArgumentParser, poll: PollSettings) -> None:
    """--signals, and the --poll-* intervals (`poll`'s by default) that polling keeps."""
    p.add_argument(
        "--signals",
        choices=["push", "poll"],
        default="push",
        help="push (default): subscribe to signals over Convex's sync protocol where the"
        " deployment speaks it, else poll; poll: never open a socket",
    )
    for name, default, what in (
        ("fast", poll.fast, "signal poll interval while negotiating"),
        ("idle", poll.idle, "longest signal poll interval when stable"),
    ):
        p.add_argument(
            f"--poll-{name}",
            type=values.seconds(),
            default=default,
            metavar="S",
            help=f"{what} (default {default})",
        )


def target(args: argparse.Namespace) -> JoinTarget:
    """The JoinTarget of `meeting_options`."""
    from agent.ice import IceOptions
    from agent.room import JoinTarget, RoomSettings

    addresses = tuple(args.ice_address) if args.ice_address else None
    return JoinTarget(
        url=args.url,
        token=token(args, "--token", "CONNVO_TOKEN"),
        meeting_id=args.meeting,
        ice=IceOptions(addresses=addresses, policy=args.ice_policy),
        settings=RoomSettings(
            signals=args.signals, poll=PollSettings(args.poll_fast, args.poll_idle)
        ),
        ca_file=args.ca_file,
    )


def token(args: argparse.Namespace, option: str, variable: str) -> str:
    """The token of `option`, else of $variable; a UsageError that never shows it."""
    given = getattr(args, option.lstrip("-").replace("-", "_"))
    source = option if given is not None else f"${variable}"
    token = (given if given is not None else os.environ.get(variable, "")).strip()
    if not token:
        what = "is empty" if given is not None else "is needed"
        raise UsageError(f"a token {what}: give {option} or set ${variable}")
    if not values.token_shaped(token):
        raise UsageError(
            f"the token of {source} has a space or a character a header cannot carry (not shown)"
        )
    args.token_source = source  # for the error's wording, should the deployment refuse it
    return token
