"""Speech-to-text engines: a small protocol, the engines that ship (tested ones only), and a
process pool that runs them off the event loop.

An engine takes one utterance (16-bit mono PCM at its own `sample_rate`) and answers its text
and a confidence in [0, 1]. Recognition holds the GIL (PocketSphinx does), so it runs in worker
processes: a thread would starve the event loop that carries the WebRTC media and the posts.
Engines are pickled into those processes, so they load their models there, once per process
(`load`, called as each process starts; the worker waits for all of them before it joins).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from agent.errors import EngineUnavailable

if TYPE_CHECKING:
    from faster_whisper import WhisperModel


@dataclass(frozen=True)
class Transcript:
    text: str
    confidence: float
    span: tuple[float, float] | None = None
    """Seconds into the utterance from the first word's start to the last word's end, for an
    engine that times words: chunks then start and end with the words, not the VAD's margins."""
    language: str | None = None
    """The language the engine heard (one that detects it), tagging chunks of `--language auto`."""


@dataclass(frozen=True)
class EngineOptions:
    """The command line's engine options; an engine refuses one it cannot honour."""

    model: str | None = None
    """A model name or directory; None: the engine's own default."""
    device: str = "auto"
    compute_type: str = "default"
    language: str | None = "en"
    """A language code; None: detect it in each utterance."""
    threads: int = 1
    """CPU threads per worker process."""


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

    def __init__(self, options: EngineOptions | None = None) -> None:
        if options is not None and options.model is not None:
            raise EngineUnavailable(
                "--model: pocketsphinx uses the model in its wheel (--model is for faster-whisper)"
            )
        self._config = {"loglevel": "FATAL", "bestpath": True}
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
        words = (s for s in decoder.seg() if not s.word.startswith(("<", "[", "+")))
        return Transcript(
            hyp.hypstr.strip(),
            _weighted((max(1, s.end_frame - s.start_frame + 1), s.prob) for s in words),
            language="en",
        )


def _weighted(words: Iterable[tuple[float, float]]) -> float:
    """The mean of (duration, probability) pairs' probabilities weighted by duration, in [0, 1];
    0 without words."""
    total = weight = 0.0
    for duration, probability in words:
        total += duration * min(1.0, max(0.0, probability))
        weight += duration
    return round(total / weight, 4) if weight else 0.0


class FasterWhisper:
    """Whisper on CTranslate2 (faster-whisper), from a local model directory or a size name
    (`base.en`, `small`, `large-v3`...) that the Hugging Face cache holds or that is fetched once,
    in the parent process, before the worker joins.

    Decoding is faster-whisper's beam search at temperature 0 only, without its sampling
    fallback: the same audio always gives the same text, and an utterance never costs six
    decodes. Words are timed (cross-attention alignment). Confidence is each word's probability
    (the mean of its tokens') averaged over the words, weighted by duration: PocketSphinx's
    measure, from the model's own probabilities.
    """

    name = "faster-whisper"
    sample_rate = 16000
    default_model = "base.en"

    def __init__(self, options: EngineOptions | None = None) -> None:
        self.options = options or EngineOptions()
        self.model = self.options.model or self.default_model
        self.path = model_path(self.model)
        self._model: WhisperModel | None = None

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_model": None}

    def load(self) -> WhisperModel:
        if self._model is None:
            from faster_whisper import WhisperModel

            options = self.options
            try:
                model = WhisperModel(
                    self.path,
                    device=options.device,
                    compute_type=options.compute_type,
                    cpu_threads=options.threads,
                )
            except (RuntimeError, ValueError, OSError) as e:
                raise EngineUnavailable(
                    f"--model {self.model!r} on --device {options.device}: cannot load it: {e}"
                ) from None
            if options.language not in (None, *model.supported_languages):
                raise EngineUnavailable(
                    f"--language {options.language!r}: model {self.model!r} knows "
                    f"{', '.join(model.supported_languages)}"
                )
            self._model = model
        return self._model

    def transcribe(self, pcm: bytes) -> Transcript:
        audio = np.frombuffer(pcm, np.int16).astype(np.float32) / 32768
        segments, info = self.load().transcribe(
            audio,
            language=self.options.language,
            temperature=0.0,
            word_timestamps=True,
            condition_on_previous_text=False,
        )
        segments = list(segments)
        words = [w for s in segments for w in s.words or ()]
        text = "".join(s.text for s in segments).strip()
        if not text:
            return Transcript("", 0.0)
        return Transcript(
            text,
            _weighted((max(w.end - w.start, 0.02), w.probability) for w in words),
            (words[0].start, words[-1].end) if words else None,
            info.language,
        )


LOOKUP = 10.0
"""Seconds the hub may take to answer whether a model exists: its client waits forever on a
network that drops packets, and a worker must fail, not hang, before it joins."""


def model_path(model: str) -> str:
    """A directory of `model`: itself, the Hugging Face cache's copy, or a fresh download."""
    if os.path.isdir(model):
        return model
    if os.sep in model and not re.fullmatch(r"[\w.-]+/[\w.-]+", model):  # not a hub id
        raise EngineUnavailable(f"--model {model!r}: no such directory")
    try:
        from faster_whisper.utils import _MODELS, download_model
        from huggingface_hub import model_info
    except ImportError as e:
        raise EngineUnavailable(
            f"--engine faster-whisper needs its extra: pip install 'connvo-agent[whisper]' ({e})"
        ) from None
    repo = model if "/" in model else _MODELS.get(model)
    if repo is None:
        raise EngineUnavailable(
            f"--model {model!r} is neither a model directory nor a size ({', '.join(_MODELS)})"
        )
    try:
        return str(download_model(model, local_files_only=True))
    except (OSError, ValueError):
        pass  # not in the cache
    try:
        model_info(repo, timeout=LOOKUP)
        return str(download_model(model))
    except Exception as e:  # the hub's errors are many (offline, not found, refused, timeout)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise EngineUnavailable(f"--model {model!r}: not in the cache, and {reason}") from None


EngineFactory = Callable[[EngineOptions], Engine]

ENGINES: dict[str, EngineFactory] = {"pocketsphinx": PocketSphinx, "faster-whisper": FasterWhisper}
"""Engines by name, for `--engine`: a class (or any callable) taking the EngineOptions. Register
your own here once you have tested it."""


def engine_factory(name: str) -> EngineFactory:
    try:
        return ENGINES[name]
    except KeyError:
        available = ", ".join(sorted(ENGINES))
        raise ValueError(f"unknown engine {name!r}; available: {available}") from None


def engine_named(name: str, options: EngineOptions | None = None) -> Engine:
    return engine_factory(name)(options or EngineOptions())


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
        """Until every worker process has started and loaded its model, so that the first
        utterance is not late; raises what loading raised (EngineUnavailable). Processes start
        on demand, and a ready one may take every job: rounds go on until each has answered."""
        loop = asyncio.get_running_loop()
        ready: set[int] = set()
        while len(ready) < self._workers:
            jobs = (loop.run_in_executor(self._pool, _loaded) for _ in range(self._workers))
            ready.update(await asyncio.gather(*jobs))

    async def transcribe(self, pcm: bytes) -> Transcript:
        return await asyncio.get_running_loop().run_in_executor(self._pool, _transcribe, pcm)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


_engine: Engine | None = None
_failure: Exception | None = None


def _install(engine: Engine) -> None:
    """A worker process's start: the model is loaded here, once per process."""
    global _engine, _failure
    _engine = engine
    load = getattr(engine, "load", None)
    try:
        if load is not None:
            load()
    except Exception as e:  # kept for warm_up to raise: a failing initializer only breaks the pool
        _failure = e


def _loaded() -> int:
    if _failure is not None:
        raise _failure
    time.sleep(0.05)  # leaves the next job to a process still starting
    return os.getpid()


def _transcribe(pcm: bytes) -> Transcript:
    assert _engine is not None
    return _engine.transcribe(pcm)
