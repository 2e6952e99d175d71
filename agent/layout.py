"""The fixed m-line layout of every connection in the mesh: audio, camera video, then screen
video when the room allows screen sharing. Both sides name tracks by position, with no extra
signaling; the offer, the answer and the naming of received tracks all read it from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from aiortc import MediaStreamTrack

if TYPE_CHECKING:
    from agent.features import Plan
    from agent.media.sources import Outgoing

Label = Literal["audio", "camera", "screen"]


@dataclass(frozen=True)
class Slot:
    label: Label
    kind: Literal["audio", "video"]
    source: MediaStreamTrack | None
    """What this participant sends on the m-line, if anything."""
    receive: bool

    @property
    def direction(self) -> str:
        return _DIRECTIONS[(self.source is not None, self.receive)]


def label(kind: str, index_of_kind: int) -> Label | None:
    """The slot of the n-th m-line of a kind: the first audio, the first video (camera), the
    second video (screen); None past the layout."""
    names: tuple[Label, ...] = ("audio",) if kind == "audio" else ("camera", "screen")
    return names[index_of_kind] if index_of_kind < len(names) else None


def slot(name: Label, plan: Plan, outgoing: Outgoing) -> Slot:
    if name == "audio":
        return Slot(name, "audio", outgoing.audio if plan.send_audio else None, plan.receive_audio)
    if name == "camera":
        return Slot(name, "video", outgoing.video if plan.send_video else None, plan.receive_video)
    sending = outgoing.screen if plan.screen_share else None
    return Slot(name, "video", sending, plan.receive_video)


def offered(plan: Plan, outgoing: Outgoing) -> list[Slot]:
    """The m-lines an offer carries, in order."""
    names: list[Label] = ["audio", "camera", "screen"] if plan.offer_screen else ["audio", "camera"]
    return [slot(name, plan, outgoing) for name in names]


_DIRECTIONS = {
    (True, True): "sendrecv",
    (True, False): "sendonly",
    (False, True): "recvonly",
    (False, False): "inactive",
}
