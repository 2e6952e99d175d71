"""What a participant would experience of one received stream, computed from RTP alone (load bots
count media, they never decode it): video freezes and frame rate, audio concealment, end-to-end
delay, and an audio MOS estimate from ITU-T G.107's E-model.

- A video frame is shown when its last packet (the marker bit) arrives. A freeze is a gap
  between shown frames of at least max(3 x the mean frame interval, mean + 150 ms), the mean
  over the last 30 intervals including this gap, in whole milliseconds rounded down, once there
  are 5: the rule of the browsers' `freezeCount` (libwebrtc's
  `video/video_quality_observer2.cc`, `OnRenderedFrame`). Without a decoder, a frame
  that lost another of its packets, or refers to a lost frame, still counts as shown: under loss
  the freezes are a lower bound (the loss itself shows in `fps_ratio` and the audio's
  concealment).
- Audio: every packet is 20 ms; a missing sequence number is 20 ms concealed (`concealed_ratio`).
- End-to-end delay: load bots stamp each frame's capture time in its RTP timestamp (the wall
  clock in the codec's clock rate, `capture_timestamp`), so a receiver on the same clock (the
  same machine, or NTP-synced ones) reads the exact one-way delay from capture to arrival. A
  stream whose timestamps do not follow that convention gives no delay samples.
- MOS (`mos`): R = 93.2 - Id - Ie_eff, with Id from the one-way delay d (ms; the p50 end-to-end
  delay plus twice the jitter plus 10 ms of jitter buffer),
  Id = 0.024 d + 0.11 (d - 177.3) H(d - 177.3), and Ie_eff = Ie + (95 - Ie) Ppl / (Ppl + Bpl)
  with Ppl the loss in percent, Ie = 0 and Bpl = 25.1 (G.113's figures for G.711 with packet
  loss concealment; G.113 has none for Opus, whose concealment is no worse). Then
  MOS = 1 + 0.035 R + 7e-6 R (R - 60) (100 - R), clamped to [1, 4.5]: 4.41 for a clean path.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

MASK = 0xFFFFFFFF
MAX_DELAY = 10.0
"""Seconds: a longer computed delay means the sender does not stamp capture times."""
MEAN_OVER = 30
MIN_INTERVALS = 5
"""Intervals in the mean before a freeze can be told (libwebrtc: kMinFrameSamplesToDetectFreeze)."""
MAX_SAMPLES = 4096


def capture_timestamp(captured: float, clock_rate: int) -> int:
    """The RTP timestamp of a frame captured at `captured` (epoch seconds)."""
    return int(captured * clock_rate) & MASK


def nearest_rank(values: list[float], pct: float) -> float:
    """The smallest value with pct% of them at or below it."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


@dataclass
class StreamQoE:
    """One received stream (one SSRC) of a counting receiver."""

    kind: str
    clock_rate: int
    frames: int = 0
    expected: int = 0
    """Audio: packets due (first to highest sequence number); video: unused."""
    freeze_count: int = 0
    freeze_time: float = 0.0
    first_at: float | None = None
    last_at: float | None = None
    delays: list[float] = field(default_factory=list)
    """Seconds from capture to arrival, decimated past MAX_SAMPLES."""
    _intervals: deque[int] = field(default_factory=lambda: deque(maxlen=MEAN_OVER))
    """Milliseconds between shown frames, as libwebrtc counts them: differences of whole-ms
    (rounded) times."""
    _base_seq: int | None = None
    _highest: int = 0  # extended past 16 bits
    _received: int = 0
    _seen_delays: int = 0
    _stride: int = 1
    _transit: float | None = None
    jitter: float = 0.0
    """Interarrival jitter (RFC 3550), seconds: of packets for audio, of frames for video."""

    def packet(self, seq: int, timestamp: int, marker: bool, now: float) -> None:
        """One RTP packet (retransmissions excluded), arrived at `now` (time.monotonic())."""
        if self.kind == "audio":
            self._audio(seq)
            self._delay(timestamp)
            self._shown(now)
            return
        if marker:
            self._delay(timestamp)
            self._shown(now)

    # --- what the participant saw and heard ------------------------------------------------------

    @property
    def watched(self) -> float:
        return (
            0.0 if self.first_at is None or self.last_at is None else self.last_at - self.first_at
        )

    @property
    def freeze_ratio(self) -> float:
        return self.freeze_time / self.watched if self.watched else 0.0

    @property
    def fps(self) -> float:
        return (self.frames - 1) / self.watched if self.watched else 0.0

    @property
    def concealed_ratio(self) -> float:
        return max(0, self.expected - self._received) / self.expected if self.expected else 0.0

    def delay_ms(self, pct: float) -> float | None:
        return 1000 * nearest_rank(self.delays, pct) if self.delays else None

    def mos(self) -> float | None:
        """The E-model's estimate for an audio stream (None for video, or before any delay)."""
        delay = self.delay_ms(50)
        if self.kind != "audio" or delay is None:
            return None
        return mos(delay + 2000 * self.jitter + 10, 100 * self.concealed_ratio)

    def close(self, now: float) -> None:
        """Ends the watch at `now`: a stream that stopped is frozen since its last frame (where
        libwebrtc would call it a pause: a participant sees a frozen picture all the same)."""
        if self.last_at is None or self.kind != "video":
            return
        gap = now - self.last_at
        if self._is_freeze(_ms(now) - _ms(self.last_at)):
            self.freeze_count += 1
            self.freeze_time += gap
            self.last_at = now

    def summary(self, sent_fps: float) -> dict[str, float | None]:
        out: dict[str, float | None] = {
            "frames": self.frames,
            "jitter_ms": round(1000 * self.jitter, 1),
            "e2e_latency_p50_ms": _round(self.delay_ms(50)),
            "e2e_latency_p95_ms": _round(self.delay_ms(95)),
        }
        if self.kind == "audio":
            out["concealed_ratio"] = round(self.concealed_ratio, 4)
            out["mos"] = _round(self.mos(), 2)
        else:
            out["freeze_count"] = self.freeze_count
            out["freeze_time_s"] = round(self.freeze_time, 3)
            out["freeze_ratio"] = round(self.freeze_ratio, 4)
            out["fps"] = round(self.fps, 2)
            out["fps_ratio"] = round(self.fps / sent_fps, 3) if sent_fps else None
            out["watched_s"] = round(self.watched, 3)
            out["frames_sent"] = round(sent_fps * self.watched) + 1 if self.frames else 0
        return out

    # --- bookkeeping ---------------------------------------------------------------------------

    def _audio(self, seq: int) -> None:
        if self._base_seq is None:
            self._base_seq = self._highest = seq
        else:
            ahead = (seq - self._highest) & 0xFFFF
            if ahead < 0x8000:  # newer (a late one is behind: it fills a gap, moves nothing)
                self._highest += ahead
        self._received += 1
        self.expected = self._highest - self._base_seq + 1

    def _shown(self, now: float) -> None:
        self.frames += 1
        if self.last_at is not None:
            gap, gap_ms = now - self.last_at, _ms(now) - _ms(self.last_at)
            if self.kind == "video" and self._is_freeze(gap_ms):
                self.freeze_count += 1
                self.freeze_time += gap
            self._intervals.append(gap_ms)
        else:
            self.first_at = now
        self.last_at = now

    def _is_freeze(self, gap_ms: int) -> bool:
        """With `gap_ms` counted in the window, as libwebrtc adds it before it checks."""
        held = len(self._intervals)
        full = held == MEAN_OVER  # the gap pushes the oldest out
        count = held + (0 if full else 1)
        if count < MIN_INTERVALS:
            return False
        total = sum(self._intervals) - (self._intervals[0] if full else 0) + gap_ms
        mean_ms = total // count
        return gap_ms >= max(3 * mean_ms, mean_ms + 150)

    def _delay(self, timestamp: int) -> None:
        arrived = capture_timestamp(time.time(), self.clock_rate)
        delay = ((arrived - timestamp) & MASK) / self.clock_rate
        if delay > MAX_DELAY:
            return
        if self._transit is not None:
            self.jitter += (abs(delay - self._transit) - self.jitter) / 16
        self._transit = delay
        self._seen_delays += 1
        if self._seen_delays % self._stride:
            return
        self.delays.append(delay)
        if len(self.delays) >= MAX_SAMPLES:
            self.delays = self.delays[::2]
            self._stride *= 2


def mos(delay_ms: float, loss_percent: float, ie: float = 0.0, bpl: float = 25.1) -> float:
    """ITU-T G.107's R-factor (delay and loss impairments, defaults elsewhere) as a MOS."""
    d = delay_ms
    i_d = 0.024 * d + (0.11 * (d - 177.3) if d > 177.3 else 0.0)
    i_e = ie + (95 - ie) * loss_percent / (loss_percent + bpl)
    r = 93.2 - i_d - i_e
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return min(4.5, 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r))


def _ms(seconds: float) -> int:
    return round(1000 * seconds)


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)
