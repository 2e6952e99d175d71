"""Real-time factor and word error rate of the transcription pipeline for a meeting of 4
people taking turns, per engine, and the frames it loses on the way to the recognizer.

    .venv/bin/python scripts/bench_transcribe.py [--engine faster-whisper [--model M]]
        [--rounds 3] [--workers 2] [--speed 1]

Four espeak-ng voices read sentences in turn; each participant's stream lasts the whole meeting
(silence while the others speak), in 20 ms frames of 48 kHz s16 stereo, as aiortc hands them
over. Per stream: resampling + VAD time, then engine time (one CPU thread), over the meeting's
duration, and the word error rate against the sentences read. For the whole meeting: the sum of
all streams' work (one core), then the wall time when the utterances go through the worker's
process pool, as the transcriber runs them. RTF < 1 keeps up. PocketSphinx always runs, so
another `--engine` is measured next to it on the same audio in the same run.

faster-whisper's `--model` is a model directory or a size (the Hugging Face cache's, or fetched);
without one, the tiny model of the tests (scripts/tiny_whisper.py), which says one script
whatever it hears: its RTF is the pipeline's floor, its WER means nothing.

Then live, with `--engine`: the 4 streams play on the wall clock (`--speed` times real time)
through the transcriber's own RemoteTrack and Listener, with its engine pool; frames sent against
frames the VAD read is the loss (it must be 0), with the deepest the reader fell behind and how
long the last chunks took after the last frame. Run it with the CPU busy to see it hold.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import functools
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from agent.media.constants import AUDIO_PTIME, SAMPLE_RATE
from agent.media.tracks import RemoteTrack
from agent.workers.engines import Engine, EngineOptions, EnginePool, engine_named
from agent.workers.transcriber import Listener
from agent.workers.utterances import Segmenter, Utterance

RATE = SAMPLE_RATE
FRAME = int(SAMPLE_RATE * AUDIO_PTIME)
PAUSE = 1.0
VOICES = ["en-us+klatt", "en-us+m3", "en-us+f3", "en-gb"]
SENTENCES = [
    "The weather is nice today.",
    "We will meet again tomorrow morning.",
    "The budget for next year looks good.",
    "Please send me the report by Friday.",
    "I think we should call the office.",
    "Let us start with the first item on the agenda.",
    "The project is going very well.",
    "Can you share the slides after the call?",
]


def say(voice: str, text: str, folder: Path) -> np.ndarray:
    wav = folder / "say.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(wav), text], check=True)
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    with av.open(str(wav)) as container:
        parts = [
            f.to_ndarray()[0]
            for frame in container.decode(audio=0)
            for f in resampler.resample(frame)
        ]
    return np.concatenate(parts)


def meeting(rounds: int, folder: Path) -> tuple[list[np.ndarray], list[str]]:
    """Each speaker's mono 48 kHz track and what they read; one speaks at a time, a pause
    between turns."""
    turns = [(i % 4, SENTENCES[i % len(SENTENCES)]) for i in range(rounds * 4)]
    clips = [(who, say(VOICES[who], text, folder)) for who, text in turns]
    length = sum(len(c) + int(PAUSE * RATE) for _, c in clips)
    tracks = [np.zeros(length, dtype=np.int16) for _ in VOICES]
    at = 0
    for who, clip in clips:
        tracks[who][at : at + len(clip)] = clip
        at += len(clip) + int(PAUSE * RATE)
    said = [" ".join(text for who, text in turns if who == i) for i in range(len(VOICES))]
    return tracks, said


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def wer(reference: str, heard: str) -> float:
    """Word error rate: the word-level edit distance over the reference's length."""
    ref, hyp = words(reference), words(heard)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        diagonal, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (r != h))
    return row[-1] / max(len(ref), 1)


def frame_at(stereo: np.ndarray, index: int) -> av.AudioFrame:
    samples = stereo[index * FRAME * 2 : (index + 1) * FRAME * 2].reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="stereo")
    frame.sample_rate, frame.pts = RATE, index * FRAME
    frame.time_base = fractions.Fraction(1, RATE)
    return frame


def segment(track: np.ndarray, rate: int) -> tuple[list[Utterance], float]:
    """The stream as 20 ms stereo frames through the Segmenter; answers utterances and seconds."""
    segmenter = Segmenter(rate)
    stereo = np.repeat(track, 2)
    utterances: list[Utterance] = []
    started = time.process_time()
    for index in range(len(track) // FRAME):
        frame = frame_at(stereo, index)
        utterances += segmenter.feed(frame, 1000 * index * FRAME / RATE)
    utterances += segmenter.flush()
    return utterances, time.process_time() - started


def serial(engine: Engine, streams: list[list[Utterance]]) -> tuple[list[float], list[str]]:
    """Per stream, the engine's seconds and what it heard, on one thread."""
    load = getattr(engine, "load", None)
    if load is not None:
        load()
    seconds, heard = [], []
    for utterances in streams:
        started = time.perf_counter()
        texts = [engine.transcribe(utterance.pcm).text for utterance in utterances]
        seconds.append(time.perf_counter() - started)
        heard.append(" ".join(texts))
    return seconds, heard


async def pooled(engine: Engine, streams: list[list[Utterance]], workers: int) -> float:
    """Wall time with the transcriber's pool: each stream's utterances in order, streams at once."""
    pool = EnginePool(engine, workers)
    await pool.warm_up()

    async def stream(utterances: list[Utterance]) -> None:
        for utterance in utterances:
            await pool.transcribe(utterance.pcm)

    started = time.perf_counter()
    await asyncio.gather(*(stream(u) for u in streams))
    pool.close()
    return time.perf_counter() - started


class Replay(MediaStreamTrack):
    """One participant's stream as aiortc delivers it: 20 ms frames on the wall clock."""

    kind = "audio"

    def __init__(self, track: np.ndarray, speed: float, go: asyncio.Event) -> None:
        super().__init__()
        self._stereo = np.repeat(track, 2)
        self.frames = len(track) // FRAME
        self.sent = 0
        self._speed = speed
        self._go = go
        self._start = 0.0

    async def recv(self) -> av.AudioFrame:
        if self.sent == 0:
            await self._go.wait()
            self._start = time.monotonic()
        if self.sent >= self.frames:
            raise MediaStreamError
        due = self._start + self.sent * AUDIO_PTIME / self._speed
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        frame = frame_at(self._stereo, self.sent)
        self.sent += 1
        return frame


async def live(engine: Engine, tracks: list[np.ndarray], workers: int, speed: float) -> None:
    """The streams through RemoteTrack and Listener, as the transcriber reads them."""
    pool = EnginePool(engine, workers)
    await pool.warm_up()
    go = asyncio.Event()
    replays = [Replay(track, speed, go) for track in tracks]
    chunks = [0] * len(tracks)
    last_chunk = [0.0]

    def count(index: int) -> None:
        chunks[index] += 1
        last_chunk[0] = time.monotonic()

    listeners = [
        Listener(
            f"speaker{i}",
            RemoteTrack(f"speaker{i}", "audio", "audio", replay),
            pool,
            lambda *_, i=i: count(i),
        )
        for i, replay in enumerate(replays)
    ]
    await asyncio.sleep(0.2)  # every reader waits for its first frame
    go.set()
    started, behind = time.monotonic(), 0
    while any(r.sent < r.frames for r in replays):
        behind = max(behind, *(listener.unread for listener in listeners))
        await asyncio.sleep(0.01)
    ended = time.monotonic()
    await asyncio.gather(*(listener.close(timeout=600) for listener in listeners))
    pool.close()
    sent = sum(r.sent for r in replays)
    read = sum(listener.frames for listener in listeners)
    spilled = sum(listener.backlog.spilled for listener in listeners)
    print(
        f"live, {engine.name}, {speed:g}x real time, {len(tracks)} streams for "
        f"{ended - started:.1f} s: "
        f"frames sent {sent}, read {read}, lost {sent - read}; reader at most {behind} frames "
        f"behind; utterances spilled to disk {spilled}; chunks {sum(chunks)}, the last "
        f"{max(0.0, last_chunk[0] - ended):.1f} s after the last frame"
    )


def report(
    make: Callable[[int], Engine],
    cut: list[tuple[list[Utterance], float]],
    said: list[str],
    duration: float,
    workers: int,
) -> None:
    """One engine's table: per stream, then the whole meeting on one core and in the pool."""
    streams = [utterances for utterances, _ in cut]
    engine = make(1)
    engine_seconds, heard = serial(engine, streams)
    print(f"\n{engine.name}:")
    print("stream  voice          utterances  speech s  vad s  engine s  RTF    WER")
    for i, ((utterances, vad), busy) in enumerate(zip(cut, engine_seconds, strict=True)):
        speech = sum(u.end_ms - u.start_ms for u in utterances) / 1000
        print(
            f"{i + 1:<7} {VOICES[i]:<14} {len(utterances):<11} {speech:<9.1f} {vad:<6.2f} "
            f"{busy:<9.2f} {(vad + busy) / duration:<6.3f} {wer(said[i], heard[i]):.2f}"
        )
    vad_total = sum(vad for _, vad in cut)
    total = (vad_total + sum(engine_seconds)) / duration
    print(
        f"whole meeting, one core (sum of all streams): RTF {total:.3f}, "
        f"WER {wer(' '.join(said), ' '.join(heard)):.2f}"
    )
    wall = asyncio.run(pooled(make(max(1, (os.cpu_count() or 1) // workers)), streams, workers))
    print(
        f"whole meeting, {workers} engine processes (wall, + VAD on the event loop): "
        f"RTF {(wall + vad_total) / duration:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="pocketsphinx", help="measured next to pocketsphinx")
    parser.add_argument(
        "--model", help="faster-whisper: a directory or a size (default: the tests')"
    )
    parser.add_argument("--device", default="cpu", help="faster-whisper: cpu, cuda or auto")
    parser.add_argument(
        "--compute-type", default="default", help="faster-whisper: int8, float16..."
    )
    parser.add_argument("--rounds", type=int, default=3, help="turns per speaker")
    parser.add_argument("--workers", type=int, default=2, help="engine processes")
    parser.add_argument("--speed", type=float, default=1.0, help="live playback, x real time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tracks, said = meeting(args.rounds, Path(folder))
        if args.engine == "faster-whisper" and args.model is None:
            from tiny_whisper import build

            args.model = str(build(Path(folder) / "tiny-whisper"))
        duration = len(tracks[0]) / RATE
        cut = [segment(track, 16000) for track in tracks]
        print(
            f"meeting: 4 speakers, {args.rounds} turns each, {duration:.1f} s of audio per stream"
        )
        threads = max(1, (os.cpu_count() or 1) // args.workers)
        for name in dict.fromkeys(["pocketsphinx", args.engine]):
            report(functools.partial(engine_for, args, name), cut, said, duration, args.workers)
        asyncio.run(live(engine_for(args, args.engine, threads), tracks, args.workers, args.speed))


def engine_for(args: argparse.Namespace, name: str, threads: int) -> Engine:
    """PocketSphinx as it ships; another engine with the command line's options."""
    if name == "pocketsphinx":
        return engine_named(name)
    return engine_named(
        name, EngineOptions(args.model, args.device, args.compute_type, "en", threads)
    )


if __name__ == "__main__":
    main()
