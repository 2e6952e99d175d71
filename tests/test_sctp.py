"""aiortc's SCTP under a burst of small chat messages (issue 18), with connvo-agent's patches: two
real aiortc SCTP transports joined in memory, where each packet can be counted or lost."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiortc import RTCDataChannel, RTCDataChannelParameters, rtcsctptransport
from aiortc.rtcsctptransport import DataChunk, RTCSctpTransport

from agent.aiortc_patches import install

BURST = 2000


class Link:
    """Stands in for aiortc's DTLS transport under SCTP: what one end sends reaches the other in
    order, read by one task as aiortc's DTLS loop reads it; `lose` picks packets that never do."""

    def __init__(self, role: str) -> None:
        self._role = role
        self.state = "connected"
        self.other: Link | None = None
        self.receiver: RTCSctpTransport | None = None
        self.sent = 0
        self.lose: Callable[[bytes], bool] = lambda packet: False
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    def _register_data_receiver(self, receiver: RTCSctpTransport) -> None:
        self.receiver = receiver

    def _unregister_data_receiver(self, receiver: RTCSctpTransport) -> None:
        self.receiver = None

    async def _send_data(self, packet: bytes) -> None:
        self.sent += 1
        if not self.lose(packet):
            assert self.other is not None
            self.other._queue.put_nowait(packet)

    async def _read(self) -> None:
        while True:
            packet = await self._queue.get()
            if self.receiver is not None:
                await self.receiver._handle_data(packet)


@asynccontextmanager
async def association() -> AsyncIterator[tuple[RTCSctpTransport, RTCSctpTransport]]:
    """A client and a server transport, associated."""
    install()
    links = Link("client"), Link("server")
    links[0].other, links[1].other = links[1], links[0]
    client, server = RTCSctpTransport(links[0]), RTCSctpTransport(links[1])  # type: ignore[arg-type]
    capabilities = RTCSctpTransport.getCapabilities()
    await server.start(capabilities, client.port)
    await client.start(capabilities, server.port)
    try:
        await until(lambda: client.state == server.state == "connected")
        yield client, server
    finally:
        for end in (client, server):
            await end.stop()
        for link in links:
            link._reader.cancel()


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def message(i: int) -> str:
    """A chat message of the convention, about 60 bytes, as the reported burst sent."""
    return json.dumps({"type": "chat", "id": f"b{i}", "from": "", "text": f"m{i}", "ts": 1})


async def chat_channel(
    client: RTCSctpTransport, server: RTCSctpTransport
) -> tuple[RTCDataChannel, list[str]]:
    """A channel from the client, open, and what the server receives on it."""
    received: list[str] = []
    server.on("datachannel", lambda channel: channel.on("message", received.append))
    channel = RTCDataChannel(client, RTCDataChannelParameters(label="chat"))
    await until(lambda: channel.readyState == "open" and bool(server._data_channels))
    return channel, received


async def test_a_burst_of_small_messages_leaves_in_full_packets():
    """aiortc sent one DATA chunk a packet: 2,000 messages of 60 bytes were 2,000 datagrams within
    a few round trips, more than the UDP buffers on the way hold (coturn's relay socket, the
    receiver's while its loop is busy); consent checks and media were dropped with them."""
    async with association() as (client, server):
        channel, received = await chat_channel(client, server)
        sent_before = client.transport.sent
        for i in range(BURST):
            channel.send(message(i))
        await until(lambda: len(received) == BURST)
        assert received == [message(i) for i in range(BURST)]
        packets = client.transport.sent - sent_before
        wire = sum(16 + len(message(i)) + 3 for i in range(BURST))  # DATA chunks, padded
        assert packets <= 1.5 * wire / rtcsctptransport.SCTP_MAX_PACKET_LENGTH, packets


async def test_a_large_message_still_goes_in_fragments_in_order():
    async with association() as (client, server):
        channel, received = await chat_channel(client, server)
        large = "x" * 200_000
        for text in ("before", large, "after"):
            channel.send(text)
        await until(lambda: len(received) == 3)
        assert received == ["before", large, "after"]


async def test_a_lost_packet_is_sent_again_and_the_rest_waits_for_it():
    async with association() as (client, server):
        channel, received = await chat_channel(client, server)
        lost: list[bytes] = []

        def first(packet: bytes) -> bool:
            lost.append(packet)
            return len(lost) == 1

        client.transport.lose = first
        for i in range(BURST):
            channel.send(message(i))
        await until(lambda: len(received) == BURST)
        assert lost and received == [message(i) for i in range(BURST)]


async def feed(chunks: list[DataChunk], first_late: bool) -> float:
    """Seconds aiortc's receive path takes for `chunks`, 20 to a packet as Chromium bundles them,
    with the first packet arriving last when `first_late` (lost, then sent again)."""
    async with association() as (_, server):
        server._last_received_tsn = chunks[0].tsn - 1
        server._inbound_streams.clear()
        packets = [chunks[i : i + 20] for i in range(0, len(chunks), 20)]
        if first_late:
            packets = packets[1:] + packets[:1]
        started = time.perf_counter()
        for packet in packets:
            for chunk in packet:
                await server._receive_data_chunk(chunk)
            await server._send_sack()
        return time.perf_counter() - started


def chunks(n: int) -> list[DataChunk]:
    made = []
    for i in range(n):
        chunk = DataChunk(flags=rtcsctptransport.SCTP_DATA_FIRST_FRAG | 1)  # and LAST: whole
        chunk.tsn, chunk.stream_id, chunk.stream_seq = 1000 + i, 1, i % 65536
        chunk.protocol, chunk.user_data = 51, message(i).encode()
        made.append(chunk)
    return made


async def test_chunks_behind_a_lost_one_cost_what_chunks_in_order_cost():
    """aiortc went through every TSN received out of order for each chunk: 2,000 small chunks
    behind one lost packet blocked the loop for 1 to 1.5 s here (in order: 10 to 20 ms), during
    which no socket was read. What is left (aiortc's SACK lists the gaps anew for each packet)
    costs tens of ms."""
    in_order = await feed(chunks(BURST), first_late=False)
    behind = await feed(chunks(BURST), first_late=True)
    assert behind < 5 * in_order + 0.25, (behind, in_order)
