"""What a participant sends: a tone, a moving test pattern, or a media file, looped.

A source is made once per participant; `Outgoing.relayed()` hands each peer connection its own
view of it (one aiortc track can feed only one sender). Each view gets its own copy of every
frame: aiortc encodes in worker threads, and PyAV frames shared between threads crash.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from dataclasses import dataclass, field

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError

from agent.media.constants import AUDIO_PTIME, SAMPLE_RATE, VIDEO_CLOCK

SKIP_AFTER = 1.0
"""Seconds behind schedule past which a paced track skips frames: a pause (no reader), not a
busy moment of the event loop, which it makes up by sending the late frames at once."""


class _Paced(MediaStreamTrack):
    """Emits frames on the wall clock, like a capture device would."""

    def __init__(self, period: float) -> None:
        super().__init__()
        self._period = period
        self._start: float | None = None
        self._index = 0

    async def _next_index(self) -> int:
        """The next frame's index, at its time. A track nobody read for over SKIP_AFTER seconds
        (a shared feed with no sender) skips the frames it missed, as a camera does, instead of
        bursting them: timestamps stay capture times, and receivers see a gap, not a flood."""
        if self._start is None:
            self._start = time.monotonic()
            return self._index
        self._index += 1
        late = time.monotonic() - (self._start + self._index * self._period)
        if late > SKIP_AFTER:
            self._index += int(late / self._period)
        await asyncio.sleep(max(0.0, self._start + self._index * self._period - time.monotonic()))
        return self._index


class ToneTrack(_Paced):
    """A sine tone, 48 kHz mono s16, in 20 ms frames."""

    kind = "audio"

    def __init__(self, frequency: float = 440.0, volume: float = 0.3) -> None:
        super().__init__(AUDIO_PTIME)
        samples = int(SAMPLE_RATE * AUDIO_PTIME)
        period = SAMPLE_RATE / math.gcd(SAMPLE_RATE, int(frequency))
        self._cycle = int(period)
        self._wave = (
            volume
            * 32767
            * np.sin(2 * np.pi * frequency * np.arange(self._cycle + samples) / SAMPLE_RATE)
        ).astype(np.int16)
        self._samples = samples

    async def recv(self) -> av.AudioFrame:
        index = await self._next_index()
        offset = (index * self._samples) % self._cycle
        frame = av.AudioFrame.from_ndarray(
            self._wave[offset : offset + self._samples].reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = SAMPLE_RATE
        frame.pts = index * self._samples
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        return frame


class PatternTrack(_Paced):
    """Colour bars scrolling sideways: motion keeps the encoder honest about bitrate."""

    kind = "video"

    def __init__(self, width: int = 320, height: int = 240, fps: int = 15) -> None:
        super().__init__(1 / fps)
        x = np.linspace(0, 255, width, dtype=np.float32)
        y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
        rgb = np.stack(
            [
                np.broadcast_to(x, (height, width)),
                np.broadcast_to(y, (height, width)),
                np.broadcast_to(255 - x, (height, width)),
            ],
            axis=-1,
        ).astype(np.uint8)
        self._rgb = np.ascontiguousarray(rgb)
        self._step = max(1, width // (fps * 4))
        self._fps = fps

    async def recv(self) -> av.VideoFrame:
        index = await self._next_index()
        frame = av.VideoFrame.from_ndarray(
            np.roll(self._rgb, index * self._step, axis=1), format="rgb24"
        ).reformat(format="yuv420p")
        frame.pts = index * VIDEO_CLOCK // self._fps
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        return frame


@dataclass
class Outgoing:
    """The participant's own media: at most one audio, one camera and one screen source."""

    audio: MediaStreamTrack | None = None
    video: MediaStreamTrack | None = None
    screen: MediaStreamTrack | None = None
    _fanouts: dict[int, Fanout] = field(default_factory=dict, repr=False)
    _player: MediaPlayer | None = field(default=None, repr=False)

    @classmethod
    def synthetic(cls, audio: bool = True, video: bool = True, screen: bool = False) -> Outgoing:
        return cls(
            audio=ToneTrack() if audio else None,
            video=PatternTrack() if video else None,
            screen=PatternTrack(640, 360, 5) if screen else None,
        )

    @classmethod
    def file(cls, path: str) -> Outgoing:
        """Any file av can read, looped; a missing or unreadable file fails here, clearly."""
        try:
            player = MediaPlayer(path, loop=True)
        except (av.FFmpegError, OSError) as e:
            raise ValueError(f"cannot play {path}: {e}") from None
        return cls(audio=player.audio, video=player.video, _player=player)

    def relayed(self, source: MediaStreamTrack | None) -> MediaStreamTrack | None:
        if source is None:
            return None
        if id(source) not in self._fanouts:
            self._fanouts[id(source)] = Fanout(source)
        return self._fanouts[id(source)].subscribe()

    def stop(self) -> None:
        for fanout in self._fanouts.values():
            fanout.stop()
        for track in (self.audio, self.video, self.screen):
            if track is not None:
                track.stop()


class Fanout:
    """Reads one source track and gives every subscriber its own copy of each frame."""

    def __init__(self, source: MediaStreamTrack) -> None:
        self.source = source
        self._views: set[_View] = set()
        self._task: asyncio.Task[None] | None = None

    def subscribe(self) -> MediaStreamTrack:
        view = _View(self)
        self._views.add(view)
        if self._task is None:
            self._task = asyncio.create_task(self._pump(), name=f"fanout {self.source.kind}")
        return view

    def unsubscribe(self, view: _View) -> None:
        self._views.discard(view)

    async def _pump(self) -> None:
        try:
            while True:
                frame = await self.source.recv()
                if self._views:
                    shared = _copier(frame)
                    for view in self._views:
                        view.put(shared.copy())
        except MediaStreamError:
            for view in self._views:
                view.put(None)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


def _copier(frame: av.frame.Frame | av.Packet) -> _VideoCopier | _AudioCopier:
    """Takes the pixels or samples out of a frame once, makes fresh frames from them."""
    if isinstance(frame, av.VideoFrame):
        return _VideoCopier(frame)
    if isinstance(frame, av.AudioFrame):
        return _AudioCopier(frame)
    raise TypeError(f"cannot copy a {type(frame).__name__}: a source track gives decoded frames")


class _VideoCopier:
    def __init__(self, frame: av.VideoFrame) -> None:
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        self.frame = frame
        self.array = frame.to_ndarray()

    def copy(self) -> av.VideoFrame:
        f = self.frame
        out = av.VideoFrame.from_ndarray(self.array, format="yuv420p")
        out.pts, out.time_base = f.pts, f.time_base
        return out


class _AudioCopier:
    def __init__(self, frame: av.AudioFrame) -> None:
        self.frame = frame
        self.array = frame.to_ndarray()

    def copy(self) -> av.AudioFrame:
        f = self.frame
        out = av.AudioFrame.from_ndarray(self.array, format=f.format.name, layout=f.layout.name)
        out.sample_rate = f.sample_rate
        out.pts, out.time_base = f.pts, f.time_base
        return out


class _View(MediaStreamTrack):
    def __init__(self, fanout: Fanout) -> None:
        super().__init__()
        self.kind = fanout.source.kind
        self._fanout = fanout
        self._queue: asyncio.Queue[av.AudioFrame | av.VideoFrame | None] = asyncio.Queue(4)

    def put(self, frame: av.AudioFrame | av.VideoFrame | None) -> None:
        if self._queue.full():
            self._queue.get_nowait()  # a slow sender skips frames, never holds the others back
        self._queue.put_nowait(frame)

    async def recv(self) -> av.AudioFrame | av.VideoFrame:
        frame = await self._queue.get()
        if frame is None or self.readyState == "ended":
            raise MediaStreamError
        return frame

    def stop(self) -> None:
        super().stop()
        self._fanout.unsubscribe(self)
