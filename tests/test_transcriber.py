"""The transcription worker: espeak-ng speech played by a real peer, transcribed by the worker,
posted to a real dev backend; an outage of that backend mid-meeting; the flag refusal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import wave
from collections import Counter
from pathlib import Path

import av
import pytest
from conftest import Backend
from test_room import FAST, until

from agent.ice import IceOptions
from agent.media.sources import Outgoing
from agent.room import JoinRequest, JoinTarget, Room
from agent.workers.engines import PocketSphinx
from agent.workers.poster import Poster, ingest_args
from agent.workers.spool import Spool
from agent.workers.transcriber import TranscriberOptions, run_transcriber
from agent.workers.utterances import split
from signaling.devserver import DevServer

LEAD = 4.0  # seconds of silence before the speech: the peers connect meanwhile
TAIL = 60.0  # seconds of silence after it, so MediaPlayer's loop never speaks twice
VOICE = ["-v", "en-us+klatt", "-s", "150"]  # the espeak voice PocketSphinx hears best

SENTENCES = [  # ones PocketSphinx hears alike with or without Opus in between
    "The weather is nice today.",
    "We will meet again tomorrow morning.",
    "The budget for next year looks good.",
    "Please send me the report by Friday.",
    "I think we should call the office.",
    "Let us start with the first item on the agenda.",
]
PAUSE = '<break time="800ms"/>'  # people pause between sentences; the VAD cuts there


def speech(path: Path, sentences: list[str]) -> tuple[Path, float]:
    """A WAV of `sentences` between silences, and how long the speech itself lasts."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: run scripts/setup.sh (it installs it)")
    raw = path.with_suffix(".raw.wav")
    text = f"<speak>{PAUSE.join(sentences)}</speak>"
    subprocess.run(["espeak-ng", "-m", *VOICE, "-w", str(raw), text], check=True)
    with wave.open(str(raw)) as src:
        params, frames = src.getparams(), src.readframes(src.getnframes())
    silence = bytes(params.sampwidth * params.nchannels)
    with wave.open(str(path), "wb") as out:
        out.setparams(params)
        out.writeframes(silence * int(LEAD * params.framerate))
        out.writeframes(frames)
        out.writeframes(silence * int(TAIL * params.framerate))
    return path, params.nframes / params.framerate


def reference(path: Path) -> list[str]:
    """What the same VAD and engine make of the WAV itself, without WebRTC in between."""
    engine = PocketSphinx()
    resampler = av.AudioResampler(format="s16", layout="mono", rate=engine.sample_rate)
    with av.open(str(path)) as container:
        pcm = b"".join(
            f.to_ndarray().tobytes()
            for frame in container.decode(audio=0)
            for f in resampler.resample(frame)
        )
    texts = (engine.transcribe(u.pcm).text for u in split(pcm, engine.sample_rate))
    return [t for t in texts if t]


def overlap(expected: str, got: str) -> float:
    """Shared words (with repeats) over the mean length of the two texts (a word F1)."""
    a, b = Counter(expected.split()), Counter(got.split())
    return 2 * sum((a & b).values()) / max(sum(a.values()) + sum(b.values()), 1)


def speaker(meeting, wav: Path) -> Room:
    member = meeting[0]
    return Room(
        member.api.url,
        member.token,
        meeting.id,
        request=JoinRequest(outgoing=Outgoing.file(str(wav)), receive=frozenset(), chat=False),
        ice=IceOptions.loopback(),
        settings=FAST,
        api=member.api,
    )


def worker(meeting, spool: Path) -> asyncio.Task[int]:
    member = meeting[1]
    target = JoinTarget(member.api.url, member.token, meeting.id, IceOptions.loopback(), FAST)
    options = TranscriberOptions(target, spool=spool, quiet=True)
    return asyncio.create_task(run_transcriber(options))


async def joined(meeting, task: asyncio.Task[int]) -> None:
    """Until the worker's session is active (or the worker failed)."""
    api, worker_id = meeting.host.api, meeting[1].user_id
    deadline = time.monotonic() + 30
    while not any(s.userId == worker_id for s in await api.active_sessions(meeting.id)):
        if task.done():
            await task
        assert time.monotonic() < deadline, "the transcriber did not join"
        await asyncio.sleep(0.1)


async def stop(task: asyncio.Task[int]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_chunks_match_what_the_engine_hears_in_the_file(backend, tmp_path):
    wav, length = speech(tmp_path / "short.wav", SENTENCES[:3])
    expected = " ".join(await asyncio.to_thread(reference, wav))
    meeting = await backend.meeting(2, transcription=True)
    started_ms = time.time() * 1000
    task = worker(meeting, tmp_path / "spool.jsonl")
    try:
        await joined(meeting, task)
        async with speaker(meeting, wav):
            await asyncio.sleep(LEAD + length + 3)
    finally:
        await stop(task)
    chunks = await meeting.host.api.transcript_chunks(meeting.id)
    got = " ".join(c.text for c in chunks)
    assert overlap(expected, got) >= 0.7, (expected, got)
    for c in chunks:
        assert c.speakerId == meeting.host.user_id
        assert started_ms < c.startMs < c.endMs < time.time() * 1000
        assert 0 <= c.confidence <= 1


async def test_backend_outage_loses_no_chunk_and_repeats_none(tmp_path):
    wav, length = speech(tmp_path / "long.wav", SENTENCES)
    spool = tmp_path / "spool.jsonl"
    with DevServer(tmp_path / "backend") as server:  # stop() and start() keep its port
        meeting = await Backend(server).meeting(2, transcription=True)
        task = worker(meeting, spool)
        try:
            await joined(meeting, task)
            async with speaker(meeting, wav):
                began, api = time.monotonic(), meeting.host.api
                await until(lambda: records(spool)["ack"] >= 1, timeout=LEAD + length)
                await asyncio.to_thread(server.stop)
                await until(lambda: records(spool)["chunk"] > records(spool)["ack"], timeout=20)
                await asyncio.sleep(3)  # down a while: posts fail, retries back off
                await asyncio.to_thread(server.start)
                await asyncio.sleep(max(0.0, began + LEAD + length + 3 - time.monotonic()))
        finally:
            await stop(task)
        chunks = await api.transcript_chunks(meeting.id)
    spooled = [r["chunk"] for r in read(spool) if r["op"] == "chunk"]
    assert records(spool)["ack"] == len(spooled) >= 3
    assert [(c.startMs, c.text) for c in chunks] == [
        (s["startTime"], s["text"].strip()) for s in spooled
    ]
    sequences = [c.sequence for c in sorted(chunks, key=lambda c: c.startMs)]
    assert sequences == sorted(set(sequences))


async def test_restart_resumes_the_spool_and_never_posts_a_stored_chunk_twice(backend, tmp_path):
    """A run died after its post was stored but before the ack was written: the next start
    finds the chunk in the backend instead of posting it again, then posts the rest in order."""
    meeting = await backend.meeting(2, transcription=True)
    member, now = meeting[1], int(time.time() * 1000)
    chunks = [
        {
            "meetingId": meeting.id,
            "speakerId": meeting.host.user_id,
            "text": f"chunk {i}",
            "confidence": 0.5,
            "startTime": now + 1000 * i,
            "endTime": now + 1000 * i + 900,
        }
        for i in range(3)
    ]
    first = Spool(tmp_path / "spool.jsonl")
    for chunk in chunks:
        first.add(chunk)
    first.close()
    await member.api.ingest_transcript(**ingest_args(chunks[0]))  # stored, ack never written

    second = Spool(tmp_path / "spool.jsonl")
    assert len(second.pending) == 3
    poster = Poster(member.api, second)
    poster.start()
    assert await poster.stop(drain=15) == 0
    second.close()
    stored = await member.api.transcript_chunks(meeting.id)
    assert [c.text for c in stored] == ["chunk 0", "chunk 1", "chunk 2"]
    assert len(Spool(tmp_path / "spool.jsonl").pending) == 0


def test_refuses_a_room_without_transcription(backend, tmp_path):
    meeting = asyncio.run(backend.meeting(2, transcription=False))
    result = subprocess.run(
        [
            *(sys.executable, "-m", "agent", "transcribe", "--url", backend.url),
            *("--meeting", meeting.id, "--ice-address", "127.0.0.1"),
            *("--spool", str(tmp_path / "spool.jsonl"), "--duration", "5"),
        ],
        env={**os.environ, "CONNVO_TOKEN": meeting[1].token},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "transcription" in result.stderr and "Traceback" not in result.stderr


def test_unknown_engine_names_the_available_ones(tmp_path):
    result = subprocess.run(
        [
            *(sys.executable, "-m", "agent", "transcribe", "--url", "http://127.0.0.1:9"),
            *("--token", "x", "--meeting", "m", "--engine", "whisperish"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "whisperish" in result.stderr and "pocketsphinx" in result.stderr


# --- helpers -------------------------------------------------------------------------------------


def read(spool: Path) -> list[dict]:
    if not spool.exists():
        return []
    lines = spool.read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def records(spool: Path) -> Counter[str]:
    return Counter(r["op"] for r in read(spool))
