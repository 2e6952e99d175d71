"""Runs `connvo-agent` argument lists, each in a process of its own forked from one that has
imported the CLI once: a start of `python -m agent` spends 0.3 to 0.9 s importing, and a test of
fifty bad inputs paid that fifty times. A forked process runs what `python -m agent ARGS` runs
once its imports are done, `sys.exit(agent.cli.main())` with ARGS as its arguments, and ends as
Python would end it (the exit code, a SystemExit's message or a traceback on stderr), but
without tearing the interpreter down (0.35 s with these modules loaded, here for nothing).

    results = run_forked([["join", "--url", ...], ...], env)   # [(code, out, err), ...]

The other tests start the CLI the usual way."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

PRELOADED = (
    "agent.cli",
    "agent.ice",
    "agent.bot",
    "agent.room",
    "agent.load.runner",
    "agent.workers.recorder",
    "agent.workers.transcriber",
)
"""What the commands import when they check their options; whichever of them exist."""


def run_forked(
    arg_lists: Sequence[Sequence[str]], env: Mapping[str, str], timeout: float = 120
) -> list[tuple[int, str, str]]:
    done = subprocess.run(
        [sys.executable, __file__],
        input=json.dumps([list(a) for a in arg_lists]),
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the forking process failed:\n{done.stderr}")
    return [(code, out, err) for code, out, err in json.loads(done.stdout)]


def _serve() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the worktree's agent
    for name in PRELOADED:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    from agent.cli import main

    results = []
    for args in json.loads(sys.stdin.read()):
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            sys.stdout.flush()
            sys.stderr.flush()
            if os.fork() == 0:  # the child: `python -m agent ARGS` from here on
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.argv = ["connvo-agent", *args]
                _exit(main)
            _, status = os.wait()
            out.seek(0)
            err.seek(0)
            texts = [f.read().decode(errors="replace") for f in (out, err)]
            results.append([os.waitstatus_to_exitcode(status), *texts])
    print(json.dumps(results))


def _exit(main: Callable[[], int]) -> NoReturn:
    """`sys.exit(main())` as the interpreter ends it, then out at once."""
    try:
        code = main()
    except SystemExit as e:
        code = e.code
    except BaseException:
        traceback.print_exc()
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _serve()
