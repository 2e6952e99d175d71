"""Speech-to-text engines: a small protocol, the engines that ship (tested ones only), and a
process pool that runs them off the event loop.

An engine takes one utterance (16-bit mono PCM at its own `sample_rate`) and answers its text
and a confidence in [0, 1]. Recognition holds the GIL (PocketSphinx does), so it runs in worker
processes: a thread would starve the event loop that carries the WebRTC media and the posts.
Engines are pickled into those processes, so they load their models lazily, on first use.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Transcript:
    text: str
    confidence: float


@runtime_checkable
class Engine(Protocol):
    name: str
    sample_rate: int

    def transcribe(self, pcm: bytes) -> Transcript:
        """One whole utterance of s16 mono PCM at `sample_rate`; "" when nothing was said."""
        ...


class _Hypothesis(Protocol):
    hypstr: str


class _Segment(Protocol):
    word: str
    start_frame: int
    end_frame: int
    prob: float


class _Decoder(Protocol):
    """What we use of pocketsphinx's Decoder (the package ships no types)."""

    def start_utt(self) -> None: ...
    def process_raw(
        self, data: bytes, no_search: bool = False, full_utt: bool = False
    ) -> object: ...
    def end_utt(self) -> None: ...
    def hyp(self) -> _Hypothesis | None: ...
    def seg(self) -> Iterable[_Segment]: ...


class PocketSphinx:
    """CMU PocketSphinx with the US English model its wheel carries: offline, no download.

    Confidence is the mean posterior probability of the recognised words (fillers and silences
    left out), weighted by each word's duration; the posteriors come from the lattice that
    `bestpath` builds. An utterance of fillers only has no words and confidence 0.
    """

    name = "pocketsphinx"
    sample_rate = 16000

    def __init__(self, **config: object) -> None:
        self._config = {"loglevel": "FATAL", "bestpath": True, **config}
        self._decoder: _Decoder | None = None

    def __getstate__(self) -> dict[str, object]:
        return {"_config": self._config, "_decoder": None}

    def load(self) -> _Decoder:
        if self._decoder is None:
            from pocketsphinx import Decoder

            self._decoder = Decoder(**self._config)
        return self._decoder

    def transcribe(self, pcm: bytes) -> Transcript:
        decoder = self.load()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        if hyp is None or not hyp.hypstr.strip():
            return Transcript("", 0.0)
        return Transcript(hyp.hypstr.strip(), _confidence(decoder.seg()))


def _confidence(segments: Iterable[_Segment]) -> float:
    total = weight = 0.0
    for seg in segments:
        if seg.word.startswith(("<", "[", "+")):
            continue
        frames = max(1, seg.end_frame - seg.start_frame + 1)
        total += frames * min(1.0, max(0.0, seg.prob))
        weight += frames
    return round(total / weight, 4) if weight else 0.0


ENGINES: dict[str, type[Engine]] = {"pocketsphinx": PocketSphinx}
"""Engines by name, for `--engine`. Register your own class here (its constructor takes no
arguments) once you have tested it."""


def engine_named(name: str) -> Engine:
    try:
        return ENGINES[name]()
    except KeyError:
        available = ", ".join(sorted(ENGINES))
        raise ValueError(f"unknown engine {name!r}; available: {available}") from None


class EnginePool:
    """Runs an engine in worker processes (spawned, not forked: the parent has threads)."""

    def __init__(self, engine: Engine, workers: int = 2) -> None:
        self.engine = engine
        context = multiprocessing.get_context("spawn")
        self._pool = ProcessPoolExecutor(
            workers, mp_context=context, initializer=_install, initargs=(engine,)
        )
        self._workers = workers

    async def warm_up(self) -> None:
        """Loads the model in every worker now, so the first utterance is not late."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._pool, _load) for _ in range(self._workers))
        )

    async def transcribe(self, pcm: bytes) -> Transcript:
        return await asyncio.get_running_loop().run_in_executor(self._pool, _transcribe, pcm)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


_engine: Engine | None = None


def _install(engine: Engine) -> None:
    global _engine
    _engine = engine


def _load() -> None:
    load = getattr(_engine, "load", None)
    if load is not None:
        load()


def _transcribe(pcm: bytes) -> Transcript:
    assert _engine is not None
    return _engine.transcribe(pcm)
