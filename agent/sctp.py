"""aiortc's SCTP under a burst of small messages (a chat flood), fixed; installed by
agent.aiortc_patches for every room.

aiortc put each message in a packet of its own (its congestion window counts user data only), so
2,000 chat messages of 60 bytes left as 2,000 datagrams within a few round trips, answered by
1,000 SACKs: more than the UDP receive buffers on the way hold (coturn's relay socket; ours while
the loop is busy, as asyncio reads one datagram per socket per turn). Consent checks, RTP and the
chunks themselves were dropped with them. Queued messages now go out together, bundled into full
packets (RFC 9260 section 6.10), as browsers send them.

And for each DATA chunk received, aiortc went through every TSN it held out of order, so behind
one lost packet each chunk cost as much as all those before it: 2,000 small chunks blocked the
loop for seconds, reading no socket, which lost more. A chunk now costs the same in any order.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiortc.rtcsctptransport import (
    SCTP_COMMON_HEADER_LENGTH,
    SCTP_DATA_CHUNK_HEADER_LENGTH,
    SCTP_MAX_PACKET_LENGTH,
    USERDATA_MAX_LENGTH,
    WEBRTC_DCEP,
    DataChunk,
    tsn_plus_one,
)
from aiortc.utils import uint32_gt, uint32_gte

Method = Callable[..., Awaitable[None]]

QUEUEING = "_connvo_queueing"
"""Set on a transport while a batch of messages is queued: `_send` does not transmit each one."""


class Bundle:
    """DATA chunks sent as one packet: aiortc's `_send_chunk` writes what `bytes()` gives."""

    def __init__(self, chunks: list[DataChunk]) -> None:
        self.chunks = chunks

    def __bytes__(self) -> bytes:
        return b"".join(bytes(chunk) for chunk in self.chunks)

    def __repr__(self) -> str:
        return f"Bundle({self.chunks})"


def packets(chunks: Iterable[DataChunk]) -> list[list[DataChunk]]:
    """`chunks` in order, in as few packets of aiortc's size as they fit."""
    found: list[list[DataChunk]] = []
    room = 0
    for chunk in chunks:
        size = SCTP_DATA_CHUNK_HEADER_LENGTH + len(chunk.user_data)
        size += -size % 4
        if size > room:
            found.append([])
            room = SCTP_MAX_PACKET_LENGTH - SCTP_COMMON_HEADER_LENGTH
        found[-1].append(chunk)
        room -= size
    return found


def batched_flush(original: Method) -> Method:
    """aiortc's `_data_channel_flush` moves one message at a time, each transmitted alone; this
    queues as many as the congestion window could send, then transmits them together."""

    async def _data_channel_flush(self: Any) -> None:
        if self._association_state != self.State.ESTABLISHED:
            return
        queued = sum(chunk._book_size for chunk in self._outbound_queue)
        setattr(self, QUEUEING, True)
        try:
            while self._data_channel_queue and queued < self._cwnd:
                queued += await _queue(self, *self._data_channel_queue.popleft())
        finally:
            setattr(self, QUEUEING, False)
        await self._transmit()
        await self._transmit_reconfig()  # a stream reset may have waited for these messages

    return _data_channel_flush


async def _queue(self: Any, channel: Any, protocol: int, user_data: bytes) -> int:
    """One message into the outbound queue, as aiortc's flush does; answers its size."""
    if channel.id is None:
        stream_id = self._data_channel_id
        while stream_id in self._data_channels:
            stream_id += 2
        self._data_channels[stream_id] = channel
        channel._setId(stream_id)
    if protocol == WEBRTC_DCEP:
        await self._send(channel.id, protocol, user_data)
        return len(user_data)
    lifetime = channel.maxPacketLifeTime
    await self._send(
        channel.id,
        protocol,
        user_data,
        expiry=time.time() + lifetime / 1000 if lifetime else None,
        max_retransmits=channel.maxRetransmits,
        ordered=channel.ordered,
    )
    channel._addBufferedAmount(-len(user_data))
    return len(user_data)


def bundled_transmit(original: Method) -> Method:
    """aiortc's `_transmit`, with the chunks it sends bundled into full packets: the same
    congestion window, burst limit, retransmissions first, and timers."""

    async def _transmit(self: Any) -> None:
        if getattr(self, QUEUEING, False):
            return  # the batch is transmitted once queued
        if self._forward_tsn_chunk is not None:
            await self._send_chunk(self._forward_tsn_chunk)
            self._forward_tsn_chunk = None
            if not self._t3_handle:
                self._t3_start()
        burst = (2 if self._fast_recovery_exit is not None else 4) * USERDATA_MAX_LENGTH
        cwnd = min(self._flight_size + burst, self._cwnd)
        chunks, room_left = _retransmissions(self, cwnd)
        while room_left and self._outbound_queue and self._flight_size < cwnd:
            chunk = self._outbound_queue.popleft()
            self._sent_queue.append(chunk)
            self._flight_size_increase(chunk)
            chunk._sent_count += 1
            chunk._sent_time = time.time()
            chunks.append(chunk)
            if not self._t3_handle:
                self._t3_start()
        for packet in packets(chunks):
            await self._send_chunk(packet[0] if len(packet) == 1 else Bundle(packet))

    return _transmit


def _retransmissions(self: Any, cwnd: int) -> tuple[list[DataChunk], bool]:
    """The chunks marked for retransmission that the window takes, and whether it has room
    left for new data (aiortc's order: retransmissions first)."""
    chunks: list[DataChunk] = []
    earliest = True
    for chunk in self._sent_queue:
        if chunk._retransmit:
            if self._fast_recovery_transmit:
                self._fast_recovery_transmit = False
            elif self._flight_size >= cwnd:
                return chunks, False
            self._flight_size_increase(chunk)
            chunk._misses = 0
            chunk._retransmit = False
            chunk._sent_count += 1
            chunks.append(chunk)
            if earliest:
                self._t3_restart()  # the earliest outstanding TSN goes again
        earliest = False
    return chunks, True


def linear_mark_received(original: Callable[[Any, int], bool]) -> Callable[[Any, int], bool]:
    """aiortc's `_mark_received` (whether `tsn` is a duplicate), at a constant cost per chunk:
    the TSNs received out of order are only looked at when the cumulative TSN reaches them."""

    def _mark_received(self: Any, tsn: int) -> bool:
        if uint32_gte(self._last_received_tsn, tsn) or tsn in self._sack_misordered:
            self._sack_duplicates.append(tsn)
            return True
        if tsn != tsn_plus_one(self._last_received_tsn):
            self._sack_misordered.add(tsn)
        else:
            while (following := tsn_plus_one(tsn)) in self._sack_misordered:
                self._sack_misordered.remove(following)
                tsn = following
            self._last_received_tsn = tsn
        if self._sack_duplicates:  # reported by the next SACK, as aiortc does
            last = self._last_received_tsn
            self._sack_duplicates = [d for d in self._sack_duplicates if uint32_gt(d, last)]
        return False

    return _mark_received
