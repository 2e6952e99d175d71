"""Recording without transcoding (`--format mkv`): the file writer fed real VP8, H.264 and Opus
packets (encoded here with av, as a sender would), and the recorder against real peers: an
H.264 sender, and a hostile one."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import aiortc.codecs
import av
import numpy as np
import pytest
from aiortc import MediaStreamTrack
from test_recorder import (
    LOUD,
    close_to,
    decode,
    files_of,
    present,
    recorder_room,
    rms,
    video_codec,
)
from test_recorder import speech as speech  # the fixture: espeak-ng speech, made once
from test_room import room, until

from agent.media.bitstream import is_keyframe, picture_size
from agent.media.passthrough import EncodedFrame, _Handoff
from agent.media.sources import Outgoing
from agent.workers.matroska import MkvFile
from agent.workers.recorder import Recorder

FPS = 15


def video_packets(codec: str, seconds: float, gop: int = FPS) -> list[bytes]:
    """A moving pattern, encoded as a WebRTC sender would: a keyframe every `gop` frames."""
    name, options = {
        "VP8": ("libvpx", {"deadline": "realtime", "lag-in-frames": "0"}),
        "H264": ("libx264", {"preset": "ultrafast", "tune": "zerolatency"}),
    }[codec]
    encoder = av.CodecContext.create(name, "w")
    encoder.width, encoder.height, encoder.pix_fmt = 320, 240, "yuv420p"
    encoder.time_base = fractions.Fraction(1, 90000)
    encoder.gop_size = gop
    encoder.options = options
    bars = np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))
    packets = []
    for index in range(round(seconds * FPS)):
        rgb = np.repeat(np.roll(bars, index * 5, axis=1)[:, :, None], 3, axis=2)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = index * 90000 // FPS, encoder.time_base
        packets.append(b"".join(bytes(p) for p in encoder.encode(frame)))
    return packets


def opus_packets(seconds: float) -> list[bytes]:
    """A 440 Hz tone in 20 ms Opus packets."""
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 48000, "mono", "s16"
    encoder.time_base = fractions.Fraction(1, 48000)
    packets: list[bytes] = []
    for index in range(round(seconds * 50) + 1):
        t = (index * 960 + np.arange(960)) / 48000
        pcm = (16000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48000, index * 960
        packets += [bytes(p) for p in encoder.encode(frame)]
    return packets


def packets_of(path: Path) -> list[tuple[str, float, bool]]:
    """Each packet's stream type, time and keyframe flag, in file order."""
    with av.open(str(path)) as container:
        return [
            (p.stream.type, float(p.pts * p.time_base), p.is_keyframe)
            for p in container.demux()
            if p.size
        ]


async def test_the_first_video_is_a_keyframe_gaps_stay_gaps_and_a_cut_file_decodes(tmp_path):
    """3 s of VP8 + Opus, 2 s of nothing (a stalled peer), 2.5 s more; the stream starts without
    its keyframe and loses its chain once: the frames no decoder could show are dropped and
    counted. The file, copied while still open (what a SIGKILL leaves), decodes to the copy."""
    video, audio = video_packets("VP8", 7.5), opus_packets(7.5)
    started = time.monotonic()  # arrivals up to 7.5 s ahead: the header waits for a keyframe
    file = MkvFile(tmp_path / "p.mkv", started, "u", "s", frozenset({"audio", "video"}))
    gap = (3.0, 5.0)  # the sender stalled, and resumes with a keyframe
    broken = {*range(1, FPS), *range(5 * FPS + 3, 6 * FPS)}  # the start; a loss at 5.2 s
    for index, data in enumerate(video):
        at = index / FPS
        if gap[0] <= at < gap[1] or index == 0:
            continue
        frame = EncodedFrame(
            "VP8", data, index * 6000, 90000, is_keyframe("VP8", data), index in broken
        )
        file.put("video", frame, started + at)
        for n in range(index * 50 // FPS, (index + 1) * 50 // FPS):
            if not gap[0] <= n / 50 < gap[1]:
                file.put("audio", EncodedFrame("opus", audio[n], n * 960, 48000), started + n / 50)
    await until(lambda: file.duration > 7.3, 10)
    await asyncio.sleep(0.3)  # the muxer has had every packet; the last cluster is still open
    shutil.copy(file.path, tmp_path / "cut.webm")
    await asyncio.to_thread(file.finish)

    assert file.path.name == "p.webm" and file.format == "webm" and file.complete
    assert file.before_keyframe == len(broken) and file.dropped == {"audio": 0, "video": 0}
    assert file.video == {"codec": "VP8", "width": 320, "height": 240}
    assert file.describe()["beforeKeyframe"] == len(broken)
    packets = packets_of(file.path)
    first = next(p for p in packets if p[0] == "video")
    assert first[2] and first[1] == pytest.approx(1, abs=0.01)
    times = [at for kind, at, _ in packets if kind == "audio"]
    assert max(np.diff(times)) == pytest.approx(2.02, abs=0.005)  # the gap, kept
    sound, video_frames = decode(file.path)
    assert video_frames == len(video) - 1 - len(broken) - 2 * FPS
    assert len(sound) / 48000 == pytest.approx(5.4, abs=0.01) and rms(sound) > 0.1
    cut, cut_frames = decode(tmp_path / "cut.webm")
    print(f"cut: {len(cut) / 48000:.2f} s of 5.4 s of audio, {cut_frames}/{video_frames} frames")
    assert 4 <= len(cut) / 48000 < 5.4 and cut_frames > 0.6 * video_frames


async def test_a_camera_turned_on_late_still_reaches_the_file(tmp_path):
    """No video for the first 6 s: the header stops waiting (VP8 assumed, size unknown) and the
    camera's frames, when they come, are written from their first keyframe."""
    video, audio = video_packets("VP8", 2), opus_packets(8)
    started = time.monotonic() - 60  # arrivals in the past: the header's wait is over at once
    file = MkvFile(tmp_path / "late.mkv", started, "u", "s", frozenset({"audio", "video"}))
    for n, data in enumerate(audio[:300]):
        file.put("audio", EncodedFrame("opus", data, n * 960, 48000), started + n / 50)
    await asyncio.sleep(0.5)
    for index, data in enumerate(video):
        key = is_keyframe("VP8", data)
        frame = EncodedFrame("VP8", data, index * 6000, 90000, key)
        file.put("video", frame, started + 6 + index / FPS)
    await asyncio.to_thread(file.finish)
    assert file.video == {"codec": "VP8", "width": None, "height": None}
    assert file.dropped == {"audio": 0, "video": 0} and file.before_keyframe == 0
    assert decode(file.path)[1] == len(video) and file.path.suffix == ".webm"


async def test_h264_is_copied_with_its_parameter_sets_into_mkv(tmp_path):
    video = video_packets("H264", 3, gop=30)
    started = time.monotonic()
    file = MkvFile(tmp_path / "h.mkv", started, "u", "s", frozenset({"video"}))
    for index, data in enumerate(video):
        key = is_keyframe("H264", data)
        file.put(
            "video", EncodedFrame("H264", data, index * 6000, 90000, key), started + index / 15
        )
    await asyncio.to_thread(file.finish)
    assert file.path.name == "h.mkv"
    assert file.video == {"codec": "H264", "width": 320, "height": 240}
    assert video_codec(file.path) == "h264" and decode(file.path)[1] == len(video)


def test_a_video_stream_is_broken_until_a_keyframe_and_asks_for_one_every_half_second():
    """The receiver's side (`_Handoff`, aiortc's decoder queue in an encoded room): frames before
    the first keyframe and after a loss (aiortc's own PLI: `lost`) are marked broken."""
    track = SimpleNamespace(kind="video", _queue=asyncio.Queue())
    handoff = _Handoff(track)
    vp8 = SimpleNamespace(name="VP8", clockRate=90000)
    packets = video_packets("VP8", 1)  # a keyframe, then 14 frames that follow it
    assert handoff.ask(100.0) and not handoff.ask(100.4) and handoff.ask(100.5)
    for index in (1, 0, 1, 2):
        handoff.put((vp8, SimpleNamespace(data=packets[index], timestamp=index * 6000)))
    handoff.lost()
    handoff.put((vp8, SimpleNamespace(data=packets[3], timestamp=18000)))
    handoff.put(None)
    frames = [track._queue.get_nowait() for _ in range(6)]
    assert [(f.keyframe, f.broken) for f in frames[:5]] == [
        (False, True),
        (True, False),
        (False, False),
        (False, False),
        (False, True),
    ]
    assert frames[-1] is None and handoff.ask(200.0) and frames[1].time == 0
    audio = _Handoff(SimpleNamespace(kind="audio", _queue=asyncio.Queue()))
    audio.lost()
    assert not audio.broken and not audio.ask(0.0)


@pytest.mark.parametrize("profile", ["baseline", "high"])
@pytest.mark.parametrize("size", [(640, 360), (320, 240), (1282, 722)])
def test_the_picture_size_is_read_from_the_bitstream(size, profile):
    width, height = size
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base = fractions.Fraction(1, 90000)
    encoder.options = {"profile": profile, "tune": "zerolatency"}
    frame = av.VideoFrame(width, height, "yuv420p")
    frame.pts = 0
    data = b"".join(bytes(p) for p in [*encoder.encode(frame), *encoder.encode(None)])
    assert picture_size("H264", data) == size
    assert picture_size("VP8", video_packets("VP8", 0.1)[0]) == (320, 240)
    for junk in (bytes(range(256)) * 4000, b"\xff" * 64, b"\x00\x00\x01" * 9, b""):
        size = picture_size("H264", b"\x00\x00\x00\x01\x67" + junk)  # a hostile SPS
        assert size is None or all(0 < n <= 16384 for n in size)
    assert picture_size("VP8", b"\x00" * 9) is None


@pytest.fixture
def h264_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Senders of this process offer H.264 before VP8 (as Safari does): aiortc reads its codec
    table at each offer, and the answer follows the offer's order."""
    table = aiortc.codecs.CODECS["video"]
    monkeypatch.setitem(aiortc.codecs.CODECS, "video", [*table[2:], *table[:2]])


@pytest.mark.speech
@pytest.mark.parametrize("format", ["mkv", "ts"])
async def test_an_h264_sender_is_recorded_as_it_sent(backend, speech, tmp_path, format, h264_first):
    meeting = await backend.meeting(2, recording=True)
    recorder = Recorder(recorder_room(meeting, 1, format), tmp_path, format=format)
    task = asyncio.create_task(recorder.run())
    session, presence = await present(meeting, 0, speech, 4.0)
    user = meeting[0].user_id
    await until(lambda: any(f["complete"] for f in files_of(tmp_path, user)), 15)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    (entry,) = files_of(tmp_path, user)
    assert entry["sessionId"] == session and entry["file"].endswith(f".{format}")
    assert entry["video"]["codec"] == ("H264" if format == "mkv" else "h264")
    assert video_codec(tmp_path / entry["file"]) == "h264"
    sound, video_frames = decode(tmp_path / entry["file"])
    assert close_to(len(sound) / 48000, presence) and rms(sound) > LOUD
    assert video_frames > 10 * presence


class Garbage(MediaStreamTrack):
    """A hostile sender's media: random bytes for frames, some dressed as VP8 keyframes of
    16383x16383, sizes from 1 byte to 1 MB, timestamps jumping anywhere in the 32-bit range."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._rng = np.random.default_rng(21)

    async def recv(self) -> av.Packet:
        await asyncio.sleep(1 / 15 if self.kind == "video" else 0.02)
        rng = self._rng
        size = int(rng.choice([1, 20, 900, 30_000, 300_000, 1_000_000], p=[*[0.19] * 5, 0.05]))
        if self.kind == "audio":
            size = min(size, 1200)
        data = rng.bytes(size)
        if self.kind == "video" and rng.random() < 0.3:
            data = b"\x10\x02\x00\x9d\x01\x2a\xff\x3f\xff\x3f" + data
        packet = av.Packet(data)
        packet.pts = int(rng.integers(0, 2**32))
        packet.time_base = fractions.Fraction(1, 90000 if self.kind == "video" else 48000)
        return packet


class GarbageOutgoing(Outgoing):
    """Each peer gets its own Garbage tracks (aiortc sends an av.Packet as it is)."""

    def relayed(self, source: MediaStreamTrack | None) -> MediaStreamTrack | None:
        return None if source is None else Garbage(source.kind)


@pytest.mark.speech
@pytest.mark.parametrize("format", ["mkv", "ts"])
async def test_a_hostile_sender_neither_stops_the_recorder_nor_costs_others_their_files(
    backend, speech, tmp_path, format
):
    meeting = await backend.meeting(3, recording=True)
    recorder = Recorder(recorder_room(meeting, 1, format), tmp_path, format=format)
    task = asyncio.create_task(recorder.run())
    garbage = GarbageOutgoing(audio=Garbage("audio"), video=Garbage("video"))
    hostile = room(meeting, 2, outgoing=garbage)
    async with hostile:
        await until(lambda: hostile.stats().connected_at is not None)
        _, presence = await present(meeting, 0, speech, 5.0)
    await until(lambda: all(f["complete"] for f in files_of(tmp_path, meeting[0].user_id)), 15)
    assert not task.done()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    (speaking,) = files_of(tmp_path, meeting[0].user_id)
    sound, video_frames = decode(tmp_path / speaking["file"])
    assert close_to(len(sound) / 48000, presence) and rms(sound) > LOUD
    assert video_frames > 10 * presence
    (entry,) = files_of(tmp_path, meeting[2].user_id)
    print(entry)
    assert entry["complete"]
    with av.open(str(tmp_path / entry["file"])) as container:
        assert container.streams  # it opens; what it holds is what was sent
