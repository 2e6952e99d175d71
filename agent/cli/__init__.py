"""`connvo-agent ...`: one module per command, each with its `HELP`, its `arguments(parser)`
and its `run(args)` (the exit code).

What the commands share lives beside them: the `type=` checkers of every option (values), the
options several commands take (options), the runners' helpers (running), and how a failure
becomes one line and an exit code (errors). A `run` imports what it needs itself, so
`connvo-agent token` does not pay for what `connvo-agent join` needs. Nothing outside agent/cli
imports it: the CLI is the top layer.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.cli import demo, errors, join, load, record, serve, token, transcribe

COMMANDS = (serve, token, join, demo, record, load, transcribe)
"""In the order `--help` lists them; a command is named as its module."""


def build_parser() -> errors.Parser:
    parser = errors.Parser(
        prog="connvo-agent", description="A headless WebRTC participant for Connvo meetings."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.__name__.rpartition(".")[2], help=command.HELP)
        command.arguments(p)
        p.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    return errors.run(args, extra)
