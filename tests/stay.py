"""`python tests/stay.py join ...` is `connvo-agent join ...` whose stay the test can end: on
SIGUSR1 the bot leaves as when its --duration runs out (summary line, exit code and all).

For a test whose bot must stay for as long as something takes (an attack on a loaded machine),
rather than a fixed number of seconds that is either too short under load or wasted when idle:
start it with a --duration that is only a ceiling, and send SIGUSR1 when done."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the worktree's agent

import agent.bot
from agent.cli import main


class _Asyncio:
    """asyncio as agent.bot sees it: its stay's timeout is rescheduled to now on SIGUSR1."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    def timeout(delay: float | None) -> asyncio.Timeout:
        timeout = asyncio.timeout(delay)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, lambda: timeout.reschedule(loop.time()))
        return timeout


agent.bot.asyncio = _Asyncio()  # type: ignore[assignment]
sys.exit(main())
