"""`connvo-agent join`: one bot in one meeting, printing events as they happen."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass

from agent.chat import MAX_TEXT
from agent.errors import Replaced
from agent.events import (
    ChatMessage,
    ConnectionStateChanged,
    Event,
    EventsDropped,
    ParticipantJoined,
    ParticipantLeft,
    SessionReplaced,
    TrackReceived,
)
from agent.media.sources import Outgoing
from agent.media.tracks import RemoteTrack
from agent.presence import MEDIA_STOPPED, Outcome
from agent.room import JoinRequest, JoinTarget
from agent.stats import RoomStats

ECHO = "echo: "
REPLACED = str(Replaced())
BACKEND_LOST = "the deployment was out of reach at the end: signals could not be read"


@dataclass(frozen=True)
class BotOptions:
    target: JoinTarget
    send: frozenset[str] = frozenset()
    play: str | None = None
    chat: str | None = None
    echo: bool = False
    duration: float | None = None
    json: bool = False

    def outgoing(self) -> Outgoing:
        if self.play:
            return Outgoing.file(self.play)
        unknown = self.send - {"audio", "video", "screen"}
        if unknown:
            raise ValueError(f"--send takes audio, video, screen; not {', '.join(sorted(unknown))}")
        return Outgoing.synthetic("audio" in self.send, "video" in self.send, "screen" in self.send)


async def run_bot(options: BotOptions) -> int:
    try:
        outgoing = options.outgoing()
    except ValueError as e:
        raise SystemExit(f"connvo-agent join: {e}") from None
    target = options.target
    room = target.room(JoinRequest(outgoing=outgoing, screen_share=outgoing.screen is not None))
    events = room.events()
    tracks: list[RemoteTrack] = []
    chat = {"sent": 0, "received": 0}
    started = time.monotonic()
    async with room:
        _say(f"joined meeting {target.meeting_id} as {room.user_id} (session {room.session_id})")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(options.duration):
                async for event in events:
                    _say(_describe(event))
                    if isinstance(event, TrackReceived):
                        tracks.append(event.track)
                    elif isinstance(event, ParticipantJoined) and options.chat:
                        await room.send_chat(options.chat)
                        chat["sent"] += 1
                    elif isinstance(event, ChatMessage):
                        chat["received"] += 1
                        if options.echo and not event.text.startswith(ECHO):
                            await room.send_chat(_echo(event.text))
                            chat["sent"] += 1
        stats = room.stats()
        participants = _participants(stats, tracks, time.monotonic())
        problems = _problems(stats, participants)
        for line in problems:
            print(f"connvo-agent join: {line}", file=sys.stderr, flush=True)
        summary = {
            "ok": not problems,
            "meetingId": target.meeting_id,
            "userId": room.user_id,
            "peers": sorted(p.user_id for p in room.connected_peers()),
            "participants": participants,
            "chat_sent": chat["sent"],
            "chat_received": chat["received"],
            "chat_dropped": sum(p.chat_dropped for p in room.peers.values()),
            "signals": stats.signals,
            "signal_polls": stats.signal_polls,
            "audio_frames_received": sum(t.frames_received for t in tracks if t.kind == "audio"),
            "video_frames_received": sum(t.frames_received for t in tracks if t.kind == "video"),
            "join_ms": None if stats.join_ms is None else round(stats.join_ms, 1),
            "seconds": round(time.monotonic() - started, 1),
        }
    if options.json:
        print(json.dumps(summary), flush=True)
    return Replaced.exit_code if stats.replaced else 1 if problems else 0


def _participants(
    stats: RoomStats, tracks: list[RemoteTrack], now: float
) -> list[dict[str, object]]:
    """Per remote user that was there: connected or not, seconds connected, its frames, the
    longest gap in its media (between two frames, or since the last one while still connected),
    and the state at the end."""
    return [_participant(o, tracks, now) for o in stats.outcomes if o.there]


def _participant(outcome: Outcome, tracks: list[RemoteTrack], now: float) -> dict[str, object]:
    own = [t for t in tracks if t.user_id == outcome.user_id]
    gaps = [t.longest_gap for t in own if t.frames_received]
    last = max((t.last_frame_at for t in own if t.last_frame_at is not None), default=None)
    stopped = now - last if last is not None and outcome.state == "connected" else None
    if stopped is not None:
        gaps.append(stopped)
    return {
        "userId": outcome.user_id,
        "connected": outcome.connected,
        "connected_s": round(outcome.connected_s, 1),
        "frames": sum(t.frames_received for t in own),
        "longest_media_gap_s": round(max(gaps), 1) if gaps else None,
        "media_stopped_s": None if stopped is None else round(stopped, 1),
        "state": outcome.state,
    }


def _problems(stats: RoomStats, participants: list[dict[str, object]]) -> list[str]:
    """Why `ok` is false, one line each (README, "Command line")."""
    if stats.replaced:
        return [REPLACED]
    found = [BACKEND_LOST] if stats.backend_lost else []
    found += stats.problems
    for p in participants:
        stopped = p["media_stopped_s"]
        if isinstance(stopped, float) and stopped > MEDIA_STOPPED:
            found.append(f"no media from {p['userId']} for the last {stopped:.0f} s")
    return found


def _echo(text: str) -> str:
    """The echo of a message, cut to the chat limit. Echoes are never echoed again, so two
    echo bots answer each other once, not forever."""
    return (ECHO + text).encode("utf-8")[:MAX_TEXT].decode("utf-8", "ignore")


def _describe(event: Event) -> str:
    match event:
        case ParticipantJoined(user_id=user):
            return f"participant joined: {user}"
        case ParticipantLeft(user_id=user, reason=reason):
            return f"participant left: {user} ({reason})"
        case ConnectionStateChanged(user_id=user, state=state):
            return f"connection to {user}: {state}"
        case ChatMessage(sender=sender, text=text):
            return f"chat from {sender}: {_printable(text)}"
        case TrackReceived(user_id=user, track=track):
            return f"receiving {track.label} from {user}"
        case SessionReplaced():
            return REPLACED
        case EventsDropped(count=count):
            return f"{count} events dropped: this bot read them too slowly"
    return repr(event)


def _printable(text: str, limit: int = 200) -> str:
    """A remote's text as one safe terminal line: no escape sequences, no flood."""
    shown = "".join(c if c.isprintable() else "\N{REPLACEMENT CHARACTER}" for c in text[:limit])
    return shown + (f"... ({len(text)} characters)" if len(text) > limit else "")


def _say(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)
