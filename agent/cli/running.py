"""What the runners share: their options object filled from the command line, and asyncio."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")
D = TypeVar("D", bound="DataclassInstance")


def fill(kind: type[D], args: argparse.Namespace, **given: Any) -> D:
    """A `kind` (a dataclass) of `given` and of every option named as one of its fields, so that
    runners do not copy options one by one; an option left out (None) keeps the field's default."""
    names = {f.name for f in dataclasses.fields(kind)}
    taken = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return kind(**{**taken, **given})


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run with SIGTERM treated like Ctrl-C: the task is cancelled and leaves cleanly
    (exit code 143). A ConnvoError goes up to `errors.run`, which makes it one line."""

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await coro

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        raise SystemExit(143) from None
