"""Receivers that count instead of decoding, for load bots whose remote media nobody reads.

aiortc's RTCRtpReceiver handles each RTP packet in Python: the remote bitrate estimator, NACK
generation, depayloading, the jitter buffer that reassembles frames, then a queue read by a
decoder thread of its own. A receiver of a room joined with `JoinRequest(decode=False)` does none
of that: it keeps the per-stream statistics that getStats and the RTCP receiver reports read
(packets, loss, jitter), and counts frames and bytes at the RTP level: every audio packet is a
frame, a video frame ends with the marker bit; bytes are RTP payload bytes. Its decoder queue is a
`_CountingQueue` (set just before `receive()` starts it), so no decoder thread runs; the remote
track yields no frames and ends when the receiver stops. Without a jitter buffer there are no
NACKs and no PLIs: on a lossy path loss is counted, not repaired (the shared feeds send a keyframe
every 2 s anyway).

`agent.aiortc_patches` installs the three replacements below in aiortc; each decides per call
from a context variable that the Room sets in its own context (`COUNTED`), or from the receiver
that decision marked, so counting and decoding rooms share a process.

Each stream also keeps what a participant would have experienced of it (`agent.media.qoe`:
freezes, frame rate, concealment, end-to-end delay, MOS); `received_streams(pc)` reads them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCRtpReceiver, codecs, rtcrtpreceiver

from agent.media.qoe import StreamQoE


@dataclass
class KindCount:
    frames: int = 0
    bytes: int = 0
    first_at: float | None = None


@dataclass
class ReceiveTally:
    """Encoded frames received by every counting receiver of one room, per kind."""

    on_first: Callable[[str], None] = field(default=lambda kind: None, repr=False)
    kinds: dict[str, KindCount] = field(default_factory=dict)

    def add(self, kind: str, size: int, frames: int = 1) -> None:
        count = self.kinds.get(kind)
        if count is None:
            count = self.kinds[kind] = KindCount()
        count.frames += frames
        count.bytes += size
        if count.first_at is None and count.frames:
            count.first_at = time.monotonic()
            self.on_first(kind)


COUNTED: ContextVar[ReceiveTally | None] = ContextVar("COUNTED", default=None)
MEASURE_QOE = True
"""Off only to measure what QoE accounting costs (scripts/bench_load.py, LoadConfig.qoe)."""


class _CountingQueue:
    """Stands in for the decoder's input queue; `put(None)` is the receiver stopping."""

    def __init__(self, tally: ReceiveTally, track: Any) -> None:
        self._tally = tally
        self._track = track

    def put(self, item: tuple[Any, Any] | None) -> None:
        if item is None:
            self._track._queue.put_nowait(None)  # what the decoder thread would do: end the track
            return
        _codec, encoded_frame = item
        self._tally.add(self._track.kind, len(encoded_frame.data))


class _CountedStream(rtcrtpreceiver.StreamStatistics):
    """aiortc's statistics of one remote stream (what getStats and RTCP reports read), with
    whether it carries retransmissions and what a participant would have experienced of it."""

    def __init__(self, clockrate: int, rtx: bool, qoe: StreamQoE) -> None:
        super().__init__(clockrate)
        self.connvo_rtx = rtx
        self.connvo_qoe = qoe


Receive = Callable[[RTCRtpReceiver, Any], Coroutine[Any, Any, None]]
HandleRtp = Callable[[RTCRtpReceiver, Any, int], Coroutine[Any, Any, None]]
DecoderWorker = Callable[[Any, Any, Any, Any], None]


def counting_receive(aiortc_receive: Receive) -> Receive:
    """RTCRtpReceiver.receive: in a counting room, the decoder queue becomes a counter first."""

    async def receive(self: RTCRtpReceiver, parameters: Any) -> None:
        tally = COUNTED.get()
        if tally is not None and not self._RTCRtpReceiver__started:  # type: ignore[attr-defined]  # aiortc's private (mangled) name
            self._RTCRtpReceiver__decoder_queue = _CountingQueue(tally, self.track)  # type: ignore[attr-defined]  # aiortc's private (mangled) name
            self._connvo_tally = tally  # type: ignore[attr-defined]  # our mark on aiortc's receiver
        await aiortc_receive(self, parameters)

    return receive


def counting_rtp(aiortc_handle_rtp: HandleRtp) -> HandleRtp:
    """RTCRtpReceiver._handle_rtp_packet: a counting receiver keeps statistics and counts."""

    async def handle_rtp_packet(self: RTCRtpReceiver, packet: Any, arrival_time_ms: int) -> None:
        tally: ReceiveTally | None = getattr(self, "_connvo_tally", None)
        if tally is None:
            return await aiortc_handle_rtp(self, packet, arrival_time_ms)
        if not self._enabled:
            return None
        # Only this handler adds a counting receiver's streams: each is a _CountedStream.
        streams: dict[int, _CountedStream] = self._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]  # aiortc's private (mangled) name
        stream = streams.get(packet.ssrc)
        if stream is None:
            codec = self._RTCRtpReceiver__codecs.get(packet.payload_type)  # type: ignore[attr-defined]  # aiortc's private (mangled) name
            if codec is None:
                return None
            qoe = StreamQoE(self.track.kind, codec.clockRate)
            stream = streams[packet.ssrc] = _CountedStream(
                codec.clockRate, codecs.is_rtx(codec), qoe
            )
            if not stream.connvo_rtx:
                known = getattr(self, "_connvo_streams", [])
                self._connvo_streams = [*known, stream.connvo_qoe]  # type: ignore[attr-defined]  # our mark on aiortc's receiver
        stream.add(packet)
        if stream.connvo_rtx:
            return None  # a retransmission: in the stream's statistics, not counted again
        kind = self.track.kind
        frames = 1 if kind == "audio" else packet.marker
        tally.add(kind, len(packet.payload), frames)
        if MEASURE_QOE:
            stream.connvo_qoe.packet(
                packet.sequence_number, packet.timestamp, packet.marker, time.monotonic()
            )
        return None

    return handle_rtp_packet


def received_streams(pc: Any) -> list[StreamQoE]:
    """What the counting receivers of one peer connection measured, one entry per stream."""
    return [q for r in pc.getReceivers() for q in getattr(r, "_connvo_streams", ())]


def counting_worker(aiortc_worker: DecoderWorker) -> DecoderWorker:
    """rtcrtpreceiver.decoder_worker: no thread work behind a counting queue."""

    def decoder_worker(loop: Any, input_q: Any, output_q: Any, decode_error: Any) -> None:
        if isinstance(input_q, _CountingQueue):
            return  # nothing to decode; the counting queue ends the track itself
        aiortc_worker(loop, input_q, output_q, decode_error)

    return decoder_worker
