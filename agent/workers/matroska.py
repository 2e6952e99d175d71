"""One remote participant's recording as received: the sender's VP8 or H.264 and Opus, never
decoded, copied into Matroska (`.webm` when every codec is one of WebM's: VP8 and Opus).

Crash-safe like MPEG-TS: Matroska is written cluster by cluster, a cluster at most CLUSTER_MS
long, each handed to the kernel as it closes (`flush_packets`); only the index (cues) and the
duration wait for the end. A file cut anywhere (a SIGKILL) lacks them and its last cluster, and
demuxers read it to the cut: about a second lost.

The first video written is a keyframe: frames the receiver marks `broken` (before the stream's
first keyframe, and after a loss until the next; agent.media.passthrough asks the sender for
one) are dropped and counted in `beforeKeyframe`. The header waits for the first keyframe, at
most KEYFRAME_WAIT: it carries the picture size (agent.media.bitstream), and H.264's parameter
sets, which the header needs.

Timing: RTP timestamps anchored to arrival (files.Clock). A gap (mute, loss, a stalled peer)
stays a gap in the timestamps, not filled: players hold the last picture and play silence.
With a mix, Opus is decoded for the mix only; the file keeps the packets as they came.
"""

from __future__ import annotations

import fractions
import io
import logging
import struct
import time
from typing import Any

import av
import numpy as np

from agent.media.bitstream import H264_PPS, H264_SPS, nal_units, picture_size
from agent.media.constants import SAMPLE_RATE
from agent.media.passthrough import EncodedFrame
from agent.workers.files import ParticipantFile

log = logging.getLogger(__name__)

KEYFRAME_WAIT = 5.0
"""Seconds the header waits for the first keyframe; past that the file starts without it (VP8,
or no video yet: VP8 is assumed, the header says PLACEHOLDER_SIZE and the decoder reads the
keyframe's own; H.264: no video, its header needs the parameter sets)."""
PLACEHOLDER_SIZE = (640, 480)
CLUSTER_MS = 500
MUXER_OPTIONS = {
    "cluster_time_limit": str(CLUSTER_MS),
    "flush_packets": "1",
    "max_interleave_delta": "500000",
}
TEMPLATES = {"VP8": "libvpx", "H264": "libx264", "opus": "libopus"}
"""A stream's codec, by RTP name: its encoder only names the codec, it is never opened."""
WEBM = {"VP8", "opus"}
OPUS_HEAD = b"OpusHead" + struct.pack("<BBHIhB", 1, 2, 0, SAMPLE_RATE, 0, 0)
"""RFC 7845 5.1: stereo (WebRTC signals opus/48000/2), no pre-skip (the stream is joined
midway, its encoder's priming samples long gone)."""


class MkvFile(ParticipantFile):
    format = "mkv"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.before_keyframe = 0
        """Video frames dropped because no keyframe preceded them (a file's start, a loss)."""
        self._codecs: dict[str, str] = {}
        self._keyed = False
        self._last = {"audio": -1, "video": -1}
        self._refusing = False
        self._decoder: Any = None
        super().__init__(*args, **kwargs)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "beforeKeyframe": self.before_keyframe}

    # --- the file's thread --------------------------------------------------------------------

    def _ready(self, pending: list[tuple[str, Any, float]]) -> bool:
        if not pending:
            return False
        if "video" not in self._kinds or _keyframe(pending):
            return True
        return time.monotonic() - pending[0][2] > KEYFRAME_WAIT

    def _open(self, pending: list[tuple[str, Any, float]]) -> None:
        audio = next((f for kind, f, _ in pending if kind == "audio"), None)
        video = _keyframe(pending) or next((f for k, f, _ in pending if k == "video"), None)
        wanted = {  # a kind not heard from yet (a camera still off): the usual codec
            "audio": audio.codec if audio else "opus",
            "video": video.codec if video else "VP8",
        }
        codecs = {k: c for k, c in wanted.items() if k in self._kinds and c in TEMPLATES}
        if codecs.keys() != self._kinds:
            log.warning("%s: cannot copy %s", self.path.name, wanted)
        if set(codecs.values()) <= WEBM:
            self.format = "webm"
            self.path = self.path.with_suffix(".webm")
        muxer = "webm" if self.format == "webm" else "matroska"
        self._container = av.open(str(self.path), "w", format=muxer, options=MUXER_OPTIONS)
        for kind, codec in codecs.items():
            self._add(kind, codec, video)
        for item in pending:
            self._write(*item)

    def _add(self, kind: str, codec: str, video: EncodedFrame | None) -> None:
        if kind == "audio":
            settings: dict[str, Any] = {
                "sample_rate": SAMPLE_RATE,
                "layout": "stereo",
                "extradata": OPUS_HEAD,
            }
            self.audio = {"codec": codec, "sampleRate": SAMPLE_RATE, "channels": 2}
            if self._mix is not None:
                self._decoder = av.CodecContext.create("opus", "r")
        else:
            size = picture_size(codec, video.data) if video and video.keyframe else None
            width, height = size or (None, None)
            settings = dict(zip(("width", "height"), size or PLACEHOLDER_SIZE, strict=True))
            if codec == "H264":
                if video is None or not video.keyframe:
                    return
                settings["extradata"] = _parameter_sets(video.data)
            self.video = {"codec": codec, "width": width, "height": height}
        template = av.open(io.BytesIO(), "w", format="matroska").add_stream(TEMPLATES[codec])
        stream = self._container.add_stream_from_template(template, opaque=True)
        for name, value in settings.items():
            setattr(stream.codec_context, name, value)
        self._streams[kind] = stream
        self._codecs[kind] = codec

    def _write(self, kind: str, frame: EncodedFrame, arrival: float) -> None:
        if kind not in self._streams or frame.codec != self._codecs[kind]:
            return self._refuse(kind, f"{frame.codec} where {self._codecs.get(kind)} was set up")
        if kind == "video":
            if frame.broken or not (self._keyed or frame.keyframe):
                self.before_keyframe += 1
                return None
            self._keyed = True
        at = self._clocks[kind].place(frame.time, arrival)
        pts = max(round(at * frame.clock_rate), self._last[kind] + 1)
        packet = av.Packet(frame.data)
        packet.stream = self._streams[kind]
        packet.time_base = fractions.Fraction(1, frame.clock_rate)
        packet.pts = packet.dts = pts
        packet.is_keyframe = kind == "audio" or frame.keyframe
        try:
            self._container.mux(packet)
        except av.FFmpegError as e:
            return self._refuse(kind, str(e))
        self._last[kind] = pts
        self.duration = max(self.duration, pts / frame.clock_rate)
        if kind == "audio":
            self._to_mix(packet, pts)  # Opus runs at 48 kHz: pts counts samples
        return None

    def _refuse(self, kind: str, why: str) -> None:
        """A frame that cannot be written (another codec, data the muxer rejects): counted."""
        self.dropped[kind] += 1
        if not self._refusing:
            log.warning("%s: %s frame not written: %s", self.path.name, kind, why)
        self._refusing = True

    def _to_mix(self, packet: av.Packet, pts: int) -> None:
        if self._mix is None or self._decoder is None:
            return
        try:
            frames = self._decoder.decode(packet)
        except av.FFmpegError:
            return  # the file has the packet; the mix misses 20 ms
        for frame in frames:
            samples = frame.to_ndarray().reshape(len(frame.layout.channels), -1)
            self._mix.add(self.started, pts, samples.mean(axis=0, dtype=np.float32))
            pts += frame.samples

    def _close(self) -> None:
        if self._container is None:
            return
        self._container.close()
        self.complete = True


def _keyframe(pending: list[tuple[str, Any, float]]) -> EncodedFrame | None:
    return next(
        (f for kind, f, _ in pending if kind == "video" and f.keyframe and not f.broken), None
    )


def _parameter_sets(data: bytes) -> bytes:
    """H.264's SPS and PPS from a keyframe, in Annex B: what the Matroska muxer turns into the
    header's avcC (and its cue to turn every packet to length-prefixed NAL units)."""
    units = [n for n in nal_units(data) if n[0] & 0x1F in (H264_SPS, H264_PPS)]
    return b"".join(b"\x00\x00\x00\x01" + n for n in units)
