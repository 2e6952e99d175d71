"""ICE settings: which local addresses ICE may use, which remote candidates it may try, and the
RTCConfiguration built from the room's iceServers.

aioice gathers host candidates from every interface (and never from 127.0.0.1) through one
module-level function. `agent.aiortc_patches` replaces it with `host_addresses`, which reads the
calling task's `ICE_ADDRESSES` context variable, so each room (each bot, even many in one process)
gathers only from the addresses it was given, and loopback works.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal

from aiortc import RTCConfiguration, RTCIceServer
from aiortc.rtcconfiguration import RTCBundlePolicy, RTCIceTransportPolicy

from signaling.models import IceServer

IcePolicy = Literal["all", "relay"]

ICE_ADDRESSES: ContextVar[tuple[str, ...] | None] = ContextVar("ICE_ADDRESSES", default=None)
HostAddresses = Callable[[bool, bool], list[str]]


def host_addresses(system: HostAddresses) -> HostAddresses:
    """aioice's `get_host_addresses`, narrowed to the calling room's ICE_ADDRESSES when set."""

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        allowed = ICE_ADDRESSES.get()
        if allowed is None:
            return system(use_ipv4, use_ipv6)
        return [a for a in allowed if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    return get_host_addresses


@dataclass(frozen=True)
class IceOptions:
    """`addresses`: the only local addresses ICE gathers from (None: every interface).
    `policy`: "relay" uses TURN relays only."""

    addresses: tuple[str, ...] | None = None
    policy: IcePolicy = "all"
    extra_servers: Sequence[IceServer] = field(default_factory=tuple)

    @classmethod
    def loopback(cls, policy: IcePolicy = "all") -> IceOptions:
        return cls(addresses=("127.0.0.1",), policy=policy)

    @property
    def loopback_only(self) -> bool:
        return self.addresses is not None and all(_is_loopback(a) for a in self.addresses)

    def configuration(self, servers: Sequence[IceServer] | None) -> RTCConfiguration:
        """Always an explicit list: aiortc falls back to a public STUN server on None.
        max-bundle: with aiortc's default (balanced) a second video m-line keeps a transport
        that bundling never connects, and the screen share sends nothing."""
        ice_servers = [
            RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
            for s in [*(servers or []), *self.extra_servers]
        ]
        policy = RTCIceTransportPolicy(self.policy)
        return RTCConfiguration(
            iceServers=ice_servers,
            iceTransportPolicy=policy,
            bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
        )

    def accepts_remote(self, host: str) -> bool:
        """Never resolve mDNS names (multicast); from loopback, try only loopback peers."""
        if host.endswith(".local"):
            return False
        return not self.loopback_only or _is_loopback(host)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) \d+", re.IGNORECASE)


def candidate_host(candidate: str) -> str | None:
    """The connection address of an SDP candidate line (with or without `a=`)."""
    line = candidate if candidate.startswith("a=") else "a=" + candidate
    match = _CANDIDATE.match(line)
    return match.group(1) if match else None


def filter_sdp(sdp: str, options: IceOptions) -> str:
    """Drop candidate lines that ICE must not try (see `IceOptions.accepts_remote`)."""
    kept = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            host = candidate_host(line)
            if host is None or not options.accepts_remote(host):
                continue
        kept.append(line)
    return "\r\n".join(kept) + "\r\n"
