"""What can be read from an encoded video frame without decoding it: whether it is a keyframe,
and the picture size (VP8's keyframe header, RFC 6386 9.1; H.264's sequence parameter set,
ITU-T H.264 7.3.2.1.1). Frames come from other participants: anything malformed answers
"not a keyframe" or "size unknown", never an exception."""

from __future__ import annotations

H264_IDR, H264_SPS, H264_PPS = 5, 7, 8
SPS_MOST = 512
"""Bytes of an SPS read: real ones take under 200 (scaling lists included); a hostile one may
be a megabyte."""
_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


def is_keyframe(codec: str, data: bytes) -> bool:
    """A keyframe whose first packets were lost does not pass, so a cut-off start never heals
    a chain."""
    if codec == "VP8":
        return len(data) >= 10 and not data[0] & 1 and data[3:6] == b"\x9d\x01\x2a"
    if codec == "H264":
        return any(nal[0] & 0x1F == H264_IDR for nal in nal_units(data))
    return False


def nal_units(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B access unit (what aiortc's H.264 depayloader makes)."""
    return [unit.rstrip(b"\x00") for unit in data.split(b"\x00\x00\x01") if unit.strip(b"\x00")]


def picture_size(codec: str, keyframe: bytes) -> tuple[int, int] | None:
    if codec == "VP8" and is_keyframe("VP8", keyframe):
        width, height = (int.from_bytes(keyframe[i : i + 2], "little") & 0x3FFF for i in (6, 8))
        return width, height
    if codec == "H264":
        sps = next((n for n in nal_units(keyframe) if n[0] & 0x1F == H264_SPS), None)
        try:
            return _sps_size(sps) if sps else None
        except (IndexError, ValueError):
            return None
    return None


def _sps_size(sps: bytes) -> tuple[int, int]:
    bits = _Bits(sps[1:SPS_MOST].replace(b"\x00\x00\x03", b"\x00\x00"))
    profile = bits.u(8)
    bits.u(16)  # constraint flags, level
    bits.ue()  # seq_parameter_set_id
    chroma = 1
    if profile in _HIGH_PROFILES:
        chroma = bits.ue()
        if chroma == 3:
            bits.u(1)
        bits.ue(), bits.ue(), bits.u(1)  # bit depths, qpprime_y_zero_transform_bypass
        if bits.u(1):  # scaling matrices
            for index in range(12 if chroma == 3 else 8):
                if bits.u(1):
                    bits.scaling_list(16 if index < 6 else 64)
    bits.ue()  # log2_max_frame_num_minus4
    order = bits.ue()
    if order == 0:
        bits.ue()
    elif order == 1:
        bits.u(1), bits.se(), bits.se()
        for _ in range(bits.ue()):
            bits.se()
    bits.ue(), bits.u(1)  # max_num_ref_frames, gaps_in_frame_num_allowed
    width, height = (bits.ue() + 1) * 16, (bits.ue() + 1) * 16
    frames_only = bits.u(1)
    if not frames_only:
        bits.u(1)
    height *= 2 - frames_only
    bits.u(1)  # direct_8x8_inference
    if bits.u(1):  # cropping, in chroma samples
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
        unit_x = 2 if chroma in (1, 2) else 1
        unit_y = (2 if chroma == 1 else 1) * (2 - frames_only)
        width -= (left + right) * unit_x
        height -= (top + bottom) * unit_y
    if not (0 < width <= 16384 and 0 < height <= 16384):
        raise ValueError("no such picture")
    return width, height


class _Bits:
    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._left = len(data) * 8

    def u(self, n: int) -> int:
        if n > self._left:
            raise IndexError("past the end")
        self._left -= n
        return (self._value >> self._left) & ((1 << n) - 1)

    def ue(self) -> int:
        zeros = 0
        while not self.u(1):
            zeros += 1
            if zeros > 31:
                raise ValueError("not an exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)

    def scaling_list(self, size: int) -> None:
        last = following = 8
        for _ in range(size):
            if following:
                following = (last + self.se() + 256) % 256
            last = following or last
