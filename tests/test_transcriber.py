"""The transcription worker: espeak-ng speech played by a real peer, transcribed by the worker,
posted to a real dev backend; an outage of that backend mid-meeting; a talkative meeting under
the backend's rate limit; a burst of frames no slower reader may lose; the flag refusal."""

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
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from conftest import Backend
from lanes import require_marker
from test_room import FAST, until

from agent.ice import IceOptions
from agent.media.constants import AUDIO_PTIME, SAMPLE_RATE
from agent.media.sources import Outgoing
from agent.media.tracks import RemoteTrack
from agent.room import JoinRequest, JoinTarget, Room
from agent.workers.engines import EnginePool, PocketSphinx
from agent.workers.poster import Poster
from agent.workers.spool import Spool
from agent.workers.transcriber import Backlog, Listener, TranscriberOptions, run_transcriber
from agent.workers.utterances import Segmenter, Utterance, split
from signaling.devserver import DevServer
from signaling.models import TranscriptChunkArgs as Chunk

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
    require_marker("speech", "espeak-ng")
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


def speaker(meeting, wav: Path, index: int = 0) -> Room:
    member = meeting[index]
    return Room(
        member.api.url,
        member.token,
        meeting.id,
        request=JoinRequest(outgoing=Outgoing.file(str(wav)), receive=frozenset(), chat=False),
        ice=IceOptions.loopback(),
        settings=FAST,
        api=member.api,
    )


def worker(meeting, spool: Path, **options) -> asyncio.Task[int]:
    member = meeting[1]
    target = JoinTarget(member.api.url, member.token, meeting.id, IceOptions.loopback(), FAST)
    run = TranscriberOptions(target, spool=spool, quiet=True, **options)
    return asyncio.create_task(run_transcriber(run))


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


@pytest.mark.speech
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


@pytest.mark.speech
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
    spooled = posted(spool)
    assert records(spool)["ack"] == len(spooled) >= 3
    assert [(c.startMs, c.text) for c in chunks] == [
        (s["startTime"], s["text"].strip()) for s in spooled
    ]
    sequences = [c.sequence for c in sorted(chunks, key=lambda c: c.startMs)]
    assert sequences == sorted(set(sequences))


@pytest.mark.parametrize(
    "per_minute, expected",
    [
        (50, ["chunk 0", "chunk 1", "chunk 2"]),
        # a low budget merges the rest, but never into the head that may be stored already
        (1, ["chunk 0", "chunk 1 chunk 2"]),
    ],
)
async def test_restart_resumes_the_spool_and_never_posts_a_stored_chunk_twice(
    backend, tmp_path, per_minute, expected
):
    """A run died after its post was stored but before the ack was written: the next start
    finds the chunk in the backend instead of posting it again, then posts the rest in order."""
    meeting = await backend.meeting(2, transcription=True)
    member, now = meeting[1], int(time.time() * 1000)
    chunks = [
        Chunk(
            meetingId=meeting.id,
            speakerId=meeting.host.user_id,
            text=f"chunk {i}",
            confidence=0.5,
            startTime=now + 1000 * i,
            endTime=now + 1000 * i + 900,
        )
        for i in range(3)
    ]
    first = Spool(tmp_path / "spool.jsonl")
    for chunk in chunks:
        first.add(chunk)
    first.close()
    await member.api.ingest_transcript(chunks[0])  # stored, ack never written

    second = Spool(tmp_path / "spool.jsonl")
    assert len(second.pending) == 3
    poster = Poster(member.api, second, per_minute=per_minute)
    poster.start()
    assert await poster.stop(drain=15) == 0
    second.close()
    stored = await member.api.transcript_chunks(meeting.id)
    assert [c.text for c in stored] == expected
    assert len(Spool(tmp_path / "spool.jsonl").pending) == 0


async def test_a_merge_is_spooled_before_its_post_so_a_restart_never_posts_a_part_again(
    backend, tmp_path
):
    """A run merged chunks 1 and 3 (one speaker) under a low budget, posted the merge, and died
    before the ack: the next start finds the merged chunk stored and posts only chunk 2."""
    meeting = await backend.meeting(2, transcription=True)
    member, now = meeting[1], int(time.time() * 1000)
    a, b = meeting.host.user_id, meeting[1].user_id
    chunks = [talk(meeting.id, who, f"said {i}", now + 1000 * i) for i, who in enumerate([a, b, a])]
    first = Spool(tmp_path / "spool.jsonl")
    ids = [first.add(chunk) for chunk in chunks]
    joined = Chunk(**{**chunks[0].model_dump(), "text": "said 0 said 2", "endTime": now + 2900})
    first.merge(ids[0], [ids[2]], joined)
    first.close()
    await member.api.ingest_transcript(joined)  # stored, ack never written

    second = Spool(tmp_path / "spool.jsonl")
    assert list(second.pending.values()) == [joined, chunks[1]]
    poster = Poster(member.api, second)
    poster.start()
    assert await poster.stop(drain=15) == 0
    second.close()
    stored = await member.api.transcript_chunks(meeting.id)
    assert [(c.speakerId, c.text) for c in stored] == [(a, "said 0 said 2"), (b, "said 1")]


def test_a_merged_chunk_refused_for_good_keeps_every_text_through_compaction(tmp_path):
    path = tmp_path / "spool.jsonl"
    spool = Spool(path)
    ids = [spool.add(talk("m1", who, f"said {i}", 1000 * i)) for i, who in enumerate("aba")]
    spool.merge(ids[0], [ids[2]], talk("m1", "a", "said 0 said 2", 0))
    spool.reject(ids[0], "VALIDATION_ERROR")
    spool.ack(ids[1], 7)
    spool.close()
    Spool(path).close()  # nothing pending: compacted to the rejected chunk and the markers
    again = Spool(path)
    again.close()
    assert not again.pending and again.last_sequence == {"m1": 7}
    texts = [c["text"] for c in chunk_records(path)]
    assert "said 0" in texts and "said 2" in texts and "said 1" not in texts
    assert [r["chunk"]["text"] for r in read(path) if r["op"] == "merge"] == ["said 0 said 2"]


@pytest.mark.slow
async def test_a_talkative_meeting_stays_within_the_real_limit_by_merging(backend, tmp_path):
    """Three speakers' chunks, handed over at 20 a second, against the default limit (50 a
    minute per user): more than two windows could take one by one, so only merging keeps up.
    Every text arrives once, in each speaker's order; the limiter never refuses a post."""
    meeting = await backend.meeting(3, transcription=True)
    speakers = [m.user_id for m in meeting.members]
    order: list[str] = []
    while len(order) < 150:  # turns of 1 to 5 utterances, as people talk
        order += [speakers[len(order) % 3]] * (1 + len(order) * 7 % 5)
    spool = Spool(tmp_path / "spool.jsonl")
    poster = Poster(meeting[1].api, spool)
    poster.start()
    said: dict[str, list[str]] = {who: [] for who in speakers}
    start = int(time.time() * 1000)
    for i, who in enumerate(order[:150]):
        said[who].append(f"utterance {i} of {who}")
        poster.submit(talk(meeting.id, who, said[who][-1], start + 100 * i))
        await asyncio.sleep(0.05)
    assert await poster.stop(drain=30) == 0  # it kept up: nothing left once the talk ends
    spool.close()

    stored = await meeting.host.api.transcript_chunks(meeting.id, limit=200)
    assert poster.refusals == 0 and poster.merged > 0
    assert len(stored) == poster.posted == 150 - poster.merged
    for who in speakers:
        mine = " ".join(c.text for c in stored if c.speakerId == who)
        assert mine == " ".join(said[who])  # nothing lost, nothing twice, in order
    assert [c.startMs for c in stored] == sorted(c.startMs for c in stored)
    per_window = Counter(c.createdAt // 60_000 for c in stored)
    assert max(per_window.values()) <= 50


@pytest.mark.speech
async def test_a_talkative_meeting_through_webrtc_loses_no_word_under_a_tight_limit(tmp_path):
    """Two people talking at once, a backend that takes 4 chunks a minute: the transcriber
    merges each speaker's utterances, and the meeting's transcript holds every one of them.
    Four sentences each (11 s, as many a minute as eight): the posts left when they stop go one
    every 15 s whatever came before."""
    one, length = speech(tmp_path / "one.wav", SENTENCES[:4])
    two, _ = speech(tmp_path / "two.wav", SENTENCES[::-1][:4])
    spool = tmp_path / "spool.jsonl"
    with DevServer(tmp_path / "backend", transcript_rate=4) as server:
        meeting = await Backend(server).meeting(3, transcription=True)
        task = worker(meeting, spool, per_minute=4, drain=40)
        try:
            await joined(meeting, task)
            async with speaker(meeting, one, 0), speaker(meeting, two, 2):
                await asyncio.sleep(LEAD + length + 3)
        finally:
            await stop(task)
        stored = await meeting.host.api.transcript_chunks(meeting.id)
    final = posted(spool)
    assert records(spool)["ack"] == len(final) == len(stored)
    assert records(spool)["merge"] >= 1
    assert [(c.speakerId, c.startMs, c.text) for c in stored] == [
        (s["speakerId"], s["startTime"], s["text"].strip()) for s in final
    ]
    for who in (meeting[0].user_id, meeting[2].user_id):
        heard = [c["text"].strip() for c in chunk_records(spool) if c["speakerId"] == who]
        assert heard and " ".join(c.text for c in stored if c.speakerId == who) == " ".join(heard)
    per_window = Counter(c.createdAt // 60_000 for c in stored)
    assert max(per_window.values()) <= 4


class Burst(MediaStreamTrack):
    """A track whose frames all arrive at once, as aiortc hands them over after a stall."""

    kind = "audio"

    def __init__(self, frames: list[av.AudioFrame], go: asyncio.Event) -> None:
        super().__init__()
        self._frames = iter(frames)
        self._go = go

    async def recv(self) -> av.AudioFrame:
        await self._go.wait()
        frame = next(self._frames, None)
        if frame is None:
            raise MediaStreamError
        return frame


def frames_of(wav: Path) -> list[av.AudioFrame]:
    """The WAV as aiortc decodes Opus: 20 ms frames of 48 kHz s16 stereo."""
    resampler = av.AudioResampler(
        format="s16", layout="stereo", rate=SAMPLE_RATE, frame_size=int(SAMPLE_RATE * AUDIO_PTIME)
    )
    with av.open(str(wav)) as container:
        frames = [f for frame in container.decode(audio=0) for f in resampler.resample(frame)]
    return frames + list(resampler.resample(None))


@pytest.mark.speech
async def test_a_burst_of_frames_loses_none_on_the_way_to_the_recognizer(tmp_path):
    """Every frame of a burst reaches the VAD (a drop-oldest queue kept only the last 64), and
    the texts are exactly what the engine makes of the same frames read directly."""
    wav, _ = speech(tmp_path / "burst.wav", SENTENCES[:3])
    frames = frames_of(wav)
    engine = PocketSphinx()
    segmenter = Segmenter(engine.sample_rate)
    direct = [u for f in frames for u in segmenter.feed(f)] + segmenter.flush()
    expected = [t.text for t in map(engine.transcribe, (u.pcm for u in direct)) if t.text]

    go, texts = asyncio.Event(), []
    pool = EnginePool(PocketSphinx(), 1)
    try:
        await pool.warm_up()
        track = RemoteTrack("speaker", "audio", "audio", Burst(frames, go))
        listener = Listener("speaker", track, pool, lambda _, u, t: texts.append(t.text))
        await asyncio.sleep(0.1)  # the reader is waiting for frames
        go.set()
        await until(lambda: track.frames_received == len(frames), timeout=30)
        await listener.close(timeout=60)
    finally:
        pool.close()
    assert listener.frames == len(frames) > 64 and listener.unread == 0
    assert texts == expected and len(texts) >= 3


async def test_the_backlog_keeps_order_in_memory_and_on_disk():
    backlog = Backlog(memory=10_000)
    utterances = [Utterance(bytes([i]) * 3_000, 1000 * i, 1000 * i + 500) for i in range(8)]
    for utterance in utterances[:5]:
        backlog.put(utterance)
    got = [await backlog.get() for _ in range(2)]
    for utterance in utterances[5:]:
        backlog.put(utterance)
    backlog.end()
    while (utterance := await backlog.get()) is not None:
        got.append(utterance)
    backlog.close()
    assert got == utterances and backlog.spilled >= 3


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


def chunk_records(spool: Path) -> list[dict]:
    return [r["chunk"] for r in read(spool) if r["op"] == "chunk"]


def posted(spool: Path) -> list[dict]:
    """The chunks the spool says went to the backend, merges applied, in order."""
    chunks: dict[int, dict] = {}
    for r in read(spool):
        if r["op"] in ("chunk", "merge"):
            chunks[r["id"]] = r["chunk"]
            for folded in r.get("ids", ()):
                del chunks[folded]
    return [chunks[i] for i in sorted(chunks)]


def talk(meeting_id: str, who: str, text: str, start_ms: int) -> Chunk:
    return Chunk(
        meetingId=meeting_id,
        speakerId=who,
        text=text,
        confidence=0.5,
        startTime=start_ms,
        endTime=start_ms + 90,
    )
