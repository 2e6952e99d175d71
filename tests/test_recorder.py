"""The recording worker against a real backend and real peers on loopback: a speaker bot plays
espeak-ng speech with a moving test pattern; the recorder's files are decoded with av."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import Backend, Meeting
from lanes import require_marker
from test_cli import connvo_agent
from test_room import FAST, room, until

from agent.ice import IceOptions
from agent.media.sources import Outgoing, PatternTrack, ToneTrack
from agent.room import Room
from agent.workers.files import BACKLOG, TsFile
from agent.workers.recorder import Recorder, request

SPEECH = "The recorder keeps every word of this meeting, even when it is killed without warning."
MARGIN = 1.0
"""Seconds a file's length may differ from the speaker's presence (plus 15% of it)."""
LOUD = 0.01
"""RMS (full scale 1.0) above which a recording is not silence; espeak-ng speech is ~0.1."""


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_marker("speech", "espeak-ng")
    espeak = shutil.which("espeak-ng")
    assert espeak, "espeak-ng is missing: run scripts/setup.sh (the recorder tests need speech)"
    wav = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run([espeak, "-w", str(wav), SPEECH], check=True)
    return wav


def speaker(meeting: Meeting, index: int, wav: Path, screen: bool = False) -> Room:
    """Speech (looped by aiortc's MediaPlayer), a test pattern for the camera, maybe a screen."""
    outgoing = Outgoing(
        audio=Outgoing.file(str(wav)).audio,
        video=PatternTrack(),
        screen=PatternTrack(640, 360, 5) if screen else None,
    )
    return room(meeting, index, outgoing=outgoing, screen_share=screen)


def recorder_room(meeting: Meeting, index: int, format: str = "mkv") -> Room:
    member = meeting[index]
    return Room(
        member.api.url,
        member.token,
        meeting.id,
        request=request(format),
        ice=IceOptions.loopback(),
        settings=FAST,
        api=member.api,
    )


def decode(path: Path) -> tuple[np.ndarray, int]:
    """All of a file's audio (mono, full scale 1.0) and how many video frames it has; decoding
    must reach the end without an error."""
    chunks, video = [], 0
    with av.open(str(path)) as container:
        for frame in container.decode(*container.streams):
            if isinstance(frame, av.AudioFrame):
                assert frame.sample_rate == 48000
                chunks.append(frame.to_ndarray().reshape(len(frame.layout.channels), -1).mean(0))
            else:
                video += 1
    return (np.concatenate(chunks) if chunks else np.zeros(0)), video


def video_codec(path: Path) -> str:
    with av.open(str(path)) as container:
        return container.streams.video[0].codec_context.name


def audio_end(path: Path) -> float:
    """Where a file's audio ends (seconds): ts fills gaps with silence, in mkv a gap (frames
    lost, a starved sender) stays a gap, so the length is the timeline's, not the samples'."""
    with av.open(str(path)) as container:
        ends = [(p.pts + p.duration) * p.time_base for p in container.demux(audio=0) if p.size]
    return float(max(ends))


def first_video_is_a_keyframe(path: Path) -> bool:
    with av.open(str(path)) as container:
        return next(p.is_keyframe for p in container.demux(video=0) if p.size)


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio)))) if len(audio) else 0.0


def close_to(seconds: float, expected: float) -> bool:
    return abs(seconds - expected) <= MARGIN + 0.15 * expected


def read_manifest(out: Path) -> dict:
    path = out / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {"files": []}


def files_of(out: Path, user_id: str) -> list[dict]:
    return [f for f in read_manifest(out)["files"] if f["userId"] == user_id]


async def present(
    meeting: Meeting, index: int, wav: Path, seconds: float, screen: bool = False
) -> tuple[str, float]:
    """The speaker joins, talks `seconds` once connected, leaves: (session, seconds present)."""
    bot = speaker(meeting, index, wav, screen)
    async with bot:
        await until(lambda: bot.stats().connected_at is not None)
        await asyncio.sleep(seconds)
        left = time.monotonic()
    connected_at = bot.stats().connected_at
    assert connected_at is not None
    return bot.session_id, left - connected_at


CODECS = {  # what each format writes: the bots send VP8 and Opus
    "ts": {"suffix": ".ts", "audio": "aac", "video": "h264"},
    "mkv": {"suffix": ".webm", "audio": "opus", "video": "VP8"},
}


@pytest.mark.speech
@pytest.mark.parametrize("format", ["mkv", "ts"])
async def test_a_file_per_join_with_speech_and_video_and_a_meeting_mix(
    backend, speech, tmp_path, format
):
    meeting = await backend.meeting(2, recording=True)
    recorder = Recorder(recorder_room(meeting, 1, format), tmp_path, mix=True, format=format)
    codecs = CODECS[format]
    started = time.monotonic()
    task = asyncio.create_task(recorder.run())
    joins = [await present(meeting, 0, speech, 4.0, screen=True)]
    joins.append(await present(meeting, 0, speech, 3.0))
    user = meeting[0].user_id
    await until(lambda: sum(f["complete"] for f in files_of(tmp_path, user)) == 3, 15)
    task.cancel()  # what SIGINT does
    with contextlib.suppress(asyncio.CancelledError):
        await task
    ran = time.monotonic() - started

    (screen,) = [f for f in files_of(tmp_path, user) if f["kind"] == "screen"]
    audio, video_frames = decode(tmp_path / screen["file"])
    assert screen["file"].endswith(f"_screen{codecs['suffix']}")
    assert screen["sessionId"] == joins[0][0] and screen["format"] == codecs["suffix"][1:]
    assert len(audio) == 0 and screen["audio"] is None and video_frames > 0
    assert screen["video"] == {"codec": codecs["video"], "width": 640, "height": 360}

    entries = [f for f in files_of(tmp_path, user) if f["kind"] == "participant"]
    assert [e["sessionId"] for e in entries] == [session for session, _ in joins]
    for entry, (_, presence) in zip(entries, joins, strict=True):
        audio, video_frames = decode(tmp_path / entry["file"])
        seconds = audio_end(tmp_path / entry["file"])
        print(f"{entry['file']}: {seconds:.2f} s of audio, present {presence:.2f} s")
        assert close_to(seconds, presence), (seconds, presence, entry)
        assert close_to(entry["duration"], presence)
        assert rms(audio) > LOUD
        assert video_frames > 10 * presence  # the pattern runs at 15 fps
        assert entry["audio"]["codec"] == codecs["audio"]
        assert entry["video"]["codec"] == codecs["video"]
        assert video_codec(tmp_path / entry["file"]) == codecs["video"].lower()
        assert first_video_is_a_keyframe(tmp_path / entry["file"])
        assert entry["endMs"] - entry["startMs"] == pytest.approx(entry["duration"] * 1000, abs=2)
        assert entry["file"].startswith(f"{user}_") and entry["sessionId"][:8] in entry["file"]

    document = read_manifest(tmp_path)
    assert document["meetingId"] == meeting.id and document["endMs"] is not None
    (mix,) = [f for f in document["files"] if f["kind"] == "mix"]
    audio, _ = decode(tmp_path / mix["file"])
    print(f"{mix['file']}: {len(audio) / 48000:.2f} s, recorder ran {ran:.2f} s")
    assert close_to(len(audio) / 48000, ran) and rms(audio) > LOUD / 2
    assert mix["complete"]


def record_process(
    backend: Backend, meeting: Meeting, index: int, out: Path, format: str
) -> subprocess.Popen:
    args = ["--url", backend.url, "--meeting", meeting.id, "--out", str(out), "--format", format]
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "record", *args, "--ice-address", "127.0.0.1"],
        env={**os.environ, "CONNVO_TOKEN": meeting[index].token},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.speech
@pytest.mark.parametrize("format", ["mkv", "ts"])
async def test_killed_recorder_leaves_files_that_decode_and_sigterm_closes_cleanly(
    backend, speech, tmp_path, format
):
    meeting = await backend.meeting(3, recording=True)
    killed, stopped = tmp_path / "killed", tmp_path / "stopped"
    processes = [
        record_process(backend, meeting, 1, killed, format),
        record_process(backend, meeting, 2, stopped, format),
    ]
    user = meeting[0].user_id
    try:
        bot = speaker(meeting, 0, speech)
        async with bot:
            await until(
                lambda: all(
                    any(f["duration"] > 4 for f in files_of(out, user)) for out in (killed, stopped)
                ),
                40,
            )
            processes[0].send_signal(signal.SIGKILL)
            processes[1].send_signal(signal.SIGTERM)
            stopped_at = time.monotonic()
            codes = [await asyncio.to_thread(p.wait, 20) for p in processes]
        connected_at = bot.stats().connected_at
        assert connected_at is not None
        presence = stopped_at - connected_at
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    assert codes == [-signal.SIGKILL, 143], processes[1].stderr.read().decode()

    for out, complete in ((killed, False), (stopped, True)):
        (entry,) = files_of(out, user)
        assert entry["sessionId"] == bot.session_id and entry["complete"] is complete
        audio, video_frames = decode(out / entry["file"])
        seconds = audio_end(out / entry["file"])
        print(f"{out.name}: {seconds:.2f} s of audio, present {presence:.2f} s until the signal")
        assert rms(audio) > LOUD and video_frames > 0
        assert seconds <= presence + MARGIN
        assert seconds >= presence - (3.0 if not complete else MARGIN + 0.15 * presence)
    assert read_manifest(stopped)["endMs"] is not None
    assert read_manifest(killed)["endMs"] is None


async def test_refuses_a_room_with_recording_off(backend, tmp_path):
    meeting = await backend.meeting(2, recording=False)
    out = tmp_path / "out"
    code, _, err = await connvo_agent(
        "record",
        *("--url", backend.url, "--token", meeting[1].token, "--meeting", meeting.id),
        *("--out", str(out), "--ice-address", "127.0.0.1", "--duration", "5"),
    )
    assert code == 2 and "`recording`" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    assert await meeting.host.api.active_sessions(meeting.id) == []


async def test_a_stalled_participant_becomes_silence_and_the_file_keeps_real_time(tmp_path):
    """1 s of tone, 1.5 s with nothing (muted, stalled), 1 s of tone: 3.5 s, the gap silent."""
    started = time.monotonic() - 10
    file = TsFile(tmp_path / "gap.ts", started, "u", "s", frozenset({"audio", "video"}))
    tone = ToneTrack(volume=0.5)
    for index in [*range(50), *range(125, 175)]:  # 20 ms frames; RTP time runs on in the gap
        frame = await tone.recv()
        frame.pts = 123456 + index * 960
        file.put("audio", frame, started + (index + 1) * 0.02)
        if index % 4 == 0:
            video = av.VideoFrame(320, 240, "yuv420p")
            video.pts, video.time_base = 9000 + index * 1800, Fraction(1, 90000)
            file.put("video", video, started + (index + 1) * 0.02)
    await asyncio.to_thread(file.finish)
    audio, video_frames = decode(tmp_path / "gap.ts")
    assert len(audio) / 48000 == pytest.approx(3.5, abs=0.05)
    assert file.complete and file.duration == pytest.approx(3.5, abs=0.05)
    assert rms(audio[48000 * 3 // 2 : 48000 * 2]) < 0.001  # inside the gap
    assert rms(audio[: 48000 * 3 // 4]) > 0.1 and rms(audio[-48000 * 3 // 4 :]) > 0.1
    assert video_frames == 25


@pytest.mark.slow
async def test_an_encoder_far_behind_drops_video_counted_and_logged_and_keeps_all_audio(
    tmp_path, caplog
):
    """A burst far past the video budget (the encoder cannot keep up): the queue stays bounded,
    the video frames given up are counted, logged and in the manifest, and every frame that was
    kept, and all the audio, is in the file."""
    started = time.monotonic() - 10
    file = TsFile(tmp_path / "burst.ts", started, "u", "s", frozenset({"audio", "video"}))
    tone = ToneTrack(volume=0.5)
    video = av.VideoFrame.from_ndarray(np.zeros((720 * 3 // 2, 1280), np.uint8), format="yuv420p")
    budget = BACKLOG["video"] // sum(p.buffer_size for p in video.planes)
    with caplog.at_level(logging.WARNING, logger="agent.workers.files"):
        for index in range(3 * budget):  # in one go, as a stalled loop would hand them over
            file.put("video", video, started + index / 30)
        for index in range(500):  # 10 s of audio: within its budget
            frame = await tone.recv()
            frame.pts = index * 960
            file.put("audio", frame, started + index * 0.02)
        await asyncio.to_thread(file.finish)
    audio, video_frames = decode(tmp_path / "burst.ts")
    assert file.dropped["audio"] == 0 and len(audio) / 48000 == pytest.approx(10, abs=0.05)
    assert budget <= video_frames < 3 * budget
    assert video_frames + file.dropped["video"] == 3 * budget
    assert file.describe()["dropped"] == {"audio": 0, "video": file.dropped["video"]}
    warnings = [r.getMessage() for r in caplog.records if "burst.ts" in r.getMessage()]
    assert any("dropping video frames" in w for w in warnings), warnings
    assert any(str(file.dropped["video"]) in w for w in warnings), warnings
