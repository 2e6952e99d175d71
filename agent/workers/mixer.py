"""The whole meeting's audio in one track: every participant's samples, summed where they fall on
one timeline (the recorder's start is t=0), mono AAC in MPEG-TS like the participant files.

A span is encoded only once LATENCY has passed, so a participant's late frames still land in
it; silence fills the time nobody speaks, so the mix is as long as the recording. The queue
holds QUEUE spans; past that a participant's thread waits for the mixer (backpressure: summing
is cheap, so this only happens with the CPU starved), and nothing is dropped here.
"""

from __future__ import annotations

import fractions
import queue
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

from agent.media.constants import SAMPLE_RATE
from agent.workers.files import END, MUXER_OPTIONS, Recording

LATENCY = 1.0
TICK = 0.25
QUEUE = 500
"""Spans waiting to be summed: 10 s of one participant's 20 ms frames."""


class Mixer(Recording):
    kind = "mix"

    def __init__(self, path: Path, started: float) -> None:
        self._base = 0  # timeline sample index of _buffer[0]
        self._buffer = np.zeros(0, np.float32)
        super().__init__(path, started, None, None, maxsize=QUEUE)
        self.audio = {"codec": "aac", "sampleRate": SAMPLE_RATE, "channels": 1}

    def add(self, file_started: float, at_sample: int, mono: np.ndarray) -> None:
        """From any recording's thread: `mono` (float, -1..1) starts at `at_sample` of a file
        that started at `file_started` (time.monotonic())."""
        offset = round((file_started - self.started) * SAMPLE_RATE)
        self._hand((offset + at_sample, mono))

    def _run(self) -> None:
        container = av.open(str(self.path), "w", format="mpegts", options=MUXER_OPTIONS)
        stream = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        next_tick = time.monotonic() + TICK
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, next_tick - time.monotonic()))
            except queue.Empty:
                item = None
            if item is END:
                break
            if item is not None:
                self._sum(*item)
            if time.monotonic() >= next_tick:
                horizon = (time.monotonic() - self.started - LATENCY) * SAMPLE_RATE
                self._encode(container, stream, int(horizon))
                next_tick += TICK
        self._encode(container, stream, self._base + len(self._buffer))
        container.mux(stream.encode(None))
        container.close()
        self.complete = True

    def _sum(self, at: int, mono: np.ndarray) -> None:
        start = at - self._base
        if start < 0:  # later than LATENCY: that span is already written
            mono, start = mono[-start:], 0
        end = start + len(mono)
        if end > len(self._buffer):
            self._buffer = np.concatenate(
                [self._buffer, np.zeros(end - len(self._buffer), np.float32)]
            )
        self._buffer[start:end] += mono

    def _encode(self, container: Any, stream: Any, upto: int) -> None:
        count = upto - self._base
        if count <= 0:
            return
        chunk = np.zeros(count, np.float32)
        have = min(count, len(self._buffer))
        chunk[:have] = self._buffer[:have]
        self._buffer = self._buffer[have:]
        frame = av.AudioFrame.from_ndarray(
            np.clip(chunk, -1, 1).reshape(1, -1), format="flt", layout="mono"
        )
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._base
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        container.mux(stream.encode(frame))
        self._base = upto
        self.duration = upto / SAMPLE_RATE
