"""`connvo-agent ...`: one small function per subcommand.

A subcommand is a function that adds its parser to the subparsers and sets `run` to the
function that carries it out; list it in COMMANDS. Heavy imports stay inside the `run`
functions, so `connvo-agent token` does not pay for what `connvo-agent join` needs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.pump import PollSettings

if TYPE_CHECKING:
    from agent.room import JoinTarget

Subparsers = Any  # argparse's _SubParsersAction, which is private


def _serve_command(sub: Subparsers) -> None:
    p = sub.add_parser("serve", help="run the dev backend (a Connvo-compatible server)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8787, help="0 picks a free port")
    p.add_argument("--data", type=Path, help="state directory (default: a fresh temp dir)")
    p.add_argument(
        "--stun-url",
        action="append",
        default=[],
        metavar="URL",
        help="an ICE STUN server for rooms (repeatable; default: none)",
    )
    p.add_argument("--turn-url", metavar="URL")
    p.add_argument("--turn-username", metavar="U")
    p.add_argument(
        "--turn-credential",
        metavar="C",
        default=os.environ.get("CONNVO_TURN_CREDENTIAL"),
        help="default: $CONNVO_TURN_CREDENTIAL",
    )
    p.add_argument(
        "--transcript-rate",
        type=int,
        metavar="N",
        help="transcript chunks per user per minute (default: 50, as on Connvo)",
    )
    p.add_argument("--quiet", action="store_true", help="no access log")
    p.set_defaults(run=_serve)


def _serve(args: argparse.Namespace) -> int:
    from signaling.devserver import Settings, serve
    from signaling.devserver.settings import DEFAULT_TRANSCRIPT_RATE

    data = args.data or Path(tempfile.mkdtemp(prefix="connvo-dev-"))
    settings = Settings(
        data_dir=data.resolve(),
        host=args.host,
        port=args.port,
        stun_urls=tuple(args.stun_url),
        turn_url=args.turn_url,
        turn_username=args.turn_username,
        turn_credential=args.turn_credential,
        transcript_rate=args.transcript_rate or DEFAULT_TRANSCRIPT_RATE,
        access_log=not args.quiet,
    )
    try:
        serve(settings)
    except OSError as e:  # the port is taken, the data dir is not writable, ...
        print(f"connvo-agent serve: {e}", file=sys.stderr)
        return 1
    return 0


def _token_command(sub: Subparsers) -> None:
    p = sub.add_parser("token", help="print a bearer token for a dev backend user")
    p.add_argument("--data", type=Path, required=True, help="the dev backend's state directory")
    p.add_argument("--user", required=True, help="user name (provisioned if new)")
    p.add_argument(
        "--admin",
        action="store_true",
        help="org admin: the paid plan, which picks getstream for large rooms",
    )
    p.set_defaults(run=_token)


def _token(args: argparse.Namespace) -> int:
    from signaling.devserver import mint_token

    print(mint_token(args.data, args.user, admin=args.admin))
    return 0


def _join_command(sub: Subparsers) -> None:
    p = sub.add_parser("join", help="join a meeting as one bot and print what happens")
    _meeting_options(p)
    media = p.add_mutually_exclusive_group()
    media.add_argument(
        "--send", default="", metavar="KINDS", help="synthetic media: audio,video,screen"
    )
    media.add_argument("--play", metavar="FILE", help="send any file av can read, looped")
    p.add_argument("--chat", metavar="TEXT", help="say this once connected")
    p.add_argument("--echo", action="store_true", help="answer every chat message with its echo")
    p.add_argument("--duration", type=float, metavar="S", help="leave after S seconds")
    _ice_options(p)
    p.add_argument("--json", action="store_true", help="end with one JSON summary line")
    p.set_defaults(run=_join)


def _meeting_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True, help="the Connvo deployment (or dev backend) URL")
    _ca_option(p)
    p.add_argument(
        "--token",
        default=os.environ.get("CONNVO_TOKEN"),
        help="bearer token (default: $CONNVO_TOKEN, which keeps it out of `ps`)",
    )
    p.add_argument("--meeting", required=True, metavar="ID")


def _ca_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ca-file",
        type=_ca_file,
        metavar="PEM",
        help="CA bundle that verifies an https URL (default: $SSL_CERT_FILE, else certifi's)",
    )


def _ca_file(path: str) -> str:
    """A readable bundle of PEM certificates, or argparse's one-line error."""
    from signaling.client import tls_context
    from signaling.errors import BadCABundle

    try:
        tls_context(path)
    except BadCABundle as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return path


def _target(args: argparse.Namespace) -> JoinTarget:
    """The JoinTarget of the meeting, token, ICE and poll options."""
    from agent.ice import IceOptions
    from agent.room import JoinTarget, RoomSettings

    if not args.token:
        raise SystemExit(
            f"connvo-agent {args.command}: a token is needed (--token or $CONNVO_TOKEN)"
        )
    addresses = tuple(args.ice_address) if args.ice_address else None
    return JoinTarget(
        url=args.url,
        token=args.token,
        meeting_id=args.meeting,
        ice=IceOptions(addresses=addresses, policy=args.ice_policy),
        settings=RoomSettings(poll=PollSettings(args.poll_fast, args.poll_idle)),
        ca_file=args.ca_file,
    )


def _ice_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ice-address",
        action="append",
        metavar="ADDR",
        help="gather ICE candidates only from this local address (repeatable), e.g. 127.0.0.1",
    )
    p.add_argument("--ice-policy", choices=["all", "relay"], default="all")
    p.add_argument(
        "--poll-fast",
        type=float,
        default=PollSettings.fast,
        metavar="S",
        help=f"signal poll interval while negotiating (default {PollSettings.fast})",
    )
    p.add_argument(
        "--poll-idle",
        type=float,
        default=PollSettings.idle,
        metavar="S",
        help=f"longest signal poll interval when stable (default {PollSettings.idle})",
    )


def _join(args: argparse.Namespace) -> int:
    from agent.bot import BotOptions, run_bot

    options = BotOptions(
        target=_target(args),
        send=frozenset(k for k in args.send.split(",") if k),
        play=args.play,
        chat=args.chat,
        echo=args.echo,
        duration=args.duration,
        json=args.json,
    )
    return _run_async(run_bot(options))


def _demo_command(sub: Subparsers) -> None:
    p = sub.add_parser("demo", help="a meeting of bots on an embedded dev backend")
    p.add_argument("--participants", type=int, default=3, metavar="N")
    p.add_argument("--duration", type=float, default=5.0, metavar="S")
    p.add_argument("--json", action="store_true", help="end with one JSON summary line")
    p.set_defaults(run=_demo)


def _demo(args: argparse.Namespace) -> int:
    import json

    from agent.demo import print_report, run_demo

    report = _run_async(run_demo(args.participants, args.duration, quiet=args.json))
    if args.json:
        print(json.dumps(report.as_json()), flush=True)
    else:
        print_report(report)
    return 0 if report.ok else 1


def _record_command(sub: Subparsers) -> None:
    p = sub.add_parser("record", help="record every participant of a meeting to files")
    _meeting_options(p)
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="files + manifest.json")
    p.add_argument("--duration", type=float, metavar="S", help="stop cleanly after S seconds")
    p.add_argument("--mix", action="store_true", help="also write the meeting's mixed audio")
    _ice_options(p)
    p.set_defaults(run=_record)


def _record(args: argparse.Namespace) -> int:
    from agent.workers.recorder import RecordOptions, run_recorder

    options = RecordOptions(
        target=_target(args),
        out=args.out,
        mix=args.mix,
        duration=args.duration,
    )
    return _run_async(run_recorder(options))


def _load_command(sub: Subparsers) -> None:
    p = sub.add_parser("load", help="load test: many meetings of bots, per-phase latencies, report")
    p.add_argument("--meetings", type=int, default=1, metavar="M")
    p.add_argument("--participants", type=int, default=4, metavar="N", help="bots per meeting")
    p.add_argument("--duration", type=float, default=10.0, metavar="S", help="stay once joined")
    p.add_argument("--ramp", type=float, default=10.0, metavar="R", help="bots joining per second")
    p.add_argument("--media", choices=["none", "audio", "video", "av"], default="none")
    p.add_argument("--video-size", default="320x240", metavar="WxH")
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--no-chat", action="store_true", help="open no chat channel")
    p.add_argument("--join-timeout", type=float, default=30.0, metavar="S")
    p.add_argument("--report", type=Path, metavar="DIR", help="write JSON, CSV and report.html")
    p.add_argument("--min-success", type=float, default=100.0, metavar="PCT")
    p.add_argument("--json", action="store_true", help="print the summary as the last line")
    p.add_argument("--workers", type=int, metavar="K", help="processes (default: one per core)")
    p.add_argument("--ray", metavar="ADDRESS", help="Ray cluster: auto, ray://HOST:PORT, local")
    p.add_argument("--url", help="a real deployment (default: an embedded dev backend)")
    _ca_option(p)
    p.add_argument(
        "--host-token",
        default=os.environ.get("CONNVO_HOST_TOKEN"),
        help="with --url: the host's token (default: $CONNVO_HOST_TOKEN)",
    )
    p.add_argument("--tokens", type=Path, metavar="FILE", help="with --url: a token per line")
    p.add_argument("--poll-fast", type=float, default=0.25, metavar="S")
    p.add_argument("--poll-idle", type=float, default=2.0, metavar="S")
    p.set_defaults(run=_load)


def _load(args: argparse.Namespace) -> int:
    import json

    from agent.load.config import LoadConfig
    from agent.load.distributed import RayMissing
    from agent.load.metrics import exit_code
    from agent.load.report import table, write
    from agent.load.runner import Target, run_load
    from signaling.errors import ConnvoError

    width, _, height = args.video_size.partition("x")
    config = LoadConfig(
        meetings=args.meetings,
        participants=args.participants,
        duration=args.duration,
        ramp=args.ramp,
        media=args.media,
        video_size=(int(width), int(height)),
        fps=args.fps,
        chat=not args.no_chat,
        join_timeout=args.join_timeout,
        poll_fast=args.poll_fast,
        poll_idle=args.poll_idle,
    )
    target = None
    if args.url:
        if not args.host_token or not args.tokens:
            raise SystemExit("connvo-agent load: --url needs --host-token and --tokens FILE")
        tokens = tuple(t.strip() for t in args.tokens.read_text().splitlines() if t.strip())
        target = Target(args.url, args.host_token, tokens, args.ca_file)
    try:
        result = run_load(config, target=target, workers=args.workers, ray=args.ray)
    except (RayMissing, ConnvoError, ValueError) as e:
        print(f"connvo-agent load: {e}", file=sys.stderr)
        return 2
    print(table(result.summary), file=sys.stderr if args.json else sys.stdout)
    if args.report:
        write(result, args.report)
        print(f"report: {args.report / 'report.html'}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.summary), flush=True)
    return exit_code(result.summary, args.min_success)


def _transcribe_command(sub: Subparsers) -> None:
    p = sub.add_parser("transcribe", help="transcribe every participant of a meeting")
    _meeting_options(p)
    p.add_argument("--engine", default="pocketsphinx", metavar="NAME", help="default pocketsphinx")
    p.add_argument("--language", default="en", help="the language chunks are tagged with")
    p.add_argument(
        "--spool",
        type=Path,
        metavar="FILE",
        help="chunks not yet accepted (default: ~/.local/state/connvo-agent/transcripts-ID.jsonl)",
    )
    p.add_argument("--duration", type=float, metavar="S", help="stop cleanly after S seconds")
    p.add_argument("--quiet", action="store_true", help="do not print each chunk")
    _ice_options(p)
    p.set_defaults(run=_transcribe)


def _transcribe(args: argparse.Namespace) -> int:
    from agent.workers.engines import engine_named
    from agent.workers.transcriber import TranscriberOptions, run_transcriber

    try:
        engine_named(args.engine)
    except ValueError as e:
        raise SystemExit(f"connvo-agent transcribe: {e}") from None
    options = TranscriberOptions(
        target=_target(args),
        engine=args.engine,
        language=args.language,
        spool=args.spool,
        duration=args.duration,
        quiet=args.quiet,
    )
    left = _run_async(run_transcriber(options))
    if left:
        print(
            f"connvo-agent transcribe: {left} chunks left in the spool for the next start",
            file=sys.stderr,
        )
    return 0


def _run_async(coro: Any) -> Any:
    """asyncio.run with SIGTERM treated like Ctrl-C: the task is cancelled and leaves cleanly.
    Errors from Connvo become one line on stderr and exit code 2, never a traceback."""
    import asyncio
    import signal

    from signaling.errors import ConnvoError

    async def main() -> Any:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await coro

    try:
        return asyncio.run(main())
    except ConnvoError as e:
        print(f"connvo-agent: {e}", file=sys.stderr)
        raise SystemExit(getattr(e, "exit_code", 2)) from None
    except asyncio.CancelledError:
        raise SystemExit(143) from None


COMMANDS: list[Callable[[Subparsers], None]] = [
    _serve_command,
    _token_command,
    _join_command,
    _demo_command,
    _record_command,
    _load_command,
    _transcribe_command,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="connvo-agent", description="A headless WebRTC participant for Connvo meetings."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130
