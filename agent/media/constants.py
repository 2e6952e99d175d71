"""The media clocks every module shares, so a frame made, sent, recorded or mixed here needs no
resampling and a timestamp means the same thing everywhere."""

SAMPLE_RATE = 48000
"""Audio samples per second: Opus in WebRTC runs at 48 kHz, and aiortc decodes to it."""
AUDIO_PTIME = 0.02
"""Seconds of audio per frame: 20 ms, one Opus packet."""
VIDEO_CLOCK = 90000
"""Video timestamp units per second: the RTP clock of every video codec."""
