"""faster-whisper as the transcriber's engine, run for real (loading, features, tokenizer, beam
search, word alignment) on a tiny model built here (scripts/tiny_whisper.py) that always says
one script: no download, no torch. And the engine protocol, with a toy engine registered."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import av
import pytest
from conftest import Backend
from test_transcriber import (
    LEAD,
    SENTENCES,
    joined,
    read,
    speaker,
    speech,
    stop,
    worker,
)

from agent.workers.engines import (
    ENGINES,
    EngineOptions,
    EnginePool,
    FasterWhisper,
    Transcript,
    engine_named,
)
from agent.workers.spool import Spool
from agent.workers.transcriber import times
from agent.workers.utterances import Utterance, split
from signaling.devserver import DevServer

sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
from tiny_whisper import SCRIPT, build


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("tiny-whisper"))


def pcm_of(wav: Path, rate: int = 16000) -> bytes:
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    with av.open(str(wav)) as container:
        return b"".join(
            f.to_ndarray().tobytes()
            for frame in container.decode(audio=0)
            for f in resampler.resample(frame)
        )


@pytest.mark.speech
def test_the_engine_says_the_tiny_models_script_with_word_times_and_its_confidence(tiny, tmp_path):
    wav, _ = speech(tmp_path / "one.wav", SENTENCES[:1])
    utterance = next(iter(split(pcm_of(wav), 16000)))
    seconds = len(utterance.pcm) / 2 / 16000
    for language in ("en", None):  # given, or detected (the model answers <|en|>)
        engine = FasterWhisper(EngineOptions(model=str(tiny), language=language))
        said = engine.transcribe(utterance.pcm)
        assert said.text == SCRIPT and said.language == "en"
        assert 0 < said.confidence <= 1
        assert said.span is not None and 0 <= said.span[0] < said.span[1] <= seconds + 0.02
    model = engine.load()
    assert engine.transcribe(utterance.pcm) == said and engine.load() is model  # loaded once
    assert engine.transcribe(bytes(32000)).text in ("", SCRIPT)  # silence: no failure


def test_word_times_narrow_a_chunk_and_never_widen_it():
    utterance = Utterance(b"", 10_000, 12_000)
    assert times(utterance, Transcript("a", 1, (0.25, 1.5))) == (10_250, 11_500)
    assert times(utterance, Transcript("a", 1, (0.0, 3.0))) == (10_000, 12_000)  # past the end
    assert times(utterance, Transcript("a", 1)) == (10_000, 12_000)


class Toy:
    """The README's engine in a few lines: it says how long each utterance is, and notes
    each load (one per worker process) in the file named by --model."""

    name = "toy"
    sample_rate = 8000

    def __init__(self, options: EngineOptions) -> None:
        self.notes = options.model

    def load(self) -> None:
        assert self.notes is not None
        with open(self.notes, "a") as notes:
            notes.write(f"{os.getpid()}\n")

    def transcribe(self, pcm: bytes) -> Transcript:
        return Transcript(f"{len(pcm) // 16} ms", 1.0)


async def test_a_registered_engine_loads_once_per_worker_process(tmp_path, monkeypatch):
    monkeypatch.setitem(ENGINES, "toy", Toy)
    notes = tmp_path / "loads"
    pool = EnginePool(engine_named("toy", EngineOptions(model=str(notes))), workers=2)
    try:
        await pool.warm_up()
        said = await asyncio.gather(*(pool.transcribe(bytes(16 * n)) for n in range(1, 21)))
    finally:
        pool.close()
    assert [t.text for t in said] == [f"{n} ms" for n in range(1, 21)]
    loads = notes.read_text().split()
    assert len(loads) == len(set(loads)) == 2


def cli(*options: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *(sys.executable, "-m", "agent", "transcribe", "--url", "http://127.0.0.1:9"),
            *("--token", "x", "--meeting", "m", "--engine", "faster-whisper", *options),
        ],
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},  # never the real hub
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "model, says",
    [
        ("/no/such/model", "no such directory"),
        ("huge", "neither a model directory nor a size"),
        ("tiny.en", "not in the cache"),  # HF_HUB_OFFLINE: a size would be fetched
        ("EMPTY", "cannot load it"),  # a directory without a model in it
    ],
)
def test_a_model_that_cannot_be_had_is_one_line_naming_model_before_joining(tmp_path, model, says):
    """--url points at a closed port: the worker never got as far as joining."""
    if model == "EMPTY":
        model = str(tmp_path)
    result = cli("--model", model, env={"HF_HOME": str(tmp_path / "hf")})
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "--model" in result.stderr and says in result.stderr, result.stderr
    assert "127.0.0.1:9" not in result.stderr


@pytest.mark.slow
def test_a_hub_that_never_answers_fails_in_bounded_time(tmp_path):
    """A network that takes the connection and says nothing: the lookup gives up (LOOKUP s)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        held: list[socket.socket] = []
        threading.Thread(target=lambda: held.append(silent.accept()[0]), daemon=True).start()
        env = {
            "HF_HUB_OFFLINE": "0",
            "HF_HOME": str(tmp_path / "hf"),
            "HF_ENDPOINT": f"http://127.0.0.1:{silent.getsockname()[1]}",
        }
        began = time.monotonic()
        result = cli("--model", "tiny.en", env=env)
    assert result.returncode == 2 and "--model 'tiny.en'" in result.stderr, result.stderr
    assert time.monotonic() - began < 30


def test_a_language_the_model_does_not_know_is_one_line(tiny):
    result = cli("--model", str(tiny), "--language", "xx")
    assert result.returncode == 2 and "--language 'xx'" in result.stderr, result.stderr


TALKS = [(SENTENCES[:2], SENTENCES[2:4]), (SENTENCES[4:], SENTENCES[:2])]
"""What the two bots say before the restart, then after it."""


@pytest.mark.speech
@pytest.mark.slow
async def test_through_webrtc_each_speaker_gets_the_script_in_order_and_a_restart_keeps_all(
    tiny, tmp_path
):
    """Two bots speak; the tiny engine transcribes them (detecting the language) under a limit of
    10 chunks a minute; the worker is stopped with chunks unposted and started again on the same
    spool; the bots speak again: every chunk either run made is stored once, in order, each
    speaker's text the script once per utterance."""
    spool = tmp_path / "spool.jsonl"
    whisper = {"engine": "faster-whisper", "model": str(tiny), "language": "auto", "workers": 1}
    with DevServer(tmp_path / "backend", transcript_rate=10) as server:
        meeting = await Backend(server).meeting(3, transcription=True)
        before: list[dict] = []
        left = 0
        for run, said in enumerate(TALKS):
            wavs = [speech(tmp_path / f"{run}-{i}.wav", lines) for i, lines in enumerate(said)]
            # the first run posts once a minute: its later chunks wait for the second
            pace = {"per_minute": 1, "drain": 5} if run == 0 else {"per_minute": 10, "drain": 40}
            task = worker(meeting, spool, **pace, **whisper)
            try:
                await joined(meeting, task)
                async with speaker(meeting, wavs[0][0], 0), speaker(meeting, wavs[1][0], 2):
                    await asyncio.sleep(LEAD + max(length for _, length in wavs) + 3)
            finally:
                await stop(task)
            if run == 0:  # the restart compacts a spool with nothing pending
                before, left = read(spool), pending(spool)
        stored = await meeting.host.api.transcript_chunks(meeting.id)
    first_made = {r["id"]: r["chunk"] for r in before if r["op"] == "chunk"}
    made_by_id = {r["id"]: r["chunk"] for r in before + read(spool) if r["op"] == "chunk"}
    made = [made_by_id[i] for i in sorted(made_by_id)]
    assert first_made and len(made) > len(first_made)  # both runs made chunks
    assert left > 0  # the second run had chunks of the first to post
    for who in (meeting[0].user_id, meeting[2].user_id):
        mine = [c["text"] for c in made if c["speakerId"] == who]
        assert len(mine) >= 2 and set(mine) == {SCRIPT}
        assert " ".join(c.text for c in stored if c.speakerId == who) == " ".join(mine)
        starts = [c.startMs for c in stored if c.speakerId == who]
        assert starts == sorted(set(starts))
    assert max(Counter(c.createdAt // 60_000 for c in stored).values()) <= 10
    assert {c.language for c in stored} == {"en"}  # detected: the tiny model answers <|en|>


def pending(spool: Path) -> int:
    """Chunks a start on `spool` would post first (read from a copy: opening may compact it)."""
    copy = Spool(shutil.copy(spool, spool.with_suffix(".copy")))
    copy.close()
    return len(copy.pending)
