"""Receivers that count instead of decoding, for load bots whose remote media nobody reads.

aiortc's RTCRtpReceiver reassembles frames from RTP packets (its jitter buffer, which also sends
NACKs and PLIs) and puts each encoded frame on a queue read by a decoder thread of its own. For a
room joined with `JoinRequest(decode=False)` the receiver gets a `_CountingQueue` in place of that
input queue, just before `receive()` starts it: encoded frames are counted (frames, bytes, time of
the first) and dropped; the decoder thread sees the counting queue and returns at once. RTP, RTCP
and getStats work as before; the remote track yields no frames and ends when the receiver stops.

Like `agent.ice`, this patches aiortc once, at import, and decides per call from a context variable
that the Room sets in its own context (`COUNTED`), so counting and decoding rooms share a process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from aiortc import rtcrtpreceiver
from aiortc.rtcrtpreceiver import RTCRtpReceiver


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

    def add(self, kind: str, size: int) -> None:
        count = self.kinds.setdefault(kind, KindCount())
        count.frames += 1
        count.bytes += size
        if count.first_at is None:
            count.first_at = time.monotonic()
            self.on_first(kind)


COUNTED: ContextVar[ReceiveTally | None] = ContextVar("COUNTED", default=None)


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


_receive = RTCRtpReceiver.receive
_decoder_worker = rtcrtpreceiver.decoder_worker


async def _counting_receive(self: RTCRtpReceiver, parameters: Any) -> None:
    tally = COUNTED.get()
    if tally is not None and not self._RTCRtpReceiver__started:  # type: ignore[attr-defined]
        self._RTCRtpReceiver__decoder_queue = _CountingQueue(tally, self.track)  # type: ignore[attr-defined]
    await _receive(self, parameters)


def _worker(loop: Any, input_q: Any, output_q: Any, decode_error: Any) -> None:
    if isinstance(input_q, _CountingQueue):
        return  # nothing to decode; the counting queue ends the track itself
    _decoder_worker(loop, input_q, output_q, decode_error)


RTCRtpReceiver.receive = _counting_receive  # type: ignore[method-assign]
rtcrtpreceiver.decoder_worker = _worker
