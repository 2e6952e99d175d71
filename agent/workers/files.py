"""One remote participant's recording, written by the file's own thread so that the event loop
only hands frames over: `ParticipantFile` (what both formats share: the bounded queue, the
thread, the clock), and `TsFile`, h264 video and AAC audio in MPEG-TS, transcoded from the
decoded frames (agent.workers.matroska copies them as received instead).

MPEG-TS because it has no index or trailer to lose: every 188-byte packet stands alone, so a file
cut anywhere (a SIGKILL) decodes up to the cut. Packets reach the kernel as they are muxed
(`flush_packets`), x264 runs with `zerolatency` (no lookahead holding frames back) and the
interleaver waits at most half a second for a quiet stream: a kill loses about a second.

Bounded, and never silently: frames arrive in real time from peers that cannot be slowed
down, so the event loop hands them over without ever waiting. Each file's queue holds at most
BACKLOG bytes of frames per kind; should its writer fall that far behind (a starved CPU), new
frames of that kind are dropped, counted in `dropped` (and the manifest), and logged when the
dropping starts and when the file closes. Video has the smaller budget in time, so it goes
first; missing audio becomes silence, so the file keeps real time. The mix's queue is bounded
too, but there the participants' threads wait for the mixer (backpressure), so it drops nothing.
"""

from __future__ import annotations

import fractions
import logging
import queue
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import av
import numpy as np

from agent.media.constants import SAMPLE_RATE, VIDEO_CLOCK
from agent.workers.manifest import times

log = logging.getLogger(__name__)

GAP = 0.1
"""Seconds of missing audio worth filling with silence (mute, loss, a stalled peer)."""
DRIFT = 2.0
"""Seconds a track's own timestamps may stray from arrival time before they are re-anchored."""
START_WAIT = 2.0
"""Seconds to wait for the first video frame, whose size the header needs."""
DEFAULT_SIZE = (640, 480)
BACKLOG = {"audio": 8 * 2**20, "video": 64 * 2**20}
"""Bytes of frames a file's queue holds per kind: ~40 s of 48 kHz stereo audio, ~4 s of
640x480 video at 30 fps."""
TICK = 0.1
"""Seconds between a file's batches: its thread takes what came meanwhile all at once, rather
than being woken for every frame (a wake-up costs more than copying a frame)."""
MUXER_OPTIONS = {"flush_packets": "1", "max_interleave_delta": "500000"}
X264_OPTIONS = {"preset": "ultrafast", "tune": "zerolatency", "crf": "26", "g": "60"}

END = object()


class Recording:
    """What every written file tells the manifest; `duration` grows while it is written."""

    kind = "participant"
    format = "ts"

    def __init__(
        self,
        path: Path,
        started: float,
        user_id: str | None,
        session: str | None,
        maxsize: int = 0,
    ) -> None:
        self.path = path
        self.started = started  # time.monotonic() of the file's t=0
        self.started_epoch = time.time() - (time.monotonic() - started)
        self.user_id = user_id
        self.session_id = session
        self.duration = 0.0
        self.complete = False
        self.audio: dict[str, Any] | None = None
        self.video: dict[str, Any] | None = None
        self.dropped = {"audio": 0, "video": 0}
        """Frames given up because the encoder was BACKLOG behind (logged, never silent)."""
        self._queue: queue.Queue[Any] = queue.Queue(maxsize)
        self._thread = threading.Thread(target=self._guarded, name=f"record {path.name}")
        self._thread.start()

    def describe(self) -> dict[str, Any]:
        end = self.started_epoch + self.duration if self.duration else None
        return {
            "file": self.path.name,
            "kind": self.kind,
            "format": self.format,
            "userId": self.user_id,
            "sessionId": self.session_id,
            **times("start", self.started_epoch),
            **times("end", end),
            "duration": round(self.duration, 3),
            "complete": self.complete,
            "audio": self.audio,
            "video": self.video,
            "dropped": dict(self.dropped),
        }

    def finish(self) -> None:
        """Blocks until the file is closed: call it from a thread (asyncio.to_thread)."""
        self._hand(END)
        self._thread.join()

    def _hand(self, item: Any) -> bool:
        """Queues `item`, waiting while the queue is full, as long as the file's thread runs
        (one that failed was logged and reads nothing more)."""
        while self._thread.is_alive():
            try:
                self._queue.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def _guarded(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("recording %s failed", self.path.name)

    def _run(self) -> None:
        raise NotImplementedError


class Clock:
    """Maps a track's own timestamps to seconds since the file started. RTP timestamps are smooth
    where arrival times jitter, but start anywhere and jump on a new connection: they are anchored
    to arrival time, and anchored again when they stray by more than DRIFT."""

    def __init__(self, started: float) -> None:
        self._started = started
        self._offset: float | None = None

    def place(self, frame_time: float | None, arrival: float) -> float:
        arrived = arrival - self._started
        if frame_time is None:
            return arrived
        if self._offset is None or abs(frame_time + self._offset - arrived) > DRIFT:
            self._offset = arrived - frame_time
        return max(0.0, frame_time + self._offset)


class ParticipantFile(Recording):
    """Audio and/or one video track of one participant's session; `kinds` says which streams the
    file has (decided before the header: neither format here can add a stream later). The
    event loop hands frames over with `put`; the file's thread writes them (`_open` once
    `_ready`, then `_write`) in a subclass's format."""

    def __init__(
        self,
        path: Path,
        started: float,
        user_id: str,
        session: str,
        kinds: frozenset[str],
        *,
        label: str = "camera",
        mix: Any | None = None,
    ) -> None:
        self.kind = "screen" if label == "screen" else "participant"
        self._kinds = kinds
        self._mix = mix
        self._container: Any = None
        self._streams: dict[str, Any] = {}
        self._clocks = {kind: Clock(started) for kind in ("audio", "video")}
        self._queued = {"audio": 0, "video": 0}  # bytes, shared with the thread: under _lock
        self._lock = threading.Lock()
        self._dropping = {"audio": False, "video": False}
        self._frames: deque[tuple[str, Any, float, int]] = deque()
        super().__init__(path, started, user_id, session)

    def put(self, kind: str, frame: Any, arrival: float) -> None:
        """From the event loop: never blocks; the frame is only read, never changed, here on."""
        size = _size(frame)
        with self._lock:
            room = self._queued[kind] + size <= BACKLOG[kind] and self._thread.is_alive()
            if room:
                self._queued[kind] += size
        if not room:
            self._drop(kind)
            return
        self._dropping[kind] = False
        self._frames.append((kind, frame, arrival, size))

    def _drop(self, kind: str) -> None:
        self.dropped[kind] += 1
        if not self._dropping[kind] and self._thread.is_alive():  # a failed thread was logged
            log.warning("%s: the writer is behind; dropping %s frames", self.path.name, kind)
        self._dropping[kind] = True

    # --- the file's thread --------------------------------------------------------------------

    def _run(self) -> None:
        pending: list[tuple[str, Any, float]] = []
        ended = False
        while not ended:
            ended = self._tick()
            while self._frames:
                kind, frame, arrival, size = self._frames.popleft()
                with self._lock:
                    self._queued[kind] -= size
                if self._container is None:
                    pending.append((kind, frame, arrival))
                else:
                    self._write(kind, frame, arrival)
            if self._container is None and pending and (ended or self._ready(pending)):
                self._open(pending)
                pending = []
        self._close()
        if any(self.dropped.values()):
            log.warning("%s: frames dropped, writer behind: %s", self.path.name, self.dropped)

    def _tick(self) -> bool:
        """Waits TICK, or less when the file is finished (then answers True)."""
        try:
            return self._queue.get(timeout=TICK) is END
        except queue.Empty:
            return False

    def _ready(self, pending: list[tuple[str, Any, float]]) -> bool:
        raise NotImplementedError

    def _open(self, pending: list[tuple[str, Any, float]]) -> None:
        raise NotImplementedError

    def _write(self, kind: str, frame: Any, arrival: float) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError


def _size(frame: Any) -> int:
    planes = getattr(frame, "planes", None)
    return len(frame.data) if planes is None else sum(plane.buffer_size for plane in planes)


class TsFile(ParticipantFile):
    """h264 and AAC in MPEG-TS: every frame decoded (by aiortc) and encoded again."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=SAMPLE_RATE)
        self._next_sample = 0
        self._video_end = 0.0
        self._last_pts = -1
        super().__init__(*args, **kwargs)

    def _ready(self, pending: list[tuple[str, Any, float]]) -> bool:
        if not pending:
            return False
        if "video" not in self._kinds or any(kind == "video" for kind, _, _ in pending):
            return True
        return time.monotonic() - pending[0][2] > START_WAIT

    def _open(self, pending: list[tuple[str, Any, float]]) -> None:
        c = av.open(str(self.path), "w", format="mpegts", options=MUXER_OPTIONS)
        if "audio" in self._kinds:
            audio = c.add_stream("aac", rate=SAMPLE_RATE, layout="stereo")
            self._streams["audio"] = audio
            self.audio = {"codec": "aac", "sampleRate": SAMPLE_RATE, "channels": 2}
        if "video" in self._kinds:
            first = next((f for kind, f, _ in pending if kind == "video"), None)
            width, height = (first.width, first.height) if first else DEFAULT_SIZE
            video = c.add_stream("libx264", rate=30, options=X264_OPTIONS)
            video.width, video.height = width - width % 2, height - height % 2
            video.pix_fmt = "yuv420p"
            video.codec_context.time_base = fractions.Fraction(1, VIDEO_CLOCK)
            self._streams["video"] = video
            self.video = {"codec": "h264", "width": video.width, "height": video.height}
        self._container = c
        for item in pending:
            self._write(*item)

    def _write(self, kind: str, frame: Any, arrival: float) -> None:
        if kind not in self._streams:
            return
        at = self._clocks[kind].place(frame.time, arrival)
        if kind == "audio":
            self._write_audio(frame, at)
        else:
            self._write_video(frame, at)
        self.duration = max(self._next_sample / SAMPLE_RATE, self._video_end)

    def _write_audio(self, frame: av.AudioFrame, at: float) -> None:
        target = round(at * SAMPLE_RATE)
        if target - self._next_sample > GAP * SAMPLE_RATE:
            self._silence(target - self._next_sample)
        for out in self._resampler.resample(frame):
            self._samples(out.to_ndarray().reshape(-1, 2))

    def _silence(self, count: int) -> None:
        while count > 0:
            n = min(count, SAMPLE_RATE)
            self._samples(np.zeros((n, 2), np.int16), mixed=False)
            count -= n

    def _samples(self, samples: np.ndarray, mixed: bool = True) -> None:
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._next_sample
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        if mixed and self._mix is not None:
            mono = samples.mean(axis=1, dtype=np.float32) / 32768
            self._mix.add(self.started, self._next_sample, mono)
        self._next_sample += len(samples)
        self._mux("audio", frame)

    def _write_video(self, frame: av.VideoFrame, at: float) -> None:
        stream = self._streams["video"]
        pts = max(round(at * VIDEO_CLOCK), self._last_pts + 1)
        scaled = frame.reformat(width=stream.width, height=stream.height, format="yuv420p")
        copy = av.VideoFrame.from_ndarray(scaled.to_ndarray(), format="yuv420p")
        copy.pts, copy.time_base = pts, fractions.Fraction(1, VIDEO_CLOCK)
        self._last_pts = pts
        self._video_end = pts / VIDEO_CLOCK
        self._mux("video", copy)

    def _mux(self, kind: str, frame: Any) -> None:
        stream = self._streams[kind]
        self._container.mux(stream.encode(frame))

    def _close(self) -> None:
        if self._container is None:
            return
        if "audio" in self._streams and self._video_end - self.duration_audio > GAP:
            self._silence(round((self._video_end - self.duration_audio) * SAMPLE_RATE))
        for stream in self._streams.values():
            self._container.mux(stream.encode(None))
        self._container.close()
        self.duration = max(self.duration_audio, self._video_end)
        self.complete = True

    @property
    def duration_audio(self) -> float:
        return self._next_sample / SAMPLE_RATE
