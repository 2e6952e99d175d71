"""Typed events a Room emits, in the order they happen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.media.tracks import RemoteTrack


@dataclass(frozen=True)
class ParticipantJoined:
    user_id: str
    session_id: str


@dataclass(frozen=True)
class ParticipantLeft:
    user_id: str
    session_id: str
    reason: str


@dataclass(frozen=True)
class ConnectionStateChanged:
    user_id: str
    state: str


@dataclass(frozen=True)
class ChatMessage:
    id: str
    sender: str
    text: str
    ts: float


@dataclass(frozen=True)
class TrackReceived:
    user_id: str
    session_id: str
    track: RemoteTrack


Event = ParticipantJoined | ParticipantLeft | ConnectionStateChanged | ChatMessage | TrackReceived
