"""`connvo-agent token`: a dev backend user's bearer token, for scripts and the other commands."""

from __future__ import annotations

import argparse

from agent.cli import values

HELP = "print a bearer token for a dev backend user"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", type=values.writable_dir, required=True, help="the dev backend's state directory"
    )
    p.add_argument(
        "--user", type=values.user_name, required=True, help="user name (provisioned if new)"
    )
    p.add_argument(
        "--admin",
        action="store_true",
        help="org admin: the paid plan, which picks getstream for large rooms",
    )


def run(args: argparse.Namespace) -> int:
    from signaling.devserver import mint_token

    print(mint_token(args.data, args.user, admin=args.admin))
    return 0
