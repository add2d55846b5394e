"""RFC 6381 codec strings (``CODECS=`` in HLS, ``codecs=`` in DASH) read from an init
segment's decoder configuration box, so players are told exactly what was encoded."""

from __future__ import annotations

from pathlib import Path

from mediaq.actions.streaming.segmenter import avc_codec_string


def video_codec_string(codec: str, init: Path) -> str:
    if codec == "hevc":
        return hevc_codec_string(init)
    if codec == "av1":
        return av1_codec_string(init)
    return avc_codec_string(init)


def _config(init: Path, box: bytes, size: int) -> bytes | None:
    data = init.read_bytes()
    at = data.find(box)
    if at < 0 or len(data) < at + 4 + size:
        return None
    return data[at + 4:at + 4 + size]


def hevc_codec_string(init: Path) -> str:
    """``hvc1.P.C.Tl.B`` from the hvcC box (ISO/IEC 14496-15 annex E)."""
    config = _config(init, b"hvcC", 13)
    if config is None:
        return "hvc1.1.6.L93.B0"
    space = ("", "A", "B", "C")[config[1] >> 6]
    tier = "H" if config[1] & 0x20 else "L"
    profile = config[1] & 0x1F
    compat = int.from_bytes(config[2:6], "big")
    # The compatibility flags are written bit-reversed, in hex without leading zeros.
    reversed_flags = int(f"{compat:032b}"[::-1], 2)
    constraints = list(config[6:12])
    while constraints and constraints[-1] == 0:
        constraints.pop()
    parts = [f"hvc1.{space}{profile}", f"{reversed_flags:X}", f"{tier}{config[12]}"]
    parts += [f"{b:02X}" for b in constraints]
    return ".".join(parts)


def av1_codec_string(init: Path) -> str:
    """``av01.P.LLT.DD`` from the av1C box (AV1 codec ISO media file format binding)."""
    config = _config(init, b"av1C", 3)
    if config is None:
        return "av01.0.04M.08"
    profile = config[1] >> 5
    level = config[1] & 0x1F
    tier = "H" if config[2] & 0x80 else "M"
    high_bitdepth, twelve_bit = bool(config[2] & 0x40), bool(config[2] & 0x20)
    depth = 12 if twelve_bit else 10 if high_bitdepth else 8
    return f"av01.{profile}.{level:02d}{tier}.{depth:02d}"
