"""The live progress line on stderr: one line redrawn in place on a terminal, a line every few
seconds otherwise (a CI log must not fill with carriage returns)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

LOG_EVERY = 5.0


class ProgressDisplay:
    def __init__(self, total: int, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self._tty = self.stream.isatty()
        self._logged = 0.0
        self._started = time.monotonic()
        self._drawn = False

    def update(self, workers: dict[str, dict[str, float]]) -> None:
        """`workers`: each worker's latest `Worker.progress()`."""
        if self.quiet:
            return
        now = time.monotonic()
        if not self._tty and now - self._logged < LOG_EVERY:
            return
        self._logged = now
        line = self.line(workers, now - self._started)
        if self._tty:
            self.stream.write(f"\r{line}\x1b[K")
            self._drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def line(self, workers: dict[str, dict[str, float]], elapsed: float) -> str:
        def total(key: str) -> float:
            return sum(p.get(key, 0) for p in workers.values())

        return (
            f"[{elapsed:5.0f}s] bots {self.total}: joined {total('joined'):.0f}"
            f"  connected {total('connected'):.0f}  failed {total('failed'):.0f}"
            f"  left {total('done'):.0f}  |  load generator: {len(workers)} workers,"
            f" cpu {total('cpu_percent'):.0f}%  rss {total('rss_mb'):.0f} MB  loop lag p99 "
            f"{max((p.get('loop_lag_p99_ms', 0) for p in workers.values()), default=0):.0f} ms"
        )

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
