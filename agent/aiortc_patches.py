"""The one place that replaces aiortc and aioice internals: `install()` checks, then patches.

What connvo-agent needs here has no public hook, so private functions are replaced (the
replacement bodies live with their domain logic; each patch below says why the public API cannot
do it):

- `agent.ice`: ICE gathers host candidates only from the room's own addresses (loopback too).
- `agent.media.counting`: receivers of `JoinRequest(decode=False)` rooms count, never decode.
- `agent.media.passthrough`: receivers of `JoinRequest(encoded=True)` rooms hand on encoded
  frames, never decode, and ask for keyframes while a video chain is broken.
- `agent.media.encoded`: senders of shared pre-encoded packets run a leaner RTP loop.
- `agent.chat`: a hostile data-channel message cannot raise inside aiortc's transport loop.
- `agent.media.receiver_stats`: RTP jitter survives the 32-bit timestamp wrap (every receiver).
- `agent.sctp`: a burst of small data-channel messages leaves in full packets, and chunks received
  behind a lost one cost no more than in order (every connection).

Every replacement but the bug fixes for every room (jitter, SCTP) falls back to aiortc's own
function unless a per-room context variable or the sender's track says otherwise, so patched and
plain rooms share a process. Private names change between releases without notice: before patching,
`install()` checks every private name the replacements call, read or write, and refuses to start
(`UnsupportedAiortc`, naming the missing names and the installed versions) rather than fail deep in
a media call. pyproject.toml pins the aiortc and aioice versions these checks were made against.

Call `install()` before the first RTCPeerConnection: `Room.__init__` does.
"""

from __future__ import annotations

import dis
import functools
import importlib
import importlib.metadata
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import CodeType
from typing import Any

from agent import chat, ice, sctp
from agent.errors import AgentError
from agent.media import counting, encoded, passthrough, receiver_stats


class UnsupportedAiortc(AgentError):
    """The installed aiortc / aioice lack a private name connvo-agent patches or uses."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            f"{versions()} lack what connvo-agent patches: {'; '.join(problems)}. "
            "Install the aiortc and aioice versions pyproject.toml pins"
        )


@dataclass(frozen=True)
class Patch:
    target: str
    """`module:qualname` of the function replaced."""
    params: tuple[str, ...]
    """Its parameters, which the replacement must take as they are (aiortc passes keywords)."""
    make: Callable[[Any], Any]
    """Builds the replacement from aiortc's own function, which it falls back to."""


def _both(outer: Callable[[Any], Any], inner: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Two replacements of one function: `outer` falls back to `inner`, which falls back to
    aiortc's own."""
    return lambda original: outer(inner(original))


PATCHES = (
    # aioice reads no address list from aiortc's public RTCConfiguration; it gathers from every
    # interface but 127.0.0.1 through this module-level function.
    Patch("aioice.ice:get_host_addresses", ("use_ipv4", "use_ipv6"), ice.host_addresses),
    # aiortc has no receiver option to skip depayloading or decoding: its decoder queue and
    # thread are made and started inside receive().
    Patch(
        "aiortc.rtcrtpreceiver:RTCRtpReceiver.receive",
        ("self", "parameters"),
        _both(counting.counting_receive, passthrough.encoded_receive),
    ),
    # Every RTP packet goes through this method (estimator, NACKs, jitter buffer); no hook, and
    # no public way to ask the sender for a keyframe.
    Patch(
        "aiortc.rtcrtpreceiver:RTCRtpReceiver._handle_rtp_packet",
        ("self", "packet", "arrival_time_ms"),
        _both(counting.counting_rtp, passthrough.keyframe_rtp),
    ),
    # receive() starts this module-level function as the decoder thread unconditionally.
    Patch(
        "aiortc.rtcrtpreceiver:decoder_worker",
        ("loop", "input_q", "output_q", "decode_error"),
        _both(counting.counting_worker, passthrough.handoff_worker),
    ),
    # The jitter buffer's verdict that lost packets are gone for good is a local variable of
    # _handle_rtp_packet; this call is the only trace of it.
    Patch(
        "aiortc.rtcrtpreceiver:RTCRtpReceiver._send_rtcp_pli",
        ("self", "media_ssrc"),
        passthrough.noting_pli,
    ),
    # send() starts this loop; aiortc has no public way to send already packetized frames.
    Patch("aiortc.rtcrtpsender:RTCRtpSender._run_rtp", ("self", "codec"), encoded.lean_run_rtp),
    # aiortc decodes string messages (and parses channel opens) inside its SCTP receive path,
    # where an exception ends the connection; no hook runs before it.
    Patch(
        "aiortc.rtcsctptransport:RTCSctpTransport._data_channel_receive",
        ("self", "stream_id", "pp_id", "data"),
        chat.guarded_receive,
    ),
    # aiortc's jitter ignores the RTP timestamp wrap (RFC 3550 A.8); the arithmetic sits in the
    # middle of this method, which both aiortc's receiver and agent.media.counting call.
    Patch(
        "aiortc.rtcrtpreceiver:StreamStatistics.add",
        ("self", "packet"),
        receiver_stats.stream_add,
    ),
    # aiortc bundles no chunks: its flush moves one message at a time and transmits each, and
    # its transmit sends one chunk a packet; both are private methods, with no option.
    Patch(
        "aiortc.rtcsctptransport:RTCSctpTransport._data_channel_flush",
        ("self",),
        sctp.batched_flush,
    ),
    Patch("aiortc.rtcsctptransport:RTCSctpTransport._transmit", ("self",), sctp.bundled_transmit),
    # Called for every DATA chunk received; the bookkeeping is all inside it.
    Patch(
        "aiortc.rtcsctptransport:RTCSctpTransport._mark_received",
        ("self", "tsn"),
        sctp.linear_mark_received,
    ),
)

USED: Mapping[str, tuple[str, ...]] = {
    # agent.media.counting
    "aiortc.rtcrtpreceiver:RTCRtpReceiver": (
        "_enabled",
        "_RTCRtpReceiver__started",
        "_RTCRtpReceiver__decoder_queue",
        "_RTCRtpReceiver__remote_streams",
        "_RTCRtpReceiver__codecs",
    ),
    "aiortc.rtcrtpreceiver:RemoteStreamTrack": ("_queue",),  # and agent.media.passthrough
    "aiortc.rtcrtpreceiver:StreamStatistics": (
        "add",
        # agent.media.receiver_stats
        "base_seq",
        "max_seq",
        "cycles",
        "packets_received",
        "_clockrate",
        "_jitter_q4",
        "_last_arrival",
        "_last_timestamp",
    ),
    "aiortc.utils": ("uint16_gt", "uint32_gt", "uint32_gte"),  # uint32: agent.sctp
    "aiortc.codecs": ("is_rtx", "get_encoder"),  # get_encoder: agent.media.encoded
    # agent.media.encoded
    "aiortc.rtcrtpsender:RTCRtpSender": (
        "_enabled",
        "_ssrc",
        "_RTCRtpSender__track",
        "_RTCRtpSender__encoder",
        "_RTCRtpSender__mid",
        "_RTCRtpSender__rtp_started",
        "_RTCRtpSender__rtp_exited",
        "_RTCRtpSender__rtp_header_extensions_map",
        "_RTCRtpSender__ntp_timestamp",
        "_RTCRtpSender__rtp_timestamp",
        "_RTCRtpSender__octet_count",
        "_RTCRtpSender__packet_count",
    ),
    "aiortc.rtcdtlstransport:RTCDtlsTransport": ("_send_rtp",),
    "aiortc.codecs.base:Encoder": ("pack",),
    "aiortc.rtp:RtpPacket": ("serialize",),
    "aiortc.rtp:HeaderExtensions": ("abs_send_time", "mid"),
    "aiortc.clock": ("current_ntp_time",),
    # agent.chat, agent.sctp
    "aiortc.rtcsctptransport:RTCSctpTransport": (
        "_data_channels",
        "State",
        "_association_state",
        "_cwnd",
        "_data_channel_id",
        "_data_channel_queue",
        "_fast_recovery_exit",
        "_fast_recovery_transmit",
        "_flight_size",
        "_flight_size_increase",
        "_forward_tsn_chunk",
        "_last_received_tsn",
        "_outbound_queue",
        "_sack_duplicates",
        "_sack_misordered",
        "_send",
        "_send_chunk",
        "_sent_queue",
        "_t3_handle",
        "_t3_restart",
        "_t3_start",
        "_transmit_reconfig",
    ),
    "aiortc.rtcsctptransport:DataChunk": (
        "_book_size",
        "_misses",
        "_retransmit",
        "_sent_count",
        "_sent_time",
    ),
    "aiortc.rtcsctptransport": (
        "WEBRTC_STRING",
        "WEBRTC_DCEP",
        "SCTP_COMMON_HEADER_LENGTH",
        "SCTP_DATA_CHUNK_HEADER_LENGTH",
        "SCTP_MAX_PACKET_LENGTH",
        "USERDATA_MAX_LENGTH",
        "tsn_plus_one",
    ),
    "aiortc.rtcdatachannel:RTCDataChannel": ("_addBufferedAmount", "_setId"),
}
"""Private names the replacements read or write, per module or `module:Class`. A class's name
may be an instance attribute its own code assigns (`self.__track` is `_RTCRtpSender__track`) or
declares (DataChunk's annotations)."""

_installed = False


def install() -> None:
    """Check, then apply every patch; once per process (later calls do nothing)."""
    global _installed
    if _installed:
        return
    check()
    for patch in PATCHES:
        owner, name = _owner(patch.target)
        original = getattr(owner, name)
        replacement = patch.make(original)
        functools.update_wrapper(replacement, original, assigned=(), updated=())  # __wrapped__
        setattr(owner, name, replacement)
    _installed = True


def check(patches: Iterable[Patch] = PATCHES, used: Mapping[str, tuple[str, ...]] = USED) -> None:
    """Raise UnsupportedAiortc naming every missing name or changed signature."""
    if problems := missing(patches, used):
        raise UnsupportedAiortc(problems)


def missing(
    patches: Iterable[Patch] = PATCHES, used: Mapping[str, tuple[str, ...]] = USED
) -> list[str]:
    """What the installed aiortc / aioice lack, one text per name (empty: all there)."""
    problems = []
    for patch in patches:
        if not _present(patch.target):
            problems.append(f"{patch.target} is missing")
            continue
        original = getattr(*_owner(patch.target))
        params = tuple(inspect.signature(original).parameters)  # follows __wrapped__ once patched
        if params != patch.params:
            problems.append(
                f"{patch.target} takes ({', '.join(params)}), not the expected "
                f"({', '.join(patch.params)})"
            )
    for owner, names in used.items():
        sep = "." if ":" in owner else ":"
        problems += [f"{owner}{sep}{n} is missing" for n in names if not _present(owner + sep + n)]
    return problems


def versions() -> str:
    """The installed aiortc and aioice, e.g. "aiortc 1.16.0, aioice 0.13.0"."""
    found = []
    for dist in ("aiortc", "aioice"):
        try:
            found.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{dist} (version unknown)")
    return ", ".join(found)


def _owner(target: str) -> tuple[Any, str]:
    """The object holding the last name of `module:qualname`, and that name."""
    module, _, qualname = target.partition(":")
    owner: Any = importlib.import_module(module)
    *path, name = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    return owner, name


def _present(target: str) -> bool:
    """Whether `module:qualname` exists; on a class, a name its own code assigns to instances or
    declares counts (aiortc makes most of its state in __init__, not on the class)."""
    try:
        owner, name = _owner(target)
    except (ImportError, AttributeError):
        return False
    if hasattr(owner, name):
        return True
    declared = getattr(owner, "__annotations__", {})
    return isinstance(owner, type) and (name in _assigned(owner) or name in declared)


@functools.cache
def _assigned(cls: type) -> frozenset[str]:
    """Attribute names the code of `cls` and its bases assigns (aiortc's own, not our patches)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        for value in vars(klass).values():
            func = inspect.unwrap(getattr(value, "__func__", value))
            code = getattr(func, "__code__", None)
            if isinstance(code, CodeType):
                names |= _stores(code)
    return frozenset(names)


def _stores(code: CodeType) -> set[str]:
    names = {i.argval for i in dis.get_instructions(code) if i.opname == "STORE_ATTR"}
    for const in code.co_consts:
        if isinstance(const, CodeType):
            names |= _stores(const)
    return names
