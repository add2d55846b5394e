"""DVD subtitles (VobSub SPUs) written by hand, for test sources.

Debian's ffmpeg cannot turn text into bitmap subtitles (it encodes dvd_subtitle only from
other bitmap subtitles), so the first bitmap track is made here: each cue a solid
rectangle, run-length encoded as the DVD specification's subpicture unit, muxed into
Matroska by ``ffmpeg -c copy`` from a VobSub .idx/.sub pair (an MPEG program stream)."""

from __future__ import annotations

import struct
from pathlib import Path


def _nibbles_for_line(width: int, color: int) -> list[int]:
    """One line of ``width`` pixels of ``color``: runs coded as the SPU's RLE."""
    out: list[int] = []
    left = width
    while left > 0:
        run = min(left, 255)
        if run < 4:
            code, size = (run << 2) | color, 1
        elif run < 16:
            code, size = (run << 2) | color, 2
        elif run < 64:
            code, size = (run << 2) | color, 3
        else:
            code, size = (run << 2) | color, 4
        out += [(code >> (4 * (size - 1 - i))) & 0xF for i in range(size)]
        left -= run
    if len(out) % 2:
        out.append(0)  # lines are byte aligned
    return out


def _field(width: int, lines: int, color: int) -> bytes:
    nibbles: list[int] = []
    for _ in range(lines):
        nibbles += _nibbles_for_line(width, color)
    return bytes((nibbles[i] << 4) | nibbles[i + 1] for i in range(0, len(nibbles), 2))


def spu(x: int, y: int, width: int, height: int, duration_ms: int) -> bytes:
    """A subpicture of a ``width`` x ``height`` rectangle of palette colour 1, opaque,
    shown at once and hidden after ``duration_ms``."""
    top = _field(width, (height + 1) // 2, 1)
    bottom = _field(width, height // 2, 1)
    pixels_at = 4
    control_at = pixels_at + len(top) + len(bottom)
    x2, y2 = x + width - 1, y + height - 1
    first = (struct.pack(">HH", 0, 0)  # delay, next (patched below)
             + bytes([0x03, 0x23, 0x10])  # colours (e2 e1 p b): the pattern is palette 1
             + bytes([0x04, 0xFF, 0xF0])  # contrast: pattern opaque, background clear
             + bytes([0x05, x >> 4, ((x & 0xF) << 4) | (x2 >> 8), x2 & 0xFF,
                      y >> 4, ((y & 0xF) << 4) | (y2 >> 8), y2 & 0xFF])
             + bytes([0x06]) + struct.pack(">HH", pixels_at, pixels_at + len(top))
             + bytes([0x01, 0xFF]))  # start display, end
    second_at = control_at + len(first)
    delay = duration_ms * 90 // 1024  # the delay counts 1024/90000 s units
    second = struct.pack(">HH", delay, second_at) + bytes([0x02, 0xFF])
    first = struct.pack(">HH", 0, second_at) + first[4:]
    body = top + bottom + first + second
    return struct.pack(">HH", 4 + len(body), control_at) + body


def _pes(payload: bytes, pts_90k: int) -> bytes:
    """A program-stream pack holding one private-stream-1 PES (sub-stream 0x20)."""
    pack = (b"\x00\x00\x01\xba" + bytes([0x44, 0x00, 0x04, 0x00, 0x04, 0x01])
            + bytes([0x01, 0x89, 0xc3, 0xf8]))
    p = pts_90k
    pts = bytes([0x21 | ((p >> 29) & 0x0E), (p >> 22) & 0xFF, 0x01 | ((p >> 14) & 0xFE),
                 (p >> 7) & 0xFF, 0x01 | ((p << 1) & 0xFE)])
    data = bytes([0x81, 0x80, 0x05]) + pts + b"\x20" + payload
    return pack + b"\x00\x00\x01\xbd" + struct.pack(">H", len(data)) + data


def write_vobsub(stem: Path, cues: list[tuple[float, float, tuple[int, int, int, int]]],
                 size: tuple[int, int], language: str = "en") -> Path:
    """``stem``.idx and ``stem``.sub with one rectangle (x, y, w, h) per (start, end) cue;
    palette colour 1 is white. Returns the .idx path."""
    sub = bytearray()
    entries = []
    for start, end, (x, y, w, h) in cues:
        entries.append((start, len(sub)))
        sub += _pes(spu(x, y, w, h, round((end - start) * 1000)), round(start * 90_000))
    stem.with_suffix(".sub").write_bytes(bytes(sub))
    palette = ", ".join(["000000", "ffffff", "808080", "000000"] + ["000000"] * 12)
    lines = ["# VobSub index file, v7", f"size: {size[0]}x{size[1]}", f"palette: {palette}",
             f"id: {language}, index: 0"]
    for start, offset in entries:
        ms = round(start * 1000)
        stamp = (f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}:"
                 f"{ms % 1000:03d}")
        lines.append(f"timestamp: {stamp}, filepos: {offset:09x}")
    idx = stem.with_suffix(".idx")
    idx.write_text("\n".join(lines) + "\n")
    return idx
