"""What each option accepts: argparse `type=` checkers, so that a bad value is argparse's one
line, `connvo-agent COMMAND: argument --OPTION: ...`, before anything starts.

A text never echoes what may be a token typed in the wrong place (`shown`). Checkers that need a
heavy module (httpx, av, aiortc) import it when called, so `connvo-agent --help` does not.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from signaling import ids

if TYPE_CHECKING:
    from agent.load.thresholds import Threshold
    from agent.media.impair import Impairment

Bad = argparse.ArgumentTypeError


def shown(value: str) -> str:
    """A value for an error text: quoted, unless it may be a token typed in the wrong place:
    long (dev tokens have 172 characters, real ones more) and no path or URL."""
    if len(value) > 100 and "/" not in value:
        return f"a value of {len(value)} characters (not shown: a token?)"
    return repr(value)


def _passes(check: Callable[[str], object], value: str, *errors: type[Exception]) -> str:
    """`value`, once another module's `check` of it passed; its `errors` in that module's words."""
    try:
        check(value)
    except errors as e:
        raise Bad(str(e)) from None
    return value


def url(value: str) -> str:
    """A deployment's URL, checked once for every command that takes --url: http or https, a
    host, a port in 1-65535, no user, query or fragment (the load bots' client drops them), and
    parseable by httpx too. Answered without a trailing slash."""
    import httpx

    try:
        parts = urlsplit(value)
        port = parts.port  # raises for a port that is not a number or is out of range
    except ValueError as e:  # "http://[::1", "http://h:99999", "http://h:abc"
        raise Bad(f"{shown(value)} is not a URL: {e}") from None
    if parts.scheme not in ("http", "https") or not value.lower().startswith(parts.scheme + "://"):
        raise Bad(f"{shown(value)} is not an http:// or https:// URL")
    host = parts.hostname or ""
    if not host:
        raise Bad(f"{shown(value)} has no host")
    if not _is_host(host):
        raise Bad(f"{shown(value)}: {shown(host)} is not a host name or an IP address")
    if port == 0:
        raise Bad(f"{value!r}: port 0 cannot be connected to (1-65535)")
    if parts.username is not None or parts.password is not None:
        raise Bad(f"{parts.scheme}://...@{parts.netloc.rpartition('@')[2]}: no user in the URL")
    if parts.query or parts.fragment or value.endswith(("?", "#")):
        raise Bad(f"{shown(value)}: a deployment URL has no ?query or #fragment")
    try:
        httpx.URL(value)
    except httpx.InvalidURL as e:
        raise Bad(f"{shown(value)} is not a URL: {e}") from None
    return value.rstrip("/")


def _is_host(host: str) -> bool:
    if ":" in host:  # urlsplit answers an IPv6 literal without its brackets
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return False
        return True
    return all(c.isalnum() or c in ".-_" for c in host) and not host.startswith((".", "-"))


def ca_file(path: str) -> str:
    """A readable bundle of PEM certificates."""
    from signaling.client import tls_context
    from signaling.errors import BadCABundle

    return _passes(tls_context, path, BadCABundle)


def seconds(zero: bool = False, unit: str = "seconds") -> Callable[[str], float]:
    """A finite number of `unit` above 0 (or 0 too, with `zero`)."""
    least = "0 or more" if zero else "above 0"

    def seconds(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise Bad(f"{shown(value)} is not a number of {unit}") from None
        if not math.isfinite(number) or number < 0 or (number == 0 and not zero):
            raise Bad(f"{value!r}: {unit} must be a finite number {least}")
        return number

    return seconds


def count(least: int, most: int | None = None) -> Callable[[str], int]:
    """A whole number in [least, most]."""
    span = f"from {least} to {most}" if most is not None else f"{least} or more"

    def count(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise Bad(f"{shown(value)} is not a whole number ({span})") from None
        if number < least or (most is not None and number > most):
            raise Bad(f"{value!r} is out of range: {span}")
        return number

    return count


def percent(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise Bad(f"{shown(value)} is not a percentage (0 to 100)") from None
    if not 0 <= number <= 100:  # also false for nan
        raise Bad(f"{value!r} is out of range: 0 to 100")
    return number


def meeting_id(value: str) -> str:
    """Ids are opaque (signaling.ids): only what cannot be an id at all is refused here; whether
    the meeting exists, and whether its id is of the right shape, is the deployment's answer."""
    if (why := ids.problem(value)) is not None:
        raise Bad(f"{shown(value)} is not a meeting id: it {why}")
    if value.startswith("eyJ") and len(value) > 100:  # a JWT's header: a token in the wrong place
        raise Bad(f"{shown(value)} is a token, not a meeting id")
    return value


def user_name(value: str) -> str:
    if not value.strip() or not value.isprintable():
        raise Bad(f"{shown(value)} is not a user name")
    return value


def kinds(value: str) -> frozenset[str]:
    """--send's comma-separated media kinds."""
    kinds = frozenset(k.strip().lower() for k in value.split(",") if k.strip())
    unknown = kinds - {"audio", "video", "screen"}
    if unknown:
        raise Bad(f"{shown(', '.join(sorted(unknown)))}: the kinds are audio, video and screen")
    return kinds


def media_file(path: str) -> str:
    """A file av opens, with an audio or a video stream: what --play can send."""
    import av

    if not Path(path).is_file():
        why = "is not a file" if Path(path).exists() else "does not exist"
        raise Bad(f"{shown(path)} {why}")
    try:
        with av.open(path) as container:
            media = bool(container.streams.audio or container.streams.video)
    except (av.FFmpegError, OSError) as e:
        raise Bad(f"cannot play {shown(path)}: {e.strerror or e}") from None
    if not media:
        raise Bad(f"cannot play {shown(path)}: it has no audio or video stream")
    return path


def chat_text(text: str) -> str:
    from agent.chat import check_text
    from agent.errors import InvalidChat

    return _passes(check_text, text, InvalidChat)


def ice_address(value: str) -> str:
    """An IP address of this machine (one ICE can bind to)."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise Bad(f"{shown(value)} is not an IP address") from None
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((value, 0))
    except OSError as e:
        raise Bad(f"{value!r} is not an address of this machine ({e.strerror or e})") from None
    return value


def ice_choice(value: str) -> str | tuple[str, ...]:
    """`loopback`, `auto`, or IP addresses separated by commas: for a load, whose bots may run
    on other machines, so the addresses are not checked against this one."""
    if value in ("loopback", "auto"):
        return value
    addresses = tuple(a.strip() for a in value.split(","))
    for address in addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise Bad(f"{shown(address)} is not loopback, auto or an IP address") from None
    return addresses


def ice_server(*schemes: str) -> Callable[[str], str]:
    def url(value: str) -> str:
        scheme, colon, rest = value.partition(":")
        if not colon or scheme.lower() not in schemes or not rest.lstrip("/").split("?")[0]:
            names = " or ".join(f"{s}:HOST[:PORT]" for s in schemes)
            raise Bad(f"{shown(value)} is not a {names} URL")
        return value

    return url


def engine(name: str) -> str:
    from agent.workers.engines import engine_factory

    return _passes(engine_factory, name, ValueError)


def language(value: str) -> str:
    """A tag like en or en-US, or "auto" (for an engine that detects it)."""
    if value == "auto":
        return value
    parts = value.split("-")
    if not (2 <= len(parts[0]) <= 3 and all(p.isascii() and p.isalnum() and p for p in parts)):
        raise Bad(f"{shown(value)} is not a language tag like en or en-US")
    return value


def video_size(value: str) -> tuple[int, int]:
    width, x, height = value.lower().partition("x")
    if not (x and width.isdigit() and height.isdigit()):
        raise Bad(f"{shown(value)} is not a size WIDTHxHEIGHT such as 320x240")
    size = int(width), int(height)
    if not all(16 <= n <= 4096 and n % 2 == 0 for n in size):
        raise Bad(f"{value!r}: width and height must be even, from 16 to 4096")
    return size


def impairment(text: str) -> Impairment:
    from agent.media.impair import Impairment

    try:
        return Impairment.parse(text)
    except ValueError as e:
        raise Bad(str(e)) from None


def threshold(text: str) -> Threshold:
    """--threshold's `metric[.stat] op number` (agent.load.thresholds)."""
    from agent.load.thresholds import parse

    try:
        return parse(text)
    except ValueError as e:
        if shown(text) != repr(text):  # a token in the wrong place is never echoed
            raise Bad(f"{shown(text)} is not metric[.stat] op number") from None
        raise Bad(str(e)) from None


def stages(text: str) -> tuple[tuple[float, int], ...]:
    """--stage's `DURATION:TARGET[,...]` (agent.load.stages)."""
    from agent.load.stages import parse

    try:
        return parse(text)
    except ValueError as e:
        raise Bad(str(e)) from None


def writable_dir(path: str) -> Path:
    """A directory that is there or can be made: files go in it."""
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise Bad(f"{shown(path)} is not a directory")
    _check_creatable(directory, path)
    return directory


def writable_file(path: str) -> Path:
    file = Path(path)
    if file.exists() and not file.is_file():
        raise Bad(f"{shown(path)} is not a file")
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


def token_file(path: str) -> tuple[str, ...]:
    """--tokens FILE: one token per line, read now; the texts never show a token."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise Bad(f"cannot read {shown(path)}: {getattr(e, 'strerror', None) or e}") from None
    tokens = tuple(line.strip() for line in lines if line.strip())
    if not tokens:
        raise Bad(f"{shown(path)} has no tokens (one per line)")
    for number, token in enumerate(tokens, 1):
        if not token_shaped(token):
            raise Bad(
                f"{shown(path)}: token {number} has a space or a character a header cannot carry"
            )
    return tokens


def token_shaped(token: str) -> bool:
    """What an Authorization header can carry: visible ASCII, no spaces."""
    return all("!" <= c <= "~" for c in token)
