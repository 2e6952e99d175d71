"""One participant's audio cut into utterances, each stamped with epoch-ms times.

Audio arrives as aiortc decodes it (48 kHz s16 stereo) and is resampled to the engine's rate.
PocketSphinx's own `Endpointer` (a WebRTC-style VAD with a 0.3 s decision window, in the
pocketsphinx wheel, so no extra dependency) decides where speech starts and stops.

Times come from the audio timeline, not from when recognition finishes: the first frame's
arrival (wall clock) is the anchor and every sample advances it by 1/rate. Should frames stop
arriving for a while (the speaker muted, the network stalled), the anchor moves forward by the
gap, so later utterances keep wall-clock times; the audio itself is never altered.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import av
from pocketsphinx import Endpointer

GAP = 2.0
"""Seconds by which arrivals may run ahead of the sample count before the anchor moves."""
LONGEST = 15.0
"""Seconds of speech without a pause after which the utterance is cut anyway: a speaker who
never pauses still gets chunks, at the cost of a word split at the cut."""


@dataclass(frozen=True)
class Utterance:
    pcm: bytes
    start_ms: int
    end_ms: int


class Timeline:
    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.anchor_ms: float | None = None
        self.samples = 0

    def advance(self, samples: int, arrival_ms: float) -> None:
        if self.anchor_ms is None:
            self.anchor_ms = arrival_ms
        ahead = arrival_ms - self.ms(self.samples)
        if ahead > GAP * 1000:
            self.anchor_ms += ahead
        self.samples += samples

    def ms(self, samples: float) -> float:
        assert self.anchor_ms is not None
        return self.anchor_ms + 1000 * samples / self.rate


class Segmenter:
    """Feed av frames (any rate and layout), get the utterances they complete."""

    def __init__(self, rate: int, window: float = 0.3, ratio: float = 0.9, mode: int = 0) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        self._endpointer = Endpointer(window=window, ratio=ratio, vad_mode=mode, sample_rate=rate)
        self._frame_bytes = self._endpointer.frame_bytes
        self.timeline = Timeline(rate)
        self._pending = b""
        self._speech: list[bytes] = []
        self._start_ms = 0.0

    def feed(self, frame: av.AudioFrame, arrival_ms: float | None = None) -> list[Utterance]:
        arrival = time.time() * 1000 if arrival_ms is None else arrival_ms
        pcm = b"".join(f.to_ndarray().tobytes() for f in self._resampler.resample(frame))
        self.timeline.advance(len(pcm) // 2, arrival)
        return list(self._cut(pcm))

    def feed_pcm(self, pcm: bytes, arrival_ms: float) -> list[Utterance]:
        """Already at the engine's rate, s16 mono: for benchmarks and reference runs."""
        self.timeline.advance(len(pcm) // 2, arrival_ms)
        return list(self._cut(pcm))

    def _cut(self, pcm: bytes) -> Iterator[Utterance]:
        data = self._pending + pcm
        size = self._frame_bytes
        whole = len(data) - len(data) % size
        self._pending = data[whole:]
        for offset in range(0, whole, size):
            was_speech = self._endpointer.in_speech
            speech = self._endpointer.process(data[offset : offset + size])
            if speech is None:
                continue
            if not was_speech:
                self._start_ms = self._at(self._endpointer.speech_start)
                self._speech = []
            self._speech.append(speech)
            if not self._endpointer.in_speech:
                yield self._utterance(self._endpointer.speech_end)
            elif self._speech_seconds() >= LONGEST:
                yield self._cut_here()

    def flush(self) -> list[Utterance]:
        """The stream ended: the speech in progress, if any, is an utterance too."""
        if not self._endpointer.in_speech:
            return []
        speech = self._endpointer.end_stream(self._pending[: self._frame_bytes])
        self._pending = b""
        if speech:
            self._speech.append(speech)
        return [self._utterance(self._endpointer.speech_end)]

    def _utterance(self, end_seconds: float) -> Utterance:
        return self._utterance_until(self._at(end_seconds))

    def _utterance_until(self, end_ms: float) -> Utterance:
        start = int(self._start_ms)
        end = max(int(end_ms), start + 1)
        pcm, self._speech = b"".join(self._speech), []
        return Utterance(pcm, start, end)

    def _speech_seconds(self) -> float:
        return sum(len(part) for part in self._speech) / 2 / self.timeline.rate

    def _cut_here(self) -> Utterance:
        end_ms = self._start_ms + 1000 * self._speech_seconds()
        utterance = self._utterance_until(end_ms)
        self._start_ms = end_ms
        return utterance

    def _at(self, seconds: float) -> float:
        return self.timeline.ms(seconds * self.timeline.rate)


def split(pcm: bytes, rate: int, start_ms: float = 0.0, step: float = 0.02) -> Iterable[Utterance]:
    """Utterances of a whole recording at `rate`, as a live stream would give them."""
    segmenter = Segmenter(rate)
    chunk = int(rate * step) * 2
    for offset in range(0, len(pcm), chunk):
        now = start_ms + 1000 * offset / 2 / rate
        yield from segmenter.feed_pcm(pcm[offset : offset + chunk], now)
    yield from segmenter.flush()
