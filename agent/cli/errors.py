"""How a command fails: one line on stderr, `connvo-agent COMMAND: what is wrong`, never a
traceback, never a token.

A bad value is argparse's line (`Parser`, with the `type=` checkers of agent.cli.values); what
needs the whole command line (a token from the environment) raises UsageError; a ConnvoError
from the run is worded with the option it comes from (`--url`, `--meeting`, `--token`). The
exit code is 2, or a ConnvoError's own (3: replaced by a newer session); 1 for a file or socket
of this machine failing mid-run, 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from agent.errors import AgentError, ChatTooLarge, EngineUnavailable, Replaced
from signaling.errors import (
    ApplicationError,
    BadCABundle,
    ConnvoError,
    TransportError,
    Unauthorized,
)


class UsageError(Exception):
    """A bad input seen only once the whole command line is parsed (a missing token): `run`
    prints `connvo-agent COMMAND: text` and answers 2. The text names the option, never a token."""


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, `connvo-agent join: argument --url: ...`, exit code
    2 (argparse prints its usage lines first; `--help` still shows them)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}\n")


def run(args: argparse.Namespace, extra: list[str]) -> int:
    """The command's exit code, every failure of it worded as one line."""
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
    url, meeting = getattr(args, "url", None), getattr(args, "meeting", None)
    if isinstance(error, Replaced | ChatTooLarge | EngineUnavailable):
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
