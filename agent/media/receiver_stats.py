"""aiortc's per-stream receive statistics with RFC 3550's jitter across the RTP timestamp wrap.

aiortc's `StreamStatistics.add` takes the transit difference of two packets as plain integers, so
when the 32-bit RTP timestamp wraps the difference is about 2^32 ticks, the reported jitter jumps
to millions of ms (getStats, the RTCP receiver reports, `room.stats().quality`) and takes seconds
to decay.
Load bots stamp packets with the capture time, so all their streams wrap at the same moment.
`stream_add` is the same method with the difference taken modulo 2^32 as a signed 32-bit value
(RFC 3550 A.8); `agent.aiortc_patches` installs it for every receiver.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_gt


def transit_change(arrival_delta: int, timestamp_delta: int) -> int:
    """|D(i-1, i)| of RFC 3550 6.4.1, in clock ticks: the RTP timestamp is 32 bits, so the
    difference is the signed 32-bit one (a wrap between the two packets is a step of a few ticks,
    not of 2^32)."""
    d = (arrival_delta - timestamp_delta) & 0xFFFFFFFF
    return abs(d - (1 << 32) if d & 0x80000000 else d)


def stream_add(aiortc_add: Callable[[Any, RtpPacket], None]) -> Callable[[Any, RtpPacket], None]:
    """aiortc's `StreamStatistics.add`, line for line, but for the wrapped transit difference."""

    def add(self: Any, packet: RtpPacket) -> None:
        in_order = self.max_seq is None or uint16_gt(packet.sequence_number, self.max_seq)
        self.packets_received += 1
        if self.base_seq is None:
            self.base_seq = packet.sequence_number
        if not in_order:
            return
        arrival = int(time.time() * self._clockrate)
        if self.max_seq is not None and packet.sequence_number < self.max_seq:
            self.cycles += 1 << 16
        self.max_seq = packet.sequence_number
        if packet.timestamp != self._last_timestamp and self.packets_received > 1:
            diff = transit_change(
                arrival - self._last_arrival, packet.timestamp - self._last_timestamp
            )
            self._jitter_q4 += diff - ((self._jitter_q4 + 8) >> 4)
        self._last_arrival = arrival
        self._last_timestamp = packet.timestamp

    return add
