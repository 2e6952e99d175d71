"""Connection quality from aiortc's getStats, in the units monitorConnectionQuality expects:
bitrate in bits/s, packet loss in percent, RTT and jitter in ms."""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiortc import RTCPeerConnection

from agent.media.constants import SAMPLE_RATE, VIDEO_CLOCK

CLOCK_RATES = {"audio": SAMPLE_RATE, "video": VIDEO_CLOCK}


@dataclass(frozen=True)
class Sample:
    at: float
    bytes_received: int
    packets_received: int
    packets_lost: int
    rtt_ms: float | None
    jitter_ms: float


@dataclass(frozen=True)
class LinkQuality:
    bitrate: float
    packet_loss: float
    rtt_ms: float
    jitter_ms: float

    def as_stats(self) -> dict[str, float]:
        return {
            "bitrate": round(self.bitrate),
            "packetLoss": round(self.packet_loss, 3),
            "latency": round(self.rtt_ms, 1),
            "jitter": round(self.jitter_ms, 1),
        }


async def sample(pc: RTCPeerConnection) -> Sample:
    report = await pc.getStats()
    received = lost = 0
    jitter = 0.0
    rtts: list[float] = []
    for stat in report.values():
        if stat.type == "inbound-rtp":
            received += stat.packetsReceived
            lost += max(0, stat.packetsLost)
            jitter = max(jitter, 1000 * stat.jitter / CLOCK_RATES.get(stat.kind, VIDEO_CLOCK))
        elif stat.type == "remote-inbound-rtp" and stat.roundTripTime is not None:
            rtts.append(stat.roundTripTime * 1000)
    transport_bytes = sum(s.bytesReceived for s in report.values() if s.type == "transport")
    return Sample(
        at=time.monotonic(),
        bytes_received=transport_bytes,
        packets_received=received,
        packets_lost=lost,
        rtt_ms=max(rtts) if rtts else None,
        jitter_ms=jitter,
    )


def between(before: Sample, after: Sample) -> LinkQuality:
    elapsed = max(after.at - before.at, 1e-3)
    received = after.packets_received - before.packets_received
    lost = after.packets_lost - before.packets_lost
    total = received + lost
    return LinkQuality(
        bitrate=8 * (after.bytes_received - before.bytes_received) / elapsed,
        packet_loss=100 * lost / total if total > 0 else 0.0,
        rtt_ms=after.rtt_ms or 0.0,
        jitter_ms=after.jitter_ms,
    )


def worst(qualities: list[LinkQuality]) -> LinkQuality:
    """One figure for the session: total bitrate, the worst of everything else."""
    return LinkQuality(
        bitrate=sum(q.bitrate for q in qualities),
        packet_loss=max(q.packet_loss for q in qualities),
        rtt_ms=max(q.rtt_ms for q in qualities),
        jitter_ms=max(q.jitter_ms for q in qualities),
    )
