"""One load worker: many bots in one event loop, sharing its HTTP pool and its encoded media.

The driver runs one worker per core (processes, or Ray actors); each gets whole meetings. A worker
counts its bots' progress for the live display, samples its own CPU and memory every second, and
measures its event loop's lag (agent.load.health): the generator's own health.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from agent.load import collector
from agent.load.backend import Call, CallLog
from agent.load.config import BotSpec, LoadConfig, MeetingPlan
from agent.load.health import LagSample, LoopLagMeter
from agent.load.http import LoadHTTP
from agent.load.loadbot import LoadBot, MeetingState
from agent.load.records import BotRecord, Usage, UsageMeter
from agent.media import counting, encoded

SAMPLE_EVERY = 1.0
CHURN_LEFT = 3.0
"""Seconds a bot must still have to stay to be churned: its rejoin must be worth counting."""


@dataclass
class WorkerResult:
    records: list[BotRecord] = field(default_factory=list)
    usage: list[Usage] = field(default_factory=list)
    worker: str = ""
    loop_lag: list[LagSample] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)


class Worker:
    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._bots: list[LoadBot] = []
        self._meter = UsageMeter(self.name)
        self._last: Usage | None = None
        self._reported: dict[int, set[str]] = {}
        self._qoe_reported: set[int] = set()
        self._lag = LoopLagMeter()
        self._calls = CallLog()
        for noisy in ("aiortc", "aioice", "agent.room", "agent.pump", "agent.peer"):
            logging.getLogger(noisy).setLevel(logging.ERROR)

    def progress(self) -> dict[str, Any]:
        """Joined (has a session), connected (ready), failed, done; CPU %, RSS MB, and the loop
        lag p50/p99 (ms) and `saturated` over the last seconds (LoopLagMeter.live) now; the
        function calls ended since the previous call."""
        records = [b.record for b in self._bots]
        last = self._last
        return {
            "bots": len(records),
            "phases": self._new_phases(),
            "qoe": self._new_qoe(),
            "calls": [(path, ms, error) for _, path, ms, error in self._calls.new()],
            "joined": sum("session_created" in r.phases for r in records),
            "connected": sum(r.ok for r in records),
            "failed": sum(r.failure_phase is not None for r in records),
            "done": sum(r.left_at is not None for r in records),
            "cpu_percent": last.cpu_percent if last else 0.0,
            "rss_mb": last.rss_mb if last else 0.0,
            **self._lag.live(),
            **_live_qoe(records),
        }

    async def run(self, config: LoadConfig, plans: list[MeetingPlan], t0: float) -> WorkerResult:
        """Every bot of `plans`, each starting at t0 + its offset (t0: epoch seconds)."""
        result = WorkerResult(worker=self.name, loop_lag=self._lag.samples, calls=self._calls.calls)
        encoded.IMPAIRMENT = config.impair  # every shared-packet sender of this process
        counting.MEASURE_QOE = config.qoe
        pools = {ca: LoadHTTP(ca) for ca in {plan.ca_file for plan in plans}}  # one, in practice
        meetings = [(plan, MeetingState(plan, t0), pools[plan.ca_file]) for plan in plans]
        users = [(spec, meeting, http) for plan, meeting, http in meetings for spec in plan.bots]
        samplers = [
            asyncio.create_task(self._sample(result.usage)),
            asyncio.create_task(self._lag.run()),
            asyncio.create_task(
                collector.freeze_joins(self._joining, self._last_join(t0, plans, config))
            ),
        ]
        if config.churn:
            share = config.churn * len(users) / config.bots
            samplers.append(asyncio.create_task(self._churn(share)))
        try:
            stays = await asyncio.gather(*(self._user(*user, config, t0) for user in users))
            result.records = [record for of in stays for record in of]
        finally:
            for sampler in samplers:
                sampler.cancel()
            await asyncio.gather(*samplers, return_exceptions=True)  # a sampler's error too
            collector.release()
            result.usage.append(self._meter.read())
            for pool in pools.values():
                await pool.aclose()
        return result

    async def _user(
        self, spec: BotSpec, meeting: MeetingState, http: LoadHTTP, config: LoadConfig, t0: float
    ) -> list[BotRecord]:
        """One user's stays, each a bot of its own (a new session); one churned away rejoins at
        once for the rest of its stay."""
        records: list[BotRecord] = []
        for stay in spec.schedule():
            while True:
                bot = LoadBot(
                    spec, meeting, config, self.name, http, self._calls, stay, len(records)
                )
                self._bots.append(bot)
                records.append(await bot.run(t0))
                if not bot.record.churned or bot.ends_at is None:
                    break
                stay = (time.time() - t0, bot.ends_at - t0)
        return records

    async def _churn(self, per_min: float) -> None:
        """Every 60 / per_min s, one staying bot (with a few seconds left) leaves to rejoin."""
        while True:
            await asyncio.sleep(60 / per_min)
            now = time.time()
            staying = [b for b in self._bots if b.staying and (b.ends_at or now) - now > CHURN_LEFT]
            if staying:
                random.choice(staying).churn()

    def _last_join(self, t0: float, plans: list[MeetingPlan], config: LoadConfig) -> float:
        """When the last bot's join times out at the latest (epoch seconds)."""
        joins = [a for plan in plans for spec in plan.bots for a, _ in spec.schedule()]
        return t0 + max(joins, default=0.0) + config.join_timeout + 5.0

    def _joining(self) -> bool:
        """A bot of this worker has yet to connect, fail or leave."""
        return any(
            not (r.ok or r.failure_phase or r.left_at) for r in (b.record for b in self._bots)
        )

    async def _sample(self, into: list[Usage]) -> None:
        while True:
            self._last = self._meter.read()
            into.append(self._last)
            await asyncio.sleep(SAMPLE_EVERY)

    def _new_qoe(self) -> list[dict[str, float | None]]:
        """The QoE of each bot that finished its stay since the previous call (BotRecord.qoe):
        the live metrics' QoE histograms, one observation per bot."""
        new = []
        for bot in self._bots:
            record = bot.record
            if record.qoe and record.bot not in self._qoe_reported:
                self._qoe_reported.add(record.bot)
                new.append(dict(record.qoe))
        return new

    def _new_phases(self) -> list[tuple[str, float]]:
        """(phase, ms from the join start) of each phase a bot reached since the previous call:
        the live metrics' histograms (agent.load.live). A few per bot over a whole run."""
        new = []
        for bot in self._bots:
            record = bot.record
            reported = self._reported.setdefault(record.bot, set())
            for phase, ms in record.phases.items():
                if phase not in reported:
                    reported.add(phase)
                    new.append((phase, ms))
        return new


def _live_qoe(records: list[BotRecord]) -> dict[str, float]:
    """The bots' latest QoE samples (BotRecord.qoe_timeline), for the live metrics: MOS p50 of
    the bots that hear audio, and their freezes so far."""
    latest = [r.qoe_timeline[-1] for r in records if r.qoe_timeline and r.left_at is None]
    moses = sorted(m for _, m, _ in latest if m is not None)
    live: dict[str, float] = {"freeze_count": sum(f for _, _, f in latest)} if latest else {}
    if moses:
        live["mos_p50"] = moses[(len(moses) - 1) // 2]
    return live
