"""What a participant receives: each remote track drained by one task, so frames never pile up
in aiortc's queues, counted, and handed to whoever iterates over it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from agent.media.passthrough import EncodedFrame

_QUEUE = 64

Frame = av.AudioFrame | av.VideoFrame | EncodedFrame


class RemoteTrack:
    """A remote participant's audio, camera or screen track.

    `async for frame in track.frames()` yields decoded av frames (`EncodedFrame`s in a room
    joined with `encoded=True`) from the moment you start; a reader that falls behind loses the
    oldest frames, never blocks the connection.
    """

    def __init__(self, user_id: str, kind: str, label: str, track: MediaStreamTrack) -> None:
        self.user_id = user_id
        self.kind = kind
        self.label = label  # "audio", "camera" or "screen"
        self.frames_received = 0
        self.last_frame_at: float | None = None
        """time.monotonic() of the last frame."""
        self.longest_gap = 0.0
        """The most seconds between two frames."""
        self._track = track
        self._readers: set[asyncio.Queue[Frame | None]] = set()
        self._task = asyncio.create_task(self._drain(), name=f"drain {user_id} {label}")

    def __repr__(self) -> str:
        return f"RemoteTrack({self.user_id!r}, {self.label!r}, frames={self.frames_received})"

    async def frames(self, maxsize: int = _QUEUE) -> AsyncIterator[Frame]:
        """`maxsize=0` never drops: for a reader that only hands frames on (a recorder), where
        losing media is worse than holding it; aiortc can deliver a burst in one loop turn."""
        queue: asyncio.Queue[Frame | None] = asyncio.Queue(maxsize)
        self._readers.add(queue)
        try:
            while (frame := await queue.get()) is not None:
                yield frame
        finally:
            self._readers.discard(queue)

    async def _drain(self) -> None:
        try:
            while True:
                frame = await self._track.recv()
                self._count(time.monotonic())
                for queue in self._readers:
                    _offer(queue, frame)
        except MediaStreamError:
            pass
        finally:
            for queue in self._readers:
                _offer(queue, None)

    def _count(self, now: float) -> None:
        self.frames_received += 1
        if self.last_frame_at is not None:
            self.longest_gap = max(self.longest_gap, now - self.last_frame_at)
        self.last_frame_at = now

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.wait([self._task])  # unlike suppress(CancelledError), keeps our own cancel


def _offer(queue: asyncio.Queue, item: object) -> None:
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)
