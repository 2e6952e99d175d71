"""Quality of experience as load bots measure it (agent.media.qoe): the rules on their own, then
real load runs through real aiortc peers, clean and impaired in the bots' send path, showing
each figure move the way the impairment says and only then."""

from __future__ import annotations

import asyncio
import fractions

import av
import numpy as np
import pytest
from aiortc import MediaStreamTrack

from agent.load.config import LoadConfig
from agent.load.runner import run_load
from agent.media.constants import SAMPLE_RATE
from agent.media.encoded import SharedFeed
from agent.media.impair import Impairment
from agent.media.qoe import StreamQoE, mos


def test_the_e_model_gives_a_clean_call_4_4_and_punishes_loss_and_delay():
    clean = mos(20, 0)
    assert 4.35 < clean <= 4.5
    assert mos(20, 5) < clean - 0.3
    assert mos(400, 0) < mos(150, 0) < clean
    assert mos(2000, 50) == 1.0


def test_a_freeze_is_a_gap_past_three_mean_intervals_or_mean_plus_150_ms():
    video = StreamQoE("video", 90_000)
    t = 0.0
    for seq, gap in enumerate([1 / 15] * 10 + [0.2] + [1 / 15] * 5 + [0.5] + [1 / 15] * 5):
        t += gap
        video.packet(seq, 0, True, t)
    assert video.freeze_count == 1  # 0.5 s; 0.2 s is under max(3 x 67, 67 + 150) ms
    assert video.freeze_time == pytest.approx(0.5)


def test_audio_concealment_counts_missing_packets_across_the_wrap():
    audio = StreamQoE("audio", 48_000)
    for seq in [65534, 65535, 1, 2, 3]:  # 0 lost, across the 16-bit wrap
        audio.packet(seq, 0, True, 0.0)
    assert audio.expected == 6
    assert audio.concealed_ratio == pytest.approx(1 / 6)


class _Frames(MediaStreamTrack):
    """These 20 ms audio frames, as fast as they are read, then nothing."""

    kind = "audio"

    def __init__(self, frames: list[av.AudioFrame]) -> None:
        super().__init__()
        self._frames = frames

    async def recv(self) -> av.AudioFrame:
        if not self._frames:
            await asyncio.Event().wait()
        await asyncio.sleep(0)
        return self._frames.pop(0)


def _frame(pts: int, burst_at: int | None = None) -> av.AudioFrame:
    """Silence, or silence then a loud 1 kHz tone from sample `burst_at` on."""
    samples = np.zeros(960, np.int16)
    if burst_at is not None:
        t = np.arange(960 - burst_at) / SAMPLE_RATE
        samples[burst_at:] = (12_000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate, frame.pts = SAMPLE_RATE, pts
    frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
    return frame


async def _heard_at(frames: list[av.AudioFrame]) -> int:
    """Sends `frames` through a shared Opus feed, decodes its packets, and returns the capture
    time (pts) the packets' stamps give the first loud sample."""
    feed = SharedFeed.tone()
    feed.source = _Frames(frames)
    view = feed.subscribe()
    decoder = av.CodecContext.create("opus", "r")
    try:
        for _ in frames:
            packet = await view.recv()
            decoded = np.concatenate([f.to_ndarray().reshape(-1) for f in decoder.decode(packet)])
            loud = np.flatnonzero(np.abs(decoded) > 0.2)
            if loud.size:
                return packet.pts + int(loud[0])
    finally:
        view.stop()
    raise AssertionError("the tone never came out")


@pytest.mark.parametrize("skip", [0, 10], ids=["steady", "after a skip"])
async def test_an_opus_packet_carries_the_capture_time_of_its_first_sample(skip):
    """Opus looks ahead 312 samples: a packet starts in the previous frame's tail (one from
    before the gap when the source skipped frames), not at the frame just fed."""
    pts = [k * 960 for k in range(5)] + [(k + skip) * 960 for k in range(5, 12)]
    frames = [_frame(p) for p in pts]
    frames[4] = _frame(pts[4], burst_at=800)  # the tone starts in the tail before any skip
    frames[5:] = [_frame(p, burst_at=0) for p in pts[5:]]
    heard = await _heard_at(frames)
    assert abs(heard - (pts[4] + 800)) <= 24  # half a millisecond; Opus smears an onset a bit


def qoe(impair: str = "") -> dict:
    config = LoadConfig(
        meetings=1, participants=2, media="av", duration=6, impair=Impairment.parse(impair)
    )
    result = run_load(config, workers=0, quiet=True)
    assert result.summary["success_rate"] == 100.0
    summary = result.summary["qoe"]
    assert summary["streams"] == {"audio": 2, "video": 2}
    return summary


@pytest.fixture(scope="module")
def clean() -> dict:
    return qoe()


@pytest.mark.slow
def test_a_clean_run_shows_no_loss_no_freeze_and_a_good_mos(clean):
    assert clean["freeze_count"] == 0 and clean["freeze_ratio"] == 0
    assert clean["concealed_ratio"]["p95"] < 0.01
    assert clean["mos"]["p5"] >= 4.0
    assert clean["fps_ratio"] > 0.9
    assert clean["e2e_latency_ms"]["p50"] < 100


@pytest.mark.slow
def test_five_percent_loss_shows_as_about_five_percent_and_lowers_the_mos(clean):
    lossy = qoe("loss=5")
    assert 0.01 < lossy["concealed_ratio"]["p50"] < 0.1  # 5% of ~300 packets: sd 1.3%
    assert lossy["mos"]["p50"] < clean["mos"]["p50"] - 0.2


@pytest.mark.slow
def test_200_ms_of_delay_shows_in_the_end_to_end_latency(clean):
    delayed = qoe("delay=200")
    assert delayed["e2e_latency_ms"]["p50"] >= 200  # the delay is a floor: no clock can beat it
    assert delayed["mos"]["p50"] < clean["mos"]["p50"]


@pytest.mark.slow
def test_jitter_larger_than_the_frame_interval_freezes_video():
    jittery = qoe("delay=300,jitter=300")  # a frame every 67 ms, each 0-600 ms late
    assert jittery["freeze_count"] > 0 and jittery["freeze_ratio"] > 0.01


def _video_shown_at(*times: float) -> StreamQoE:
    stream = StreamQoE("video", 90_000)
    for seq, at in enumerate(times):
        stream.packet(seq, 0, True, at)
    return stream


@pytest.mark.parametrize(("gap", "frozen"), [(0.383, False), (0.384, True), (0.3844, True)])
def test_a_freeze_is_told_as_libwebrtc_tells_it(gap, frozen):
    """Nine 100 ms intervals, then `gap`: the mean of the ten, gap included and rounded down, is
    128 ms, so a freeze needs 384 ms or more (three times the mean; `>=`, on whole-ms times)."""
    stream = _video_shown_at(*(i / 10 for i in range(10)), 0.9 + gap)
    assert stream.freeze_count == int(frozen)


def test_no_freeze_is_told_before_five_intervals():
    assert _video_shown_at(0.0, 0.1, 0.2, 0.3, 1.3).freeze_count == 0
    assert _video_shown_at(0.0, 0.1, 0.2, 0.3, 0.4, 1.4).freeze_count == 1
