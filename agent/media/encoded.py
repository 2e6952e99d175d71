"""Media encoded once per process and sent by every sender: the cheap outgoing media of load bots.

A normal participant encodes per peer connection (one aiortc encoder per sender, see `sources`).
A `SharedFeed` encodes the synthetic tone or test pattern once, with a keyframe every
`KEYFRAME_INTERVAL` seconds, and hands the same `av.Packet` to every subscribed sender. aiortc's
RTCRtpSender takes an `av.Packet` from `track.recv()` and only packetizes it (`encoder.pack()`:
the VP8 payload descriptor, the RTP timestamp from pts); it never encodes. A sender subscribing
mid-stream starts at a keyframe (it asks for one; see KEYFRAME_ON_JOIN), so a late joiner's
receivers can decode what they get. Senders of shared packets run a leaner RTP loop than
aiortc's (see `lean_run_rtp` below, installed by `agent.aiortc_patches`).

    outgoing = SharedOutgoing.synthetic(audio=True, video=True, size=(320, 240), fps=15)
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import av
from aiortc import MediaStreamError, MediaStreamTrack, RTCRtpSender, clock, codecs, rtp

from agent.media.constants import SAMPLE_RATE, VIDEO_CLOCK
from agent.media.impair import Impairment
from agent.media.qoe import capture_timestamp
from agent.media.sources import Outgoing, PatternTrack, ToneTrack

log = logging.getLogger(__name__)

KEYFRAME_INTERVAL = 2.0
KEYFRAME_ON_JOIN = 0.5
"""A new sender asks for a keyframe, granted at most this often (a burst of joiners gets one)."""
AUDIO_BITRATE = 32_000
VIDEO_BITRATE = 300_000
VIEW_BACKLOG = 8
"""Packets a sender may lag behind its feed before it skips the oldest."""
IMPAIRMENT = Impairment()
"""What every shared-packet sender of this process does to its packets (`--impair`)."""


class SharedFeed:
    """One encoder, any number of senders. Encodes only while someone subscribes."""

    def __init__(
        self,
        kind: str,
        source: MediaStreamTrack,
        codec: av.AudioCodecContext | av.VideoCodecContext,
    ) -> None:
        self.kind = kind
        self.source = source
        self._codec = codec
        self._views: set[_PacketView] = set()
        self._task: asyncio.Task[None] | None = None
        self.frames_encoded = 0
        self._keyframe_wanted = False
        self._last_forced = 0.0
        self._epoch: float | None = None
        """Wall time (epoch s) of pts 0: the sources are paced, so pts tells each capture time."""

    @classmethod
    def tone(cls) -> SharedFeed:
        codec = av.CodecContext.create("libopus", "w")
        codec.bit_rate = AUDIO_BITRATE
        codec.format = "s16"
        codec.layout = "mono"
        codec.sample_rate = SAMPLE_RATE
        codec.time_base = fractions.Fraction(1, SAMPLE_RATE)
        codec.options = {"application": "voip"}
        return cls("audio", ToneTrack(), codec)

    @classmethod
    def pattern(cls, width: int = 320, height: int = 240, fps: int = 15) -> SharedFeed:
        codec = av.CodecContext.create("libvpx", "w")
        codec.width, codec.height = width, height
        codec.pix_fmt = "yuv420p"
        codec.bit_rate = VIDEO_BITRATE
        codec.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        codec.gop_size = max(1, round(fps * KEYFRAME_INTERVAL))
        codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        return cls("video", PatternTrack(width, height, fps), codec)

    def subscribe(self) -> MediaStreamTrack:
        view = _PacketView(self)
        self._views.add(view)
        self._keyframe_wanted = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._pump(), name=f"shared {self.kind} feed")
        return view

    def unsubscribe(self, view: _PacketView) -> None:
        self._views.discard(view)
        if not self._views and self._task is not None:
            self._task.cancel()
            self._task = None

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        codec = self._codec
        while True:
            frame = await self.source.recv()
            if self._epoch is None:
                self._epoch = time.time()
            if isinstance(frame, av.VideoFrame) and isinstance(codec, av.VideoCodecContext):
                if self._keyframe_wanted:
                    now = time.monotonic()
                    if now - self._last_forced >= KEYFRAME_ON_JOIN:
                        frame.pict_type = av.video.frame.PictureType.I
                        self._keyframe_wanted, self._last_forced = False, now
                # vp8 takes a few ms a frame: off the event loop
                packets = await loop.run_in_executor(None, codec.encode, frame)
            elif isinstance(frame, av.AudioFrame) and isinstance(codec, av.AudioCodecContext):
                packets = codec.encode(frame)
            else:
                raise TypeError(f"a {codec.name} feed cannot encode {type(frame).__name__}")
            for packet in packets:
                self._stamp(packet)
                for view in list(self._views):
                    view.put(packet)

    def _stamp(self, packet: av.Packet) -> None:
        """The feed's epoch, from which senders make capture-time RTP timestamps
        (agent.media.qoe.capture_timestamp), and the encoder's own pts: the capture time of the
        packet's first sample. Not the pts of the frame just fed: Opus looks 312 samples ahead,
        so each packet starts in the previous frame's tail (pts - 312, -312 for the first one,
        whose head is the encoder's padding), and after a skip that tail is a frame from before
        the gap; libopus follows the fed frames' pts through both."""
        packet.opaque = self._epoch
        rate = SAMPLE_RATE if self.kind == "audio" else VIDEO_CLOCK
        packet.time_base = fractions.Fraction(1, rate)
        self.frames_encoded += 1


class _PacketView(MediaStreamTrack):
    """One sender's view of a feed; waits for a keyframe before its first packet.

    A deque and one waiter rather than an asyncio.Queue: `put` runs for every sender on every
    packet, so it is kept to an append and at most one wake-up."""

    def __init__(self, feed: SharedFeed) -> None:
        super().__init__()
        self.kind = feed.kind
        self._feed = feed
        self._synced = feed.kind == "audio"
        self._packets: deque[av.Packet] = deque(maxlen=VIEW_BACKLOG)
        self._waiter: asyncio.Future[None] | None = None

    def put(self, packet: av.Packet) -> None:
        if not self._synced:
            if not packet.is_keyframe:
                return
            self._synced = True
        self._packets.append(packet)  # full: a slow sender skips the oldest, never holds others
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def recv(self) -> av.Packet:
        while not self._packets:
            if self.readyState == "ended":
                raise MediaStreamError
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        if self.readyState == "ended":
            raise MediaStreamError
        return self._packets.popleft()

    def stop(self) -> None:
        super().stop()
        self._feed.unsubscribe(self)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


# --- sending pre-encoded packets -----------------------------------------------------------------
#
# aiortc's RTCRtpSender._run_rtp builds an RtpPacket and serializes it (header extensions
# included) for every RTP packet. A sender whose track is a _PacketView runs the loop below
# instead: one header per frame (every packet of a frame shares its timestamp and abs-send-time),
# then per packet only the marker bit and sequence number are written before SRTP and send.
# What it leaves out: the RTP history that answers NACKs with retransmissions (load receivers
# count and never NACK; a lost packet stays lost) and the debug log. RTCP sender reports and
# stats read the same counters as before. Every other sender runs aiortc's own loop.
# Its RTP timestamps are capture times on the wall clock (the feed's epoch plus pts), so
# receivers on the same clock read the end-to-end delay (agent.media.qoe); and the process's
# IMPAIRMENT (loss, delay, jitter), if any, applies to every packet it sends.

RunRtp = Callable[[RTCRtpSender, Any], Coroutine[Any, Any, None]]


def lean_run_rtp(aiortc_run_rtp: RunRtp) -> RunRtp:
    """RTCRtpSender._run_rtp: `_run_rtp_packets` for a sender of shared packets, else aiortc's."""

    async def run_rtp(self: RTCRtpSender, codec: Any) -> None:
        if isinstance(self._RTCRtpSender__track, _PacketView):  # type: ignore[attr-defined]  # aiortc's private (mangled) name
            return await _run_rtp_packets(self, codec, aiortc_run_rtp)
        return await aiortc_run_rtp(self, codec)

    return run_rtp


async def _run_rtp_packets(self: RTCRtpSender, codec: Any, aiortc_run_rtp: RunRtp) -> None:
    self._RTCRtpSender__rtp_started.set()  # type: ignore[attr-defined]  # aiortc's private (mangled) name
    extensions_map = self._RTCRtpSender__rtp_header_extensions_map  # type: ignore[attr-defined]  # aiortc's private (mangled) name
    mid = self._RTCRtpSender__mid  # type: ignore[attr-defined]  # aiortc's private (mangled) name
    payload_type = codec.payloadType
    sequence_number = secrets.randbelow(1 << 15)  # the lower half, as aiortc: SRTP needs no wrap
    timestamp_origin = secrets.randbits(32)
    impairment = IMPAIRMENT
    encoder = None
    try:
        while True:
            track = self._RTCRtpSender__track  # type: ignore[attr-defined]  # aiortc's private (mangled) name
            if not track:
                await asyncio.sleep(0.02)
                continue
            if not isinstance(track, _PacketView):  # replaced by a track of frames
                return await aiortc_run_rtp(self, codec)
            packet = await track.recv()
            if not self._enabled:
                continue
            if encoder is None:
                encoder = self._RTCRtpSender__encoder = codecs.get_encoder(codec)  # type: ignore[attr-defined]  # aiortc's private (mangled) name
            payloads, timestamp = encoder.pack(packet)
            if not payloads:
                continue
            if isinstance(packet.opaque, float):
                timestamp_origin = capture_timestamp(packet.opaque, codec.clockRate)
            head = rtp.RtpPacket(
                payload_type=payload_type, timestamp=(timestamp_origin + timestamp) & 0xFFFFFFFF
            )
            head.ssrc = self._ssrc
            head.extensions.abs_send_time = (clock.current_ntp_time() >> 14) & 0x00FFFFFF
            head.extensions.mid = mid
            header = bytearray(head.serialize(extensions_map))
            last, octets = len(payloads) - 1, 0
            transport = self.transport
            for i, payload in enumerate(payloads):
                header[1] = (0x80 if i == last else 0) | payload_type
                header[2] = sequence_number >> 8
                header[3] = sequence_number & 0xFF
                if impairment:
                    impairment.send(transport._send_rtp, bytes(header) + payload)
                else:
                    await transport._send_rtp(bytes(header) + payload)
                sequence_number = (sequence_number + 1) & 0xFFFF
                octets += len(payload)
            self._RTCRtpSender__ntp_timestamp = clock.current_ntp_time()  # type: ignore[attr-defined]  # aiortc's private (mangled) name
            self._RTCRtpSender__rtp_timestamp = head.timestamp  # type: ignore[attr-defined]  # aiortc's private (mangled) name
            self._RTCRtpSender__octet_count += octets  # type: ignore[attr-defined]  # aiortc's private (mangled) name
            self._RTCRtpSender__packet_count += len(payloads)  # type: ignore[attr-defined]  # aiortc's private (mangled) name
    except (asyncio.CancelledError, ConnectionError, MediaStreamError):
        pass
    except Exception:
        log.warning("sending shared packets failed", exc_info=True)
    track = self._RTCRtpSender__track  # type: ignore[attr-defined]  # aiortc's private (mangled) name
    if track:
        track.stop()
        self._RTCRtpSender__track = None  # type: ignore[attr-defined]  # aiortc's private (mangled) name
    self._RTCRtpSender__encoder = None  # type: ignore[attr-defined]  # aiortc's private (mangled) name
    self._RTCRtpSender__rtp_exited.set()  # type: ignore[attr-defined]  # aiortc's private (mangled) name
    return None


_feeds: dict[tuple[object, ...], SharedFeed] = {}


def shared_feed(kind: str, size: tuple[int, int] = (320, 240), fps: int = 15) -> SharedFeed:
    """The process's feed of this kind and shape, made on first use."""
    key = (kind, size, fps) if kind == "video" else (kind,)
    if key not in _feeds:
        _feeds[key] = SharedFeed.pattern(*size, fps) if kind == "video" else SharedFeed.tone()
    return _feeds[key]


@dataclass
class SharedOutgoing(Outgoing):
    """Outgoing media from process-wide shared feeds; leaving stops this participant's senders
    only, never the feeds the other bots still send."""

    feeds: dict[str, SharedFeed] = field(default_factory=dict, repr=False)
    _views: list[MediaStreamTrack] = field(default_factory=list, repr=False)

    @classmethod
    def synthetic(  # type: ignore[override]  # size and fps where Outgoing has screen: called on this class only
        cls,
        audio: bool = True,
        video: bool = True,
        size: tuple[int, int] = (320, 240),
        fps: int = 15,
    ) -> SharedOutgoing:
        feeds = {}
        if audio:
            feeds["audio"] = shared_feed("audio")
        if video:
            feeds["video"] = shared_feed("video", size, fps)
        # The feed's own source stands in the track slots: the plan reads which kinds are sent.
        return cls(
            audio=feeds["audio"].source if audio else None,
            video=feeds["video"].source if video else None,
            feeds=feeds,
        )

    def relayed(self, source: MediaStreamTrack | None) -> MediaStreamTrack | None:
        if source is None:
            return None
        view = self.feeds[source.kind].subscribe()
        self._views.append(view)
        return view

    def stop(self) -> None:
        views, self._views = self._views, []
        for view in views:
            view.stop()
