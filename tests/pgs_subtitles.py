"""Blu-ray subtitles (PGS ``.sup``) written by hand, for test sources.

Debian's ffmpeg has no PGS encoder, so each cue here is a display set showing one solid
rectangle (palette entry 1, white, opaque) and a second, empty one clearing it at the
cue's end: the segments of the Blu-ray specification (presentation composition, window,
palette, object, end), each behind a ``PG`` header with its 90 kHz time. Debian's ffmpeg
reads the file (``sup`` demuxer) and copies it into Matroska."""

from __future__ import annotations

import struct
from pathlib import Path


def _segment(kind: int, body: bytes, pts: int) -> bytes:
    return b"PG" + struct.pack(">IIBH", pts, pts, kind, len(body)) + body


def _rle(width: int, height: int) -> bytes:
    """Every pixel palette entry 1: runs of colour 1, each line ended by 00 00."""
    line = bytearray()
    left = width
    while left > 0:
        run = min(left, 16383)
        if run < 3:
            line += bytes([1]) * run
        elif run < 64:
            line += bytes([0, 0x80 | run, 1])
        else:
            line += bytes([0, 0xC0 | (run >> 8), run & 0xFF, 1])
        left -= run
    return bytes(line + b"\x00\x00") * height


def _composition(size: tuple[int, int], number: int, objects: list[tuple[int, int]],
                 state: int) -> bytes:
    body = struct.pack(">HHBHBBBB", size[0], size[1], 0x10, number, state, 0, 0,
                       len(objects))
    for x, y in objects:
        body += struct.pack(">HBBHH", 0, 0, 0, x, y)
    return body


def display_sets(cue: tuple[float, float, tuple[int, int, int, int]], number: int,
                 size: tuple[int, int]) -> bytes:
    """The display set showing the rectangle (x, y, w, h) at ``start`` and the one
    clearing it at ``end``."""
    start, end, (x, y, w, h) = cue
    shown, cleared = round(start * 90_000), round(end * 90_000)
    window = struct.pack(">BBHHHH", 1, 0, x, y, w, h)
    # palette 0, version 0: entry 1 white (Y 235, Cr 128, Cb 128), opaque
    palette = bytes([0, 0]) + bytes([1, 235, 128, 128, 255])
    pixels = _rle(w, h)
    obj = (struct.pack(">HBB", 0, 0, 0xC0) + (len(pixels) + 4).to_bytes(3, "big")
           + struct.pack(">HH", w, h) + pixels)
    show = (_segment(0x16, _composition(size, number * 2, [(x, y)], 0x80), shown)
            + _segment(0x17, window, shown) + _segment(0x14, palette, shown)
            + _segment(0x15, obj, shown) + _segment(0x80, b"", shown))
    clear = (_segment(0x16, _composition(size, number * 2 + 1, [], 0x00), cleared)
             + _segment(0x17, window, cleared) + _segment(0x80, b"", cleared))
    return show + clear


def write_sup(path: Path, cues: list[tuple[float, float, tuple[int, int, int, int]]],
              size: tuple[int, int]) -> Path:
    """``path`` (a .sup file) with one rectangle (x, y, w, h) per (start, end) cue."""
    path.write_bytes(b"".join(display_sets(cue, n, size) for n, cue in enumerate(cues)))
    return path
