"""What a load run is asked to do, and the plan the driver hands to its workers.

Everything here is a frozen dataclass of plain values: it is pickled to worker processes and Ray
actors as it is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from agent.load.stages import stays
from agent.media.impair import Impairment

MEDIA = {"none": (), "audio": ("audio",), "video": ("video",), "av": ("audio", "video")}


@dataclass(frozen=True)
class LoadConfig:
    meetings: int = 1
    participants: int = 4
    duration: float = 10.0
    """Seconds each bot stays once it has joined."""
    ramp: float = 10.0
    """Bots started per second, over the whole run."""
    media: str = "none"
    video_size: tuple[int, int] = (320, 240)
    fps: int = 15
    chat: bool = True
    join_timeout: float = 30.0
    """A bot not connected to every peer (with chat open and media flowing) by then has failed."""
    shared_media: bool = True
    """Encode once per process and fan packets out; False encodes per sender (naive bots)."""
    decode: bool = False
    """Decode remote media; False counts it (see agent.media.counting)."""
    quality_interval: float = 2.0
    signals: Literal["push", "poll"] = "push"
    """Each bot keeps one sync socket where the deployment speaks the protocol (RoomSettings)."""
    poll_fast: float = 0.25
    """Slower than a lone bot (0.05): hundreds of bots polling fast would be the backend's load."""
    poll_idle: float = 2.0
    discovery_interval: float = 5.0
    ice_addresses: tuple[str, ...] | None = ("127.0.0.1",)
    qoe: bool = True
    """Measure what participants experience in the counting receivers (off: to see its cost)."""
    impair: Impairment = field(default_factory=Impairment)
    """Loss, delay and jitter on every packet the bots send (`--impair`)."""
    relay_only_bots: frozenset[int] = field(default_factory=frozenset)
    """Bots (global indices) given a relay-only ICE policy: through the deployment's TURN server
    (`--relay-share`), or an injected ICE failure where the room has none."""
    placement: Literal["pack", "spread"] = "pack"
    """pack: whole meetings per worker; spread: a meeting's bots over workers of different nodes
    (agent.load.placement)."""
    stages: tuple[tuple[float, int], ...] = ()
    """(seconds, target) each: bots present follow the target line (agent.load.stages), instead
    of joining at `ramp` and staying `duration`."""
    churn: float = 0.0
    """Present bots a minute that leave and rejoin at once (a new session, the same user)."""

    @property
    def kinds(self) -> tuple[str, ...]:
        return MEDIA[self.media]

    @property
    def bots(self) -> int:
        return self.meetings * self.participants

    @property
    def staged_s(self) -> float:
        """The stages' length in seconds (0 without)."""
        return sum(seconds for seconds, _ in self.stages)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["relay_only_bots"] = sorted(self.relay_only_bots)
        return data


@dataclass(frozen=True)
class BotSpec:
    index: int
    meeting: int
    token: str = field(repr=False)
    start_offset: float
    """Seconds after the run's start time at which this bot joins."""
    stays: tuple[tuple[float, float | None], ...] | None = None
    """(join, leave) seconds after the start, each a new session; leave None: `duration` after
    connected. None: one, from `start_offset` (no stages); () never present."""

    def schedule(self) -> tuple[tuple[float, float | None], ...]:
        return self.stays if self.stays is not None else ((self.start_offset, None),)


@dataclass(frozen=True)
class MeetingPlan:
    index: int
    meeting_id: str
    url: str
    bots: tuple[BotSpec, ...]
    ca_file: str | None = None
    """The CA bundle for an https URL (None: $SSL_CERT_FILE, else certifi's)."""
    size: int | None = None
    """Bots in the whole meeting, when this plan holds only some of them (placement spread)."""

    @property
    def participants(self) -> int:
        return self.size or len(self.bots)


def relay_share(bots: int, percent: float) -> frozenset[int]:
    """`percent` of the bots, evenly spaced (25 of 8: bots 3 and 7), for relay-only ICE."""
    share = percent / 100
    return frozenset(i for i in range(bots) if int((i + 1) * share) > int(i * share))


def plan_meetings(
    config: LoadConfig,
    url: str,
    meeting_ids: list[str],
    tokens: list[str],
    ca_file: str | None = None,
) -> list[MeetingPlan]:
    """Meeting by meeting, bot by bot at `ramp` per second (or as the stages say), so meetings
    fill one after another."""
    n = config.participants
    return [
        MeetingPlan(
            index=m,
            meeting_id=meeting_id,
            url=url,
            bots=tuple(_spec(config, m * n + i, m, tokens[m * n + i]) for i in range(n)),
            ca_file=ca_file,
        )
        for m, meeting_id in enumerate(meeting_ids)
    ]


def _spec(config: LoadConfig, index: int, meeting: int, token: str) -> BotSpec:
    if not config.stages:
        return BotSpec(index, meeting, token, index / config.ramp)
    mine = stays(config.stages, index)
    return BotSpec(index, meeting, token, mine[0][0] if mine else 0.0, mine)


def split(plans: list[MeetingPlan], workers: int) -> list[list[MeetingPlan]]:
    """Whole meetings per worker (a meeting's bots wait on each other), round robin."""
    shares: list[list[MeetingPlan]] = [[] for _ in range(max(1, min(workers, len(plans))))]
    for i, plan in enumerate(plans):
        shares[i % len(shares)].append(plan)
    return shares
