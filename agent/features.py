"""What a participant may open, decided once from the room's flags and what the user asked for.

Asking explicitly for something the room forbids fails the join before any session exists;
anything left to the room (`chat=None`) quietly follows the flag.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.errors import FeatureDisabled
from agent.media.sources import Outgoing
from signaling.models import RoomFeatures


@dataclass(frozen=True)
class JoinRequest:
    """What this participant sends and consumes; checked against the room's flags on join."""

    outgoing: Outgoing = field(default_factory=Outgoing)
    chat: bool | None = None
    screen_share: bool = False
    receive: frozenset[str] = frozenset({"audio", "video"})
    record: bool = False
    transcribe: bool = False
    decode: bool = True
    """False: remote media is counted (frames, bytes), never decoded; see agent.media.counting."""
    encoded: bool = False
    """True: remote tracks yield frames as the sender encoded them (`EncodedFrame`), never
    decoded; see agent.media.passthrough."""


@dataclass(frozen=True)
class Plan:
    chat: bool
    send_audio: bool
    send_video: bool
    screen_share: bool
    receive_audio: bool
    receive_video: bool
    offer_screen: bool
    """Offer an m-line for screen share, so either side may fill it (needs `screenSharing`)."""


def plan(features: RoomFeatures, request: JoinRequest) -> Plan:
    out = request.outgoing
    chat, record, transcribe = request.chat, request.record, request.transcribe
    screen_share = request.screen_share or out.screen is not None
    if chat and not features.chat:
        raise FeatureDisabled("chat", "a chat channel")
    if screen_share and not features.screenSharing:
        raise FeatureDisabled("screenSharing", "sharing a screen")
    if record and not features.recording:
        raise FeatureDisabled("recording", "receiving media to record")
    if transcribe and not features.transcription:
        raise FeatureDisabled("transcription", "receiving audio to transcribe")
    wanted = set(request.receive)
    if record:
        wanted |= {"audio", "video"}
    if transcribe:
        wanted.add("audio")
    return Plan(
        chat=features.chat if chat is None else chat,
        send_audio=out.audio is not None,
        send_video=out.video is not None,
        screen_share=screen_share,
        receive_audio="audio" in wanted,
        receive_video="video" in wanted,
        offer_screen=features.screenSharing and ("video" in wanted or screen_share),
    )
