"""The demo meeting: the dev backend on a free loopback port, one meeting set up through the API,
N bots sending a tone and a test pattern and chatting to each other, and what each one saw."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from agent.events import ChatMessage, ParticipantJoined, TrackReceived
from agent.ice import IceOptions
from agent.media.sources import Outgoing
from agent.media.tracks import RemoteTrack
from agent.room import JoinRequest, Room, RoomSettings
from signaling.api import ConnvoAPI
from signaling.devserver.process import DevServer


@dataclass
class BotReport:
    userId: str
    peers_connected: int = 0
    chat_sent: int = 0
    chat_received: int = 0
    audio_frames_received: int = 0
    video_frames_received: int = 0
    join_ms: float | None = None


@dataclass
class DemoReport:
    ok: bool
    meetingId: str
    participants: list[BotReport] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)
    """userId -> the bot's name, for people reading the table."""

    def as_json(self) -> dict:
        data = asdict(self)
        del data["names"]
        return data


@dataclass
class _Bot:
    name: str
    room: Room
    say: Callable[..., None]
    names: dict[str, str]
    peers: set[str] = field(default_factory=set)
    chat_from: set[str] = field(default_factory=set)
    tracks: list[RemoteTrack] = field(default_factory=list)

    async def watch(self) -> None:
        async for event in self.room.events():
            if isinstance(event, ParticipantJoined):
                self.peers.add(event.user_id)
                other = self.names.get(event.user_id, event.user_id)
                self.say(f"  {self.name}: connected to {other}", flush=True)
            elif isinstance(event, ChatMessage):
                self.chat_from.add(event.sender)
            elif isinstance(event, TrackReceived):
                self.tracks.append(event.track)

    def report(self, chat_sent: int) -> BotReport:
        frames = {"audio": 0, "video": 0}
        for track in self.tracks:
            frames[track.kind] += track.frames_received
        join_ms = self.room.stats().join_ms
        return BotReport(
            userId=self.room.user_id,
            peers_connected=len(self.peers),
            chat_sent=chat_sent,
            chat_received=len(self.chat_from),
            audio_frames_received=frames["audio"],
            video_frames_received=frames["video"],
            join_ms=None if join_ms is None else round(join_ms, 1),
        )


async def run_demo(
    participants: int = 3,
    duration: float = 5.0,
    settings: RoomSettings | None = None,
    quiet: bool = False,
) -> DemoReport:
    with tempfile.TemporaryDirectory(prefix="connvo-demo-") as data:
        async with DevServer(Path(data)) as server:
            return await _meeting(server, participants, duration, settings or RoomSettings(), quiet)


async def _meeting(
    server: DevServer, n: int, duration: float, settings: RoomSettings, quiet: bool
) -> DemoReport:
    say = _silent if quiet else print
    names = [f"bot{i + 1}" for i in range(n)]
    tokens = {name: server.token(name) for name in names}
    names_by_id = {server.user_id(name): name for name in names}
    meeting_id = await setup_meeting(server.url, [tokens[name] for name in names])
    say(f"meeting {meeting_id} on {server.url}: {n} bots joining", flush=True)
    bots = [
        _Bot(
            name,
            Room(
                server.url,
                tokens[name],
                meeting_id,
                request=JoinRequest(outgoing=Outgoing.synthetic()),
                ice=IceOptions.loopback(),
                settings=settings,
            ),
            say,
            names_by_id,
        )
        for name in names
    ]
    watchers = [asyncio.create_task(bot.watch()) for bot in bots]
    try:
        await asyncio.gather(*(bot.room.join() for bot in bots))
        await _until(lambda: all(len(b.peers) >= n - 1 for b in bots), timeout=20)
        for bot in bots:
            await bot.room.send_chat(f"hello from {bot.name}")
        say(f"all joined; exchanging media for {duration:.0f} s", flush=True)
        await asyncio.sleep(duration)
        # A loaded machine may still have messages in flight; give them a moment, not forever.
        await _until(lambda: all(len(b.chat_from) >= n - 1 for b in bots), timeout=10)
        reports = [bot.report(chat_sent=1) for bot in bots]
        lost = [line for bot in bots for line in bot.room.stats().problems]
    finally:
        await asyncio.gather(*(bot.room.leave() for bot in bots), return_exceptions=True)
        await asyncio.gather(*watchers, return_exceptions=True)
    for line in lost:
        say(f"problem: {line}", flush=True)
    ok = not lost and all(
        r.peers_connected == n - 1
        and r.chat_received == n - 1
        and r.audio_frames_received > 0
        and r.video_frames_received > 0
        for r in reports
    )
    return DemoReport(ok=ok, meetingId=meeting_id, participants=reports, names=names_by_id)


async def setup_meeting(url: str, tokens: list[str], title: str = "connvo-agent demo") -> str:
    """The first token's user hosts; everyone else is added as a participant; then it starts."""
    host = ConnvoAPI(url, tokens[0])
    meeting = await host.create_meeting(title, maxParticipants=len(tokens))
    if len(tokens) > 4:  # the real backend caps mesh rooms at 4; the dev backend can go on
        await host.configure_dev_room(meeting.meetingId, maxParticipants=len(tokens))
    for token in tokens[1:]:
        user = await ConnvoAPI(url, token).current_user()
        assert user is not None
        await host.add_participant(meeting.meetingId, user.id)
    await host.start_meeting(meeting.meetingId)
    return meeting.meetingId


def _silent(*args: object, **kwargs: object) -> None:
    pass


async def _until(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def print_report(report: DemoReport) -> None:
    print(f"\nmeeting {report.meetingId}: {'OK' if report.ok else 'NOT OK'}")
    header = ("bot", "userId", "peers", "chat in", "audio fr", "video fr", "join ms")
    print("{:6} {:30} {:>5} {:>7} {:>9} {:>9} {:>8}".format(*header))
    for p in report.participants:
        join = "-" if p.join_ms is None else f"{p.join_ms:.0f}"
        name = report.names.get(p.userId, "")
        print(
            f"{name:6} {p.userId:30} {p.peers_connected:>5} {p.chat_received:>7} "
            f"{p.audio_frames_received:>9} {p.video_frames_received:>9} {join:>8}"
        )
