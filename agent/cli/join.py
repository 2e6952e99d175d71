"""`connvo-agent join`: one bot in a meeting, printing what happens."""

from __future__ import annotations

import argparse

from agent.cli import values
from agent.cli.options import meeting_options, target
from agent.cli.running import fill, run_async

HELP = "join a meeting as one bot and print what happens"


def arguments(p: argparse.ArgumentParser) -> None:
    meeting_options(p)
    media = p.add_mutually_exclusive_group()
    media.add_argument(
        "--send",
        type=values.kinds,
        default=frozenset(),
        metavar="KINDS",
        help="synthetic media: audio,video,screen",
    )
    media.add_argument(
        "--play", type=values.media_file, metavar="FILE", help="send any file av can read, looped"
    )
    p.add_argument("--chat", type=values.chat_text, metavar="TEXT", help="say this once connected")
    p.add_argument("--echo", action="store_true", help="answer every chat message with its echo")
    p.add_argument("--json", action="store_true", help="end with one JSON summary line")


def run(args: argparse.Namespace) -> int:
    from agent.bot import BotOptions, run_bot

    return run_async(run_bot(fill(BotOptions, args, target=target(args))))
