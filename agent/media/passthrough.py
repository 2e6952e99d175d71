"""Receivers that hand on frames as they arrived, reassembled but never decoded: for a recorder
that copies them into a file (agent.workers.matroska) instead of transcoding them.

A receiver of a room joined with `JoinRequest(encoded=True)` keeps all of aiortc's receive path
(bitrate estimate, NACKs and retransmissions, depayloading, the jitter buffer that reassembles
frames); only its decoder queue is a `_Handoff` (set just before `receive()` starts it), which
puts each reassembled frame on the track as an `EncodedFrame`. No decoder thread runs.

A video frame can be decoded only after the keyframe its chain starts from. A stream starts
broken, and breaks again whenever aiortc's jitter buffer gives up on lost packets, which it says
by asking the sender for a keyframe (a PLI: `noting_pli` sees it). While broken, frames are
marked `broken` and the receiver asks for a keyframe again every KEYFRAME_RETRY (aiortc never
negotiates FIR, so PLI it is); a keyframe heals the chain. A reader drops broken frames.

`agent.aiortc_patches` installs the replacements below; each decides from a context variable the
Room sets in its own context (`ENCODED`), or from the receiver's `_Handoff`, so rooms that decode,
count or copy share a process.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from aiortc import RTCRtpReceiver, codecs

from agent.media.bitstream import is_keyframe

ENCODED: ContextVar[bool] = ContextVar("ENCODED", default=False)
KEYFRAME_RETRY = 0.5
"""Seconds between keyframe requests while a video stream is broken (a PLI can be lost)."""


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One frame as the sender encoded it: a VP8 frame, an H.264 access unit (Annex B), an Opus
    packet. `timestamp` is RTP clock units since the stream's first frame (aiortc's mapping,
    which unwraps the 32-bit counter), so `time` means what an av frame's `time` does."""

    codec: str  # the RTP name: "VP8", "H264", "opus", ...
    data: bytes
    timestamp: int
    clock_rate: int
    keyframe: bool = False
    broken: bool = False
    """A video frame after the stream's start or a loss, before a keyframe: undecodable."""

    @property
    def time(self) -> float:
        return self.timestamp / self.clock_rate


class _Handoff:
    """Stands in for the decoder's input queue: `put` runs on the event loop, in aiortc's RTP
    handler, and hands the frame to the track; `put(None)` is the receiver stopping."""

    def __init__(self, track: Any) -> None:
        self._track = track
        self._video = track.kind == "video"
        self.broken = self._video
        self._asked = -math.inf

    def put(self, item: tuple[Any, Any] | None) -> None:
        if item is None:
            self._track._queue.put_nowait(None)  # what the decoder thread would do: end the track
            return
        codec, frame = item
        key = self._video and is_keyframe(codec.name, frame.data)
        if key:
            self.broken = False
        encoded = EncodedFrame(
            codec.name, frame.data, frame.timestamp, codec.clockRate, key, self.broken
        )
        self._track._queue.put_nowait(encoded)

    def lost(self) -> None:
        self.broken = self._video

    def ask(self, now: float) -> bool:
        """Whether to ask for a keyframe now."""
        if not self.broken or now - self._asked < KEYFRAME_RETRY:
            return False
        self._asked = now
        return True


Receive = Callable[[RTCRtpReceiver, Any], Coroutine[Any, Any, None]]
HandleRtp = Callable[[RTCRtpReceiver, Any, int], Coroutine[Any, Any, None]]
SendPli = Callable[[RTCRtpReceiver, int], Coroutine[Any, Any, None]]
DecoderWorker = Callable[[Any, Any, Any, Any], None]


def _handoff(receiver: RTCRtpReceiver) -> _Handoff | None:
    queue = receiver._RTCRtpReceiver__decoder_queue  # type: ignore[attr-defined]  # aiortc's private (mangled) name
    return queue if isinstance(queue, _Handoff) else None


def encoded_receive(aiortc_receive: Receive) -> Receive:
    """RTCRtpReceiver.receive: in an encoded room, the decoder queue becomes a handoff first."""

    async def receive(self: RTCRtpReceiver, parameters: Any) -> None:
        if ENCODED.get() and not self._RTCRtpReceiver__started:  # type: ignore[attr-defined]  # aiortc's private (mangled) name
            self._RTCRtpReceiver__decoder_queue = _Handoff(self.track)  # type: ignore[attr-defined]  # aiortc's private (mangled) name
        await aiortc_receive(self, parameters)

    return receive


def keyframe_rtp(aiortc_handle_rtp: HandleRtp) -> HandleRtp:
    """RTCRtpReceiver._handle_rtp_packet: after aiortc's own handling, a broken stream asks its
    sender for a keyframe (with this packet's SSRC, as aiortc's own PLIs do)."""

    async def handle_rtp_packet(self: RTCRtpReceiver, packet: Any, arrival_time_ms: int) -> None:
        await aiortc_handle_rtp(self, packet, arrival_time_ms)
        handoff = _handoff(self)
        if handoff is None or not handoff.ask(time.monotonic()):
            return
        codec = self._RTCRtpReceiver__codecs.get(packet.payload_type)  # type: ignore[attr-defined]  # aiortc's private (mangled) name
        if codec is not None and not codecs.is_rtx(codec):
            await self._send_rtcp_pli(packet.ssrc)

    return handle_rtp_packet


def noting_pli(aiortc_send_pli: SendPli) -> SendPli:
    """RTCRtpReceiver._send_rtcp_pli: aiortc asks for a keyframe when its jitter buffer dropped
    packets; what follows references them, so the stream is broken until a keyframe."""

    async def send_rtcp_pli(self: RTCRtpReceiver, media_ssrc: int) -> None:
        if (handoff := _handoff(self)) is not None:
            handoff.lost()
        await aiortc_send_pli(self, media_ssrc)

    return send_rtcp_pli


def handoff_worker(aiortc_worker: DecoderWorker) -> DecoderWorker:
    """rtcrtpreceiver.decoder_worker: no thread work behind a handoff."""

    def decoder_worker(loop: Any, input_q: Any, output_q: Any, decode_error: Any) -> None:
        if not isinstance(input_q, _Handoff):
            aiortc_worker(loop, input_q, output_q, decode_error)

    return decoder_worker
