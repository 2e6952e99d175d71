"""Media encoded once per process and sent by every sender: the cheap outgoing media of load bots.

A normal participant encodes per peer connection (one aiortc encoder per sender, see `sources`).
A `SharedFeed` encodes the synthetic tone or test pattern once, with a keyframe every
`KEYFRAME_INTERVAL` seconds, and hands the same `av.Packet` to every subscribed sender. aiortc's
RTCRtpSender takes an `av.Packet` from `track.recv()` and only packetizes it (`encoder.pack()`:
the VP8 payload descriptor, the RTP timestamp from pts); it never encodes. A sender subscribing
mid-stream starts at a keyframe (it asks for one; see KEYFRAME_ON_JOIN), so a late joiner's
receivers can decode what they get.

    outgoing = SharedOutgoing.synthetic(audio=True, video=True, size=(320, 240), fps=15)
"""

from __future__ import annotations

import asyncio
import fractions
import time
from dataclasses import dataclass, field

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from agent.media.sources import SAMPLE_RATE, VIDEO_CLOCK, Outgoing, PatternTrack, ToneTrack

KEYFRAME_INTERVAL = 2.0
KEYFRAME_ON_JOIN = 0.5
"""A new sender asks for a keyframe, granted at most this often (a burst of joiners gets one)."""
AUDIO_BITRATE = 32_000
VIDEO_BITRATE = 300_000


class SharedFeed:
    """One encoder, any number of senders. Encodes only while someone subscribes."""

    def __init__(self, kind: str, source: MediaStreamTrack, codec: av.CodecContext) -> None:
        self.kind = kind
        self.source = source
        self._codec = codec
        self._views: set[_PacketView] = set()
        self._task: asyncio.Task[None] | None = None
        self.frames_encoded = 0
        self._keyframe_wanted = False
        self._last_forced = 0.0

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
        while True:
            frame = await self.source.recv()
            if self.kind == "video" and self._keyframe_wanted:
                now = time.monotonic()
                if now - self._last_forced >= KEYFRAME_ON_JOIN:
                    frame.pict_type = av.video.frame.PictureType.I
                    self._keyframe_wanted, self._last_forced = False, now
            if self.kind == "video":  # vp8 takes a few ms a frame: off the event loop
                packets = await loop.run_in_executor(None, self._codec.encode, frame)
            else:
                packets = self._codec.encode(frame)
            for packet in packets:
                self._stamp(packet)
                for view in list(self._views):
                    view.put(packet)

    def _stamp(self, packet: av.Packet) -> None:
        """Our own pts, counted from zero (libopus starts negative); senders add their origin."""
        if self.kind == "audio":
            packet.pts = self.frames_encoded * int(SAMPLE_RATE * 0.02)
            packet.time_base = fractions.Fraction(1, SAMPLE_RATE)
        else:
            packet.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.frames_encoded += 1


class _PacketView(MediaStreamTrack):
    """One sender's view of a feed; waits for a keyframe before its first packet."""

    def __init__(self, feed: SharedFeed) -> None:
        super().__init__()
        self.kind = feed.kind
        self._feed = feed
        self._synced = feed.kind == "audio"
        self._queue: asyncio.Queue[av.Packet] = asyncio.Queue(8)

    def put(self, packet: av.Packet) -> None:
        if not self._synced:
            if not packet.is_keyframe:
                return
            self._synced = True
        if self._queue.full():
            self._queue.get_nowait()  # a slow sender skips packets, never holds the others back
        self._queue.put_nowait(packet)

    async def recv(self) -> av.Packet:  # type: ignore[override]
        if self.readyState == "ended":
            raise MediaStreamError
        return await self._queue.get()

    def stop(self) -> None:
        super().stop()
        self._feed.unsubscribe(self)


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
    def synthetic(  # type: ignore[override]
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
