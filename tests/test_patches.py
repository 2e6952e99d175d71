"""aiortc / aioice internals that connvo-agent patches: all there in the installed versions, and a
missing one is a clear start-up error naming it and the versions."""

from __future__ import annotations

import contextvars
import importlib.metadata
import time

import aioice.ice
import pytest
from aiortc import RTCRtpSender, rtcrtpreceiver
from aiortc.rtp import RtpPacket

from agent.aiortc_patches import Patch, UnsupportedAiortc, check, install, missing
from agent.ice import ICE_ADDRESSES


def test_the_installed_aiortc_and_aioice_have_every_name_we_patch_or_use():
    assert missing() == []
    install()
    install()  # idempotent: the second call wraps nothing again
    assert missing() == []  # the check sees through the installed patches to aiortc's own code
    wrapped = aioice.ice.get_host_addresses.__wrapped__  # type: ignore[attr-defined]
    assert not hasattr(wrapped, "__wrapped__")
    assert RTCRtpSender._run_rtp.__wrapped__.__module__ == "aiortc.rtcrtpsender"  # type: ignore[attr-defined]
    assert rtcrtpreceiver.decoder_worker.__module__ == "agent.media.counting"


def test_installed_host_addresses_follow_the_room_context():
    install()

    def gathered(addresses: tuple[str, ...] | None) -> list[str]:
        ICE_ADDRESSES.set(addresses)
        return aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True)

    run = contextvars.copy_context().run
    assert run(gathered, ("127.0.0.1", "::1")) == ["127.0.0.1", "::1"]
    assert "127.0.0.1" not in run(gathered, None)  # aioice's own lookup skips loopback


class Throwaway:
    """Stands in for an aiortc class that lost a private attribute: aiortc's own parts cannot be
    removed for real, so this legitimate fake shows the check telling present from missing."""

    def __init__(self) -> None:
        self.__kept = 1


def test_a_missing_private_name_is_named_with_the_installed_versions():
    throwaway = f"{__name__}:Throwaway"
    assert missing((), {throwaway: ("_Throwaway__kept",)}) == []
    used = {
        throwaway: ("_Throwaway__kept", "_Throwaway__gone"),
        "aiortc.rtcrtpsender:RTCRtpSender": ("_RTCRtpSender__track", "_RTCRtpSender__gone"),
        "aiortc.clock": ("current_ntp_time", "gone"),
        "aiortc.gone": ("anything",),
    }
    with pytest.raises(UnsupportedAiortc) as raised:
        check((), used)
    message = str(raised.value)
    assert raised.value.problems == [
        f"{throwaway}._Throwaway__gone is missing",
        "aiortc.rtcrtpsender:RTCRtpSender._RTCRtpSender__gone is missing",
        "aiortc.clock:gone is missing",
        "aiortc.gone:anything is missing",
    ]
    assert f"aiortc {importlib.metadata.version('aiortc')}" in message
    assert f"aioice {importlib.metadata.version('aioice')}" in message
    assert "\n" not in message


def test_a_changed_signature_is_reported():
    """aiortc 1.14 and 1.15 start decoder_worker with three arguments, 1.16 with four: a
    replacement written for one would break every decoder thread on the other."""
    older = Patch("aiortc.rtcrtpreceiver:decoder_worker", ("loop", "input_q", "output_q"), print)
    gone = Patch("aiortc.rtcrtpsender:RTCRtpSender._run_rtp_gone", ("self",), print)
    assert missing((older, gone), {}) == [
        "aiortc.rtcrtpreceiver:decoder_worker takes (loop, input_q, output_q, decode_error), "
        "not the expected (loop, input_q, output_q)",
        "aiortc.rtcrtpsender:RTCRtpSender._run_rtp_gone is missing",
    ]


def test_jitter_stays_near_zero_across_the_rtp_timestamp_wrap(monkeypatch):
    """Packets every 20 ms (960 ticks at 48 kHz) whose timestamps cross 2^32 (and sequence
    numbers 2^16): aiortc's own arithmetic reads the wrap as a transit change of ~2^32 ticks
    (jitter ~5.6 million ms)."""
    install()
    clock = [1_000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    stats = rtcrtpreceiver.StreamStatistics(48_000)
    jitters = []
    for n in range(100):
        stats.add(
            RtpPacket(
                sequence_number=(65_500 + n) % 65_536,
                timestamp=(2**32 - 50 * 960 + n * 960) % 2**32,
            )
        )
        jitters.append(stats.jitter)
        clock[0] += 0.020
    assert max(jitters) <= 1
    assert stats.packets_received == 100 and stats.packets_lost == 0
