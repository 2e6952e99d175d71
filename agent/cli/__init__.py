"""`connvo-agent ...`: one small function per subcommand.

A subcommand is a function that adds its parser to the subparsers and sets `run` to the
function that carries it out; list it in COMMANDS. Heavy imports stay inside the `run`
functions, so `connvo-agent token` does not pay for what `connvo-agent join` needs.

Every bad input is one line on stderr, `connvo-agent COMMAND: what is wrong`, and exit code 2,
never a traceback, never a token: argparse's `type=` checkers below turn a bad value into
"argument --OPTION: ..." before anything starts, what needs the whole command line (a token from
the environment) raises UsageError, and `main` words a ConnvoError from a run with the option it
comes from (`--url`, `--meeting`, `--token`). Exit code 3 stays "replaced by a newer session".
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from agent.pump import PollSettings

if TYPE_CHECKING:
    from agent.room import JoinTarget

Subparsers = Any  # argparse's _SubParsersAction, which is private


class UsageError(Exception):
    """A bad input seen only once the whole command line is parsed (a missing token): `main`
    prints `connvo-agent COMMAND: text` and exits 2. The text names the option, never a token."""


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, `connvo-agent join: argument --url: ...`, exit code
    2 (argparse prints its usage lines first; `--help` still shows them)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}\n")


Bad = argparse.ArgumentTypeError


def _shown(value: str) -> str:
    """A value for an error text: quoted, unless it may be a token typed in the wrong place:
    long (dev tokens have 172 characters, real ones more) and no path or URL."""
    if len(value) > 100 and "/" not in value:
        return f"a value of {len(value)} characters (not shown: a token?)"
    return repr(value)


def _url(value: str) -> str:
    """A deployment's URL, checked once for every command that takes --url: http or https, a
    host, a port in 1-65535, no user, query or fragment (the load bots' client drops them), and
    parseable by httpx too. Answered without a trailing slash."""
    import httpx

    try:
        parts = urlsplit(value)
        port = parts.port  # raises for a port that is not a number or is out of range
    except ValueError as e:  # "http://[::1", "http://h:99999", "http://h:abc"
        raise Bad(f"{_shown(value)} is not a URL: {e}") from None
    if parts.scheme not in ("http", "https") or not value.lower().startswith(parts.scheme + "://"):
        raise Bad(f"{_shown(value)} is not an http:// or https:// URL")
    host = parts.hostname or ""
    if not host:
        raise Bad(f"{_shown(value)} has no host")
    if not _is_host(host):
        raise Bad(f"{_shown(value)}: {_shown(host)} is not a host name or an IP address")
    if port == 0:
        raise Bad(f"{value!r}: port 0 cannot be connected to (1-65535)")
    if parts.username is not None or parts.password is not None:
        raise Bad(f"{parts.scheme}://...@{parts.netloc.rpartition('@')[2]}: no user in the URL")
    if parts.query or parts.fragment or value.endswith(("?", "#")):
        raise Bad(f"{_shown(value)}: a deployment URL has no ?query or #fragment")
    try:
        httpx.URL(value)
    except httpx.InvalidURL as e:
        raise Bad(f"{_shown(value)} is not a URL: {e}") from None
    return value.rstrip("/")


def _is_host(host: str) -> bool:
    if ":" in host:  # urlsplit answers an IPv6 literal without its brackets
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return False
        return True
    return all(c.isalnum() or c in ".-_" for c in host) and not host.startswith((".", "-"))


def _seconds(zero: bool = False, unit: str = "seconds") -> Callable[[str], float]:
    """A finite number of `unit` above 0 (or 0 too, with `zero`)."""
    least = "0 or more" if zero else "above 0"

    def seconds(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise Bad(f"{_shown(value)} is not a number of {unit}") from None
        if not math.isfinite(number) or number < 0 or (number == 0 and not zero):
            raise Bad(f"{value!r}: {unit} must be a finite number {least}")
        return number

    return seconds


def _count(least: int, most: int | None = None) -> Callable[[str], int]:
    """A whole number in [least, most]."""
    span = f"from {least} to {most}" if most is not None else f"{least} or more"

    def count(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise Bad(f"{_shown(value)} is not a whole number ({span})") from None
        if number < least or (most is not None and number > most):
            raise Bad(f"{value!r} is out of range: {span}")
        return number

    return count


def _percent(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise Bad(f"{_shown(value)} is not a percentage (0 to 100)") from None
    if not 0 <= number <= 100:  # also false for nan
        raise Bad(f"{value!r} is out of range: 0 to 100")
    return number


def _meeting_id(value: str) -> str:
    """A meeting's id as Convex writes ids: letters, digits, _ and -. Whether the meeting exists
    is the deployment's answer."""
    if (
        not value
        or len(value) > 128
        or not all(c.isascii() and (c.isalnum() or c in "_-") for c in value)
    ):
        raise Bad(f"{_shown(value)} is not a meeting id (letters, digits, _ and -)")
    return value


def _kinds(value: str) -> frozenset[str]:
    """--send's comma-separated media kinds."""
    kinds = frozenset(k.strip().lower() for k in value.split(",") if k.strip())
    unknown = kinds - {"audio", "video", "screen"}
    if unknown:
        raise Bad(f"{_shown(', '.join(sorted(unknown)))}: the kinds are audio, video and screen")
    return kinds


def _media_file(path: str) -> str:
    """A file av opens, with an audio or a video stream: what --play can send."""
    import av

    if not Path(path).is_file():
        why = "is not a file" if Path(path).exists() else "does not exist"
        raise Bad(f"{_shown(path)} {why}")
    try:
        with av.open(path) as container:
            media = bool(container.streams.audio or container.streams.video)
    except (av.FFmpegError, OSError) as e:
        raise Bad(f"cannot play {_shown(path)}: {e.strerror or e}") from None
    if not media:
        raise Bad(f"cannot play {_shown(path)}: it has no audio or video stream")
    return path


def _chat_text(text: str) -> str:
    from agent.chat import check_text
    from agent.errors import InvalidChat

    try:
        check_text(text)
    except InvalidChat as e:
        raise Bad(str(e)) from None
    return text


def _ice_address(value: str) -> str:
    """An IP address of this machine (one ICE can bind to)."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise Bad(f"{_shown(value)} is not an IP address") from None
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((value, 0))
    except OSError as e:
        raise Bad(f"{value!r} is not an address of this machine ({e.strerror or e})") from None
    return value


def _engine(name: str) -> str:
    from agent.workers.engines import engine_named

    try:
        engine_named(name)
    except ValueError as e:
        raise Bad(str(e)) from None
    return name


def _language(value: str) -> str:
    parts = value.split("-")
    if not (2 <= len(parts[0]) <= 3 and all(p.isascii() and p.isalnum() and p for p in parts)):
        raise Bad(f"{_shown(value)} is not a language tag like en or en-US")
    return value


def _video_size(value: str) -> tuple[int, int]:
    width, x, height = value.lower().partition("x")
    if not (x and width.isdigit() and height.isdigit()):
        raise Bad(f"{_shown(value)} is not a size WIDTHxHEIGHT such as 320x240")
    size = int(width), int(height)
    if not all(16 <= n <= 4096 and n % 2 == 0 for n in size):
        raise Bad(f"{value!r}: width and height must be even, from 16 to 4096")
    return size


def _ice_server(*schemes: str) -> Callable[[str], str]:
    def url(value: str) -> str:
        scheme, colon, rest = value.partition(":")
        if not colon or scheme.lower() not in schemes or not rest.lstrip("/").split("?")[0]:
            names = " or ".join(f"{s}:HOST[:PORT]" for s in schemes)
            raise Bad(f"{_shown(value)} is not a {names} URL")
        return value

    return url


def _writable_dir(path: str) -> Path:
    """A directory that is there or can be made: files go in it."""
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise Bad(f"{_shown(path)} is not a directory")
    _check_creatable(directory, path)
    return directory


def _writable_file(path: str) -> Path:
    file = Path(path)
    if file.exists() and not file.is_file():
        raise Bad(f"{_shown(path)} is not a file")
    _check_creatable(file.parent if not file.exists() else file, path)
    return file


def _check_creatable(path: Path, given: str) -> None:
    """`path` can be written, or made inside its nearest existing ancestor."""
    existing = path
    while not existing.exists():
        existing = existing.parent
    if existing != path and not existing.is_dir():
        raise Bad(f"{given!r} cannot be made: {str(existing)!r} is not a directory")
    if not os.access(existing, os.W_OK | (os.X_OK if existing.is_dir() else 0)):
        raise Bad(f"{given!r} cannot be written: permission denied on {str(existing)!r}")


def _token_file(path: str) -> tuple[str, ...]:
    """--tokens FILE: one token per line, read now; the texts never show a token."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise Bad(f"cannot read {_shown(path)}: {getattr(e, 'strerror', None) or e}") from None
    tokens = tuple(line.strip() for line in lines if line.strip())
    if not tokens:
        raise Bad(f"{_shown(path)} has no tokens (one per line)")
    for number, token in enumerate(tokens, 1):
        if not _token_shaped(token):
            raise Bad(
                f"{_shown(path)}: token {number} has a space or a character a header cannot carry"
            )
    return tokens


def _token_shaped(token: str) -> bool:
    """What an Authorization header can carry: visible ASCII, no spaces."""
    return all("!" <= c <= "~" for c in token)


def _token(args: argparse.Namespace, option: str, variable: str) -> str:
    """The token of `option`, else of $variable; a UsageError that never shows it."""
    given = getattr(args, option.lstrip("-").replace("-", "_"))
    source = option if given is not None else f"${variable}"
    token = (given if given is not None else os.environ.get(variable, "")).strip()
    if not token:
        what = "is empty" if given is not None else "is needed"
        raise UsageError(f"a token {what}: give {option} or set ${variable}")
    if not _token_shaped(token):
        raise UsageError(
            f"the token of {source} has a space or a character a header cannot carry (not shown)"
        )
    args.token_source = source  # for `_explain`, should the deployment refuse it
    return token


def _serve_command(sub: Subparsers) -> None:
    p = sub.add_parser(
        "serve", help="run the dev backend (a Connvo-compatible server) and its meeting page at /"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_count(0, 65535), default=8787, help="0 picks a free port")
    p.add_argument("--data", type=_writable_dir, help="state directory (default: a fresh temp dir)")
    p.add_argument(
        "--stun-url",
        action="append",
        type=_ice_server("stun", "stuns"),
        default=[],
        metavar="URL",
        help="an ICE STUN server for rooms (repeatable; default: none)",
    )
    p.add_argument("--turn-url", type=_ice_server("turn", "turns"), metavar="URL")
    p.add_argument("--turn-username", metavar="U")
    p.add_argument(
        "--turn-credential",
        metavar="C",
        default=os.environ.get("CONNVO_TURN_CREDENTIAL"),
        help="default: $CONNVO_TURN_CREDENTIAL",
    )
    p.add_argument(
        "--transcript-rate",
        type=_count(1),
        metavar="N",
        help="transcript chunks per user per minute (default: 50, as on Connvo)",
    )
    p.add_argument("--quiet", action="store_true", help="no access log")
    p.set_defaults(run=_serve)


def _serve(args: argparse.Namespace) -> int:
    from signaling.devserver import Settings, serve
    from signaling.devserver.settings import DEFAULT_TRANSCRIPT_RATE

    if args.turn_url and not (args.turn_username and args.turn_credential):
        raise UsageError("--turn-url needs --turn-username and --turn-credential")
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
    except OSError as e:  # the port is taken, the host is not ours, the data dir not writable
        raise UsageError(f"cannot serve on --host {args.host} --port {args.port}: {e}") from None
    return 0


def _token_command(sub: Subparsers) -> None:
    p = sub.add_parser("token", help="print a bearer token for a dev backend user")
    p.add_argument(
        "--data", type=_writable_dir, required=True, help="the dev backend's state directory"
    )
    p.add_argument("--user", type=_user_name, required=True, help="user name (provisioned if new)")
    p.add_argument(
        "--admin",
        action="store_true",
        help="org admin: the paid plan, which picks getstream for large rooms",
    )
    p.set_defaults(run=_mint)


def _user_name(value: str) -> str:
    if not value.strip() or not value.isprintable():
        raise Bad(f"{_shown(value)} is not a user name")
    return value


def _mint(args: argparse.Namespace) -> int:
    from signaling.devserver import mint_token

    print(mint_token(args.data, args.user, admin=args.admin))
    return 0


def _join_command(sub: Subparsers) -> None:
    p = sub.add_parser("join", help="join a meeting as one bot and print what happens")
    _meeting_options(p)
    media = p.add_mutually_exclusive_group()
    media.add_argument(
        "--send",
        type=_kinds,
        default=frozenset(),
        metavar="KINDS",
        help="synthetic media: audio,video,screen",
    )
    media.add_argument(
        "--play", type=_media_file, metavar="FILE", help="send any file av can read, looped"
    )
    p.add_argument("--chat", type=_chat_text, metavar="TEXT", help="say this once connected")
    p.add_argument("--echo", action="store_true", help="answer every chat message with its echo")
    p.add_argument("--duration", type=_seconds(), metavar="S", help="leave after S seconds")
    _ice_options(p)
    p.add_argument("--json", action="store_true", help="end with one JSON summary line")
    p.set_defaults(run=_join)


def _meeting_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url", type=_url, required=True, help="the Connvo deployment (or dev backend) URL"
    )
    _ca_option(p)
    p.add_argument(
        "--token", help="bearer token (default: $CONNVO_TOKEN, which keeps it out of `ps`)"
    )
    p.add_argument("--meeting", type=_meeting_id, required=True, metavar="ID")


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

    token = _token(args, "--token", "CONNVO_TOKEN")
    addresses = tuple(args.ice_address) if args.ice_address else None
    return JoinTarget(
        url=args.url,
        token=token,
        meeting_id=args.meeting,
        ice=IceOptions(addresses=addresses, policy=args.ice_policy),
        settings=RoomSettings(
            signals=args.signals, poll=PollSettings(args.poll_fast, args.poll_idle)
        ),
        ca_file=args.ca_file,
    )


def _impairment(text: str) -> Any:
    from agent.media.impair import Impairment

    try:
        return Impairment.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _threshold(text: str) -> Any:
    """--threshold's `metric[.stat] op number` (agent.load.thresholds)."""
    from agent.load.thresholds import parse

    try:
        return parse(text)
    except ValueError as e:
        if _shown(text) != repr(text):  # a token in the wrong place is never echoed
            raise Bad(f"{_shown(text)} is not metric[.stat] op number") from None
        raise Bad(str(e)) from None


def _signals_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--signals",
        choices=["push", "poll"],
        default="push",
        help="push (default): subscribe to signals over Convex's sync protocol where the"
        " deployment speaks it, else poll; poll: never open a socket",
    )


def _ice_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ice-address",
        action="append",
        type=_ice_address,
        metavar="ADDR",
        help="gather ICE candidates only from this local address (repeatable), e.g. 127.0.0.1",
    )
    p.add_argument("--ice-policy", choices=["all", "relay"], default="all")
    _signals_option(p)
    p.add_argument(
        "--poll-fast",
        type=_seconds(),
        default=PollSettings.fast,
        metavar="S",
        help=f"signal poll interval while negotiating (default {PollSettings.fast})",
    )
    p.add_argument(
        "--poll-idle",
        type=_seconds(),
        default=PollSettings.idle,
        metavar="S",
        help=f"longest signal poll interval when stable (default {PollSettings.idle})",
    )


def _join(args: argparse.Namespace) -> int:
    from agent.bot import BotOptions, run_bot

    options = BotOptions(
        target=_target(args),
        send=args.send,
        play=args.play,
        chat=args.chat,
        echo=args.echo,
        duration=args.duration,
        json=args.json,
    )
    return _run_async(run_bot(options))


def _demo_command(sub: Subparsers) -> None:
    p = sub.add_parser("demo", help="a meeting of bots on an embedded dev backend")
    p.add_argument("--participants", type=_count(2), default=3, metavar="N")
    p.add_argument("--duration", type=_seconds(), default=5.0, metavar="S")
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
    p.add_argument(
        "--out", required=True, type=_writable_dir, metavar="DIR", help="files + manifest.json"
    )
    p.add_argument("--duration", type=_seconds(), metavar="S", help="stop cleanly after S seconds")
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
    p.add_argument("--meetings", type=_count(1), default=1, metavar="M")
    p.add_argument(
        "--participants", type=_count(1), default=4, metavar="N", help="bots per meeting"
    )
    p.add_argument(
        "--duration", type=_seconds(zero=True), default=10.0, metavar="S", help="stay once joined"
    )
    p.add_argument(
        "--ramp",
        type=_seconds(unit="bots per second"),
        default=10.0,
        metavar="R",
        help="bots joining per second",
    )
    p.add_argument("--media", choices=["none", "audio", "video", "av"], default="none")
    p.add_argument("--video-size", type=_video_size, default=(320, 240), metavar="WxH")
    p.add_argument("--fps", type=_count(1, 60), default=15)
    p.add_argument("--no-chat", action="store_true", help="open no chat channel")
    p.add_argument("--join-timeout", type=_seconds(), default=30.0, metavar="S")
    p.add_argument(
        "--report", type=_writable_dir, metavar="DIR", help="write JSON, CSV and report.html"
    )
    p.add_argument("--min-success", type=_percent, default=100.0, metavar="PCT")
    p.add_argument(
        "--threshold",
        type=_threshold,
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
        "--workers", type=_count(0), metavar="K", help="processes (default: one per core)"
    )
    p.add_argument("--ray", metavar="ADDRESS", help="Ray cluster: auto, ray://HOST:PORT, local")
    p.add_argument("--url", type=_url, help="a real deployment (default: an embedded dev backend)")
    _ca_option(p)
    p.add_argument(
        "--host-token", help="with --url: the host's token (default: $CONNVO_HOST_TOKEN)"
    )
    p.add_argument(
        "--tokens", type=_token_file, metavar="FILE", help="with --url: a token per line"
    )
    _signals_option(p)
    p.add_argument("--poll-fast", type=_seconds(), default=0.25, metavar="S")
    p.add_argument("--poll-idle", type=_seconds(), default=2.0, metavar="S")
    p.add_argument(
        "--impair",
        type=_impairment,
        default=None,
        metavar="loss=PCT,delay=MS,jitter=MS",
        help="impair every packet the bots send (any subset), e.g. loss=5 or delay=200,jitter=30",
    )
    p.add_argument(
        "--metrics-port",
        type=_count(0, 65535),
        metavar="PORT",
        help="serve live Prometheus metrics at /metrics during the run (0 picks a free port)",
    )
    p.add_argument(
        "--metrics-host",
        type=_ice_address,
        metavar="ADDRESS",
        help="with --metrics-port: the address to listen on (default 127.0.0.1)",
    )
    p.set_defaults(run=_load)


def _load(args: argparse.Namespace) -> int:
    import json

    from agent.load.config import LoadConfig
    from agent.load.distributed import RayMissing
    from agent.load.live import MetricsUnavailable
    from agent.load.metrics import exit_code
    from agent.load.report import table, write
    from agent.load.runner import Target, run_load
    from agent.load.thresholds import apply

    config = LoadConfig(
        meetings=args.meetings,
        participants=args.participants,
        duration=args.duration,
        ramp=args.ramp,
        media=args.media,
        video_size=args.video_size,
        fps=args.fps,
        chat=not args.no_chat,
        join_timeout=args.join_timeout,
        signals=args.signals,
        poll_fast=args.poll_fast,
        poll_idle=args.poll_idle,
        **({"impair": args.impair} if args.impair else {}),
    )
    target = None
    if args.url:
        if not args.tokens:
            raise UsageError("--url needs --tokens FILE (a token per bot) and --host-token")
        if len(args.tokens) < config.bots:
            raise UsageError(
                f"--tokens: {config.bots} bots (--meetings {config.meetings}, --participants "
                f"{config.participants}) need {config.bots} tokens, the file has {len(args.tokens)}"
            )
        host_token = _token(args, "--host-token", "CONNVO_HOST_TOKEN")
        target = Target(args.url, host_token, args.tokens, args.ca_file)
    elif args.tokens or args.host_token or args.ca_file:
        raise UsageError("--tokens, --host-token and --ca-file go with --url (a real deployment)")
    if args.metrics_host and args.metrics_port is None:
        raise UsageError("--metrics-host goes with --metrics-port")
    try:
        result = run_load(
            config,
            target=target,
            workers=args.workers,
            ray=args.ray,
            metrics_port=args.metrics_port,
            metrics_host=args.metrics_host or "127.0.0.1",
        )
    except RayMissing as e:
        raise UsageError(str(e)) from None
    except MetricsUnavailable as e:
        raise UsageError(f"--metrics-port {args.metrics_port}: {e}") from None
    apply(result.summary, args.threshold)
    out = sys.stderr if args.json else sys.stdout
    print(table(result.summary, color=out.isatty()), file=out)
    if args.report:
        write(result, args.report)
        print(f"report: {args.report / 'report.html'}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.summary), flush=True)
    return exit_code(result.summary, args.min_success, args.allow_saturated)


def _transcribe_command(sub: Subparsers) -> None:
    p = sub.add_parser("transcribe", help="transcribe every participant of a meeting")
    _meeting_options(p)
    p.add_argument(
        "--engine",
        type=_engine,
        default="pocketsphinx",
        metavar="NAME",
        help="default pocketsphinx",
    )
    p.add_argument(
        "--language", type=_language, default="en", help="the language chunks are tagged with"
    )
    p.add_argument(
        "--spool",
        type=_writable_file,
        metavar="FILE",
        help="chunks not yet accepted (default: ~/.local/state/connvo-agent/transcripts-ID.jsonl)",
    )
    p.add_argument("--duration", type=_seconds(), metavar="S", help="stop cleanly after S seconds")
    p.add_argument("--quiet", action="store_true", help="do not print each chunk")
    _ice_options(p)
    p.set_defaults(run=_transcribe)


def _transcribe(args: argparse.Namespace) -> int:
    from agent.workers.transcriber import TranscriberOptions, run_transcriber

    options = TranscriberOptions(
        target=_target(args),
        engine=args.engine,
        language=args.language,
        spool=args.spool,
        duration=args.duration,
        quiet=args.quiet,
    )
    left = _run_async(run_transcriber(options))
    if left:  # kept safe, but not delivered: a run that says nothing would read as done
        print(
            f"connvo-agent transcribe: {left} chunks left in the spool for the next start",
            file=sys.stderr,
        )
    return 1 if left else 0


def _run_async(coro: Any) -> Any:
    """asyncio.run with SIGTERM treated like Ctrl-C: the task is cancelled and leaves cleanly.
    A ConnvoError goes up to `main`, which makes it one line."""
    import asyncio
    import signal

    async def main() -> Any:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await coro

    try:
        return asyncio.run(main())
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
    parser = _Parser(
        prog="connvo-agent", description="A headless WebRTC participant for Connvo meetings."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from signaling.errors import ConnvoError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        return _fail(args, _unrecognized(extra))
    try:
        return args.run(args)
    except UsageError as e:
        return _fail(args, str(e))
    except ConnvoError as e:
        return _fail(args, _explain(args, e), getattr(e, "exit_code", 2))
    except OSError as e:  # a file or socket of this machine, mid-run: a disk full, a lost mount
        return _fail(args, str(e), 1)
    except KeyboardInterrupt:
        return 130


def _fail(args: argparse.Namespace, text: str, code: int = 2) -> int:
    print(f"connvo-agent {args.command}: {text}", file=sys.stderr, flush=True)
    return code


def _unrecognized(extra: list[str]) -> str:
    """argparse would print them all, and a value there may be a token given without --token:
    only option names are shown."""
    names = [a.partition("=")[0] for a in extra if a.startswith("-") and len(a) > 1]
    if names:
        return f"unrecognized option {' '.join(names)}"
    return f"{len(extra)} value(s) that belong to no option (not shown: a missing option name?)"


def _explain(args: argparse.Namespace, error: Exception) -> str:
    """A ConnvoError's text with the option it comes from: the deployment of --url, the
    CA bundle of --ca-file or $SSL_CERT_FILE, the token, the meeting."""
    from agent.errors import AgentError, ChatTooLarge, Replaced
    from signaling.errors import ApplicationError, BadCABundle, TransportError, Unauthorized

    url, meeting = getattr(args, "url", None), getattr(args, "meeting", None)
    if isinstance(error, Replaced | ChatTooLarge):
        return str(error)
    if isinstance(error, BadCABundle):
        return f"{'--ca-file' if getattr(args, 'ca_file', None) else '$SSL_CERT_FILE'}: {error}"
    if isinstance(error, TransportError) and url:
        return f"--url {url}: {error.reason}"
    if isinstance(error, Unauthorized):
        source = getattr(args, "token_source", "--token")
        return f"the deployment refused the token of {source}: {error}"
    if isinstance(error, ApplicationError | AgentError) and meeting:
        return f"--meeting {meeting}: {error}"
    return str(error)
