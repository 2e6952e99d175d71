"""Real-time factor of the transcription pipeline for a meeting of 4 people taking turns.

    .venv/bin/python scripts/bench_transcribe.py [--rounds 3] [--workers 2]

Four espeak-ng voices read sentences in turn; each participant's stream lasts the whole meeting
(silence while the others speak), in 20 ms frames of 48 kHz s16 stereo, as aiortc hands them
over. Per stream: resampling + VAD time, then engine time, over the meeting's duration. For the
whole meeting: the sum of all streams' work (one core), then the wall time when the utterances
go through the worker's process pool, as the transcriber runs them. RTF < 1 keeps up.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import subprocess
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from agent.workers.engines import EnginePool, PocketSphinx
from agent.workers.utterances import Segmenter, Utterance

RATE = 48000
FRAME = 960
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


def meeting(rounds: int, folder: Path) -> list[np.ndarray]:
    """Each speaker's mono 48 kHz track; one speaks at a time, a pause between turns."""
    turns = [(i % 4, SENTENCES[i % len(SENTENCES)]) for i in range(rounds * 4)]
    clips = [(who, say(VOICES[who], text, folder)) for who, text in turns]
    length = sum(len(c) + int(PAUSE * RATE) for _, c in clips)
    tracks = [np.zeros(length, dtype=np.int16) for _ in VOICES]
    at = 0
    for who, clip in clips:
        tracks[who][at : at + len(clip)] = clip
        at += len(clip) + int(PAUSE * RATE)
    return tracks


def segment(track: np.ndarray, rate: int) -> tuple[list[Utterance], float]:
    """The stream as 20 ms stereo frames through the Segmenter; answers utterances and seconds."""
    segmenter = Segmenter(rate)
    stereo = np.repeat(track, 2)
    utterances: list[Utterance] = []
    started = time.process_time()
    for index in range(len(track) // FRAME):
        samples = stereo[index * FRAME * 2 : (index + 1) * FRAME * 2].reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="stereo")
        frame.sample_rate, frame.pts = RATE, index * FRAME
        frame.time_base = fractions.Fraction(1, RATE)
        utterances += segmenter.feed(frame, 1000 * index * FRAME / RATE)
    utterances += segmenter.flush()
    return utterances, time.process_time() - started


def serial(streams: list[list[Utterance]]) -> list[float]:
    engine = PocketSphinx()
    engine.load()
    seconds = []
    for utterances in streams:
        started = time.perf_counter()
        for utterance in utterances:
            engine.transcribe(utterance.pcm)
        seconds.append(time.perf_counter() - started)
    return seconds


async def pooled(streams: list[list[Utterance]], workers: int) -> float:
    """Wall time with the transcriber's pool: each stream's utterances in order, streams at once."""
    pool = EnginePool(PocketSphinx(), workers)
    await pool.warm_up()

    async def stream(utterances: list[Utterance]) -> None:
        for utterance in utterances:
            await pool.transcribe(utterance.pcm)

    started = time.perf_counter()
    await asyncio.gather(*(stream(u) for u in streams))
    pool.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="turns per speaker")
    parser.add_argument("--workers", type=int, default=2, help="engine processes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tracks = meeting(args.rounds, Path(folder))
    duration = len(tracks[0]) / RATE
    cut = [segment(track, PocketSphinx.sample_rate) for track in tracks]
    streams = [utterances for utterances, _ in cut]
    engine_seconds = serial(streams)
    print(f"meeting: 4 speakers, {args.rounds} turns each, {duration:.1f} s of audio per stream")
    print("stream  voice          utterances  speech s  vad s  engine s  RTF")
    for i, ((utterances, vad), busy) in enumerate(zip(cut, engine_seconds, strict=True)):
        speech = sum(u.end_ms - u.start_ms for u in utterances) / 1000
        rtf = (vad + busy) / duration
        print(
            f"{i + 1:<7} {VOICES[i]:<14} {len(utterances):<11} {speech:<9.1f} "
            f"{vad:<6.2f} {busy:<9.2f} {rtf:.3f}"
        )
    total = sum(vad for _, vad in cut) + sum(engine_seconds)
    print(f"whole meeting, one core (sum of all streams): RTF {total / duration:.3f}")
    wall = asyncio.run(pooled(streams, args.workers))
    vad_wall = sum(vad for _, vad in cut)
    print(
        f"whole meeting, {args.workers} engine processes (wall, + VAD on the event loop): "
        f"RTF {(wall + vad_wall) / duration:.3f}"
    )


if __name__ == "__main__":
    main()
