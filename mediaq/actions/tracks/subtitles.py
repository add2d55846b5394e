"""Subtitle cues: read from a source's stream, written as WebVTT / SRT files, and the
packets an output carries them in (mov_text in MP4, WebVTT in WebM).

A stream's cues are read in one pass before the video (they are small), so a cue can be
drawn or muxed from the first frame it covers, however the file interleaves it.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from mediaq.actions.avio import open_media, reading
from mediaq.errors import PermanentError

TEXT_CODECS = frozenset({"subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text"})
BITMAP_CODECS = frozenset({"dvd_subtitle", "hdmv_pgs_subtitle", "dvb_subtitle"})
MS = Fraction(1, 1000)
_ASS_TAG = re.compile(r"\{[^}]*\}")
_HTML_TAG = re.compile(r"</?[A-Za-z][^>]*>")


@dataclass(frozen=True)
class Bitmap:
    """A bitmap cue's picture: RGBA pixels at (x, y) on a ``canvas`` of that size."""

    x: int
    y: int
    rgba: np.ndarray[Any, Any]
    canvas: tuple[int, int]


@dataclass(frozen=True)
class Cue:
    """One subtitle event: seconds on the source's clock, its text or its pictures."""

    start: float
    end: float
    text: str = ""
    bitmaps: tuple[Bitmap, ...] = field(default=())


@dataclass(frozen=True)
class RawPacket:
    """A bitmap track's packet as the source holds it, for carrying without re-encoding:
    ``pts`` and ``duration`` (0: none) in ``time_base`` on the source's clock."""

    pts: int
    duration: int
    time_base: Fraction
    data: bytes

    @property
    def seconds(self) -> float:
        return float(self.pts * self.time_base)


@dataclass(frozen=True)
class SubtitleTrack:
    index: int
    codec: str
    language: str
    cues: list[Cue]
    # Bitmap tracks: the packets themselves and the file they come from (whose stream is
    # the template of the stream that carries them).
    packets: tuple[RawPacket, ...] = ()
    source: Path | None = None

    @property
    def is_text(self) -> bool:
        return self.codec in TEXT_CODECS


def subtitle_codec(stream: Any) -> str:
    ctx = stream.codec_context
    return ctx.codec.canonical_name if ctx is not None and ctx.codec is not None else "unknown"


def read_track(path: Path, index: int, language: str, video_size: tuple[int, int]
               ) -> SubtitleTrack:
    """Every cue of subtitle stream ``index``, in time order."""
    with open_media(path) as container, reading(path):
        stream: Any = container.streams[index]
        codec = subtitle_codec(stream)
        if codec not in TEXT_CODECS | BITMAP_CODECS:
            raise PermanentError(f"{path.name}: subtitle track {index} is {codec}, which "
                                 f"cannot be read (text and DVD/PGS/DVB pictures can)")
        palette = _dvd_palette(stream) if codec == "dvd_subtitle" else None
        canvas = _dvd_canvas(stream) or video_size
        cues: list[Cue] = []
        packets: list[RawPacket] = []
        for packet in container.demux(stream):
            if packet.pts is None or packet.time_base is None:
                continue
            start = float(packet.pts * packet.time_base)
            length = float((packet.duration or 0) * packet.time_base)
            if codec in TEXT_CODECS:
                text = _packet_text(stream, packet)
                if text:
                    cues.append(Cue(start, start + (length or 2.0), text))
                continue
            cue = _bitmap_cue(stream, packet, codec, start, length, palette, canvas)
            if cue is not None:
                cues.append(cue)
            packets.append(_raw(packet, cue if codec == "dvd_subtitle" else None))
    cues.sort(key=lambda c: c.start)
    packets.sort(key=lambda p: p.seconds)
    return SubtitleTrack(index, codec, language, _close_open_ends(cues), tuple(packets), path)


def _raw(packet: Any, cue: Cue | None) -> RawPacket:
    """The packet kept as it is; a DVD subpicture without a duration (Matroska from
    VobSub) gets its display time, which MP4 needs to keep the sample at all."""
    duration = packet.duration or 0
    if not duration and cue is not None and cue.end > cue.start:
        duration = round((cue.end - float(packet.pts * packet.time_base)) / packet.time_base)
    return RawPacket(packet.pts, duration, packet.time_base, bytes(packet))


def _close_open_ends(cues: list[Cue]) -> list[Cue]:
    """A cue without an end (PGS ends one picture with the next, empty, one) lasts until
    the next cue starts."""
    closed = []
    for n, cue in enumerate(cues):
        if cue.end <= cue.start and n + 1 < len(cues):
            cue = Cue(cue.start, cues[n + 1].start, cue.text, cue.bitmaps)
        if cue.end > cue.start:
            closed.append(cue)
    return closed


def _packet_text(stream: Any, packet: Any) -> str:
    try:
        rects = packet.decode()
    except av.error.FFmpegError:
        return ""
    lines: list[str] = []
    for rect in rects:
        raw = getattr(rect, "dialogue", None) or getattr(rect, "text", None) or b""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        lines.append(clean_text(text))
    return "\n".join(line for line in lines if line)


def clean_text(text: str) -> str:
    """Plain text from an ASS dialogue or SRT line: override tags and HTML-like styling
    removed, ASS line breaks made real ones."""
    text = _ASS_TAG.sub("", text).replace("\\N", "\n").replace("\\n", "\n").replace("\\h", " ")
    text = _HTML_TAG.sub("", text)
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


# --------------------------------------------------------------------------- bitmaps


def _bitmap_cue(stream: Any, packet: Any, codec: str, start: float, length: float,
                palette: list[tuple[int, int, int]] | None,
                canvas: tuple[int, int]) -> Cue | None:
    try:
        subtitle_set = stream.codec_context.decode2(packet)
    except av.error.FFmpegError:
        return None
    if subtitle_set is None:
        return None
    shown = start + subtitle_set.start_display_time / 1000
    end = (start + subtitle_set.end_display_time / 1000
           if subtitle_set.end_display_time else shown + length)
    data = bytes(packet)
    colours = (_dvd_colours(data, palette) if codec == "dvd_subtitle" else
               _pgs_colours(data) if codec == "hdmv_pgs_subtitle" else None)
    if codec == "hdmv_pgs_subtitle":
        canvas = _pgs_canvas(data) or canvas
    bitmaps = []
    for rect in subtitle_set:
        if not rect.planes or rect.width <= 0 or rect.height <= 0:
            continue
        indices = np.frombuffer(bytes(rect.planes[0]), np.uint8)
        indices = indices[:rect.width * rect.height].reshape(rect.height, rect.width)
        table = _lookup(colours, rect.nb_colors)
        bitmaps.append(Bitmap(rect.x, rect.y, table[indices], canvas))
    return Cue(shown, end, bitmaps=tuple(bitmaps))


def _lookup(colours: list[tuple[int, int, int, int]] | None, count: int) -> np.ndarray[Any, Any]:
    """An RGBA table for 256 indices; without a palette (DVB), index 0 is clear and the
    others white, which keeps the shapes readable."""
    table = np.zeros((256, 4), np.uint8)
    if colours:
        table[:len(colours)] = colours[:256]
    else:
        table[1:max(count, 2)] = (255, 255, 255, 255)
    return table


def _dvd_palette(stream: Any) -> list[tuple[int, int, int]] | None:
    """The 16 RGB colours of a VobSub track (its .idx ``palette:`` line, the extradata)."""
    text = bytes(stream.codec_context.extradata or b"").decode("latin-1")
    match = re.search(r"palette:\s*([0-9a-fA-F, ]+)", text)
    if not match:
        return None
    values = [int(v, 16) for v in match.group(1).replace(" ", "").split(",") if v][:16]
    return [((v >> 16) & 255, (v >> 8) & 255, v & 255) for v in values]


def _dvd_canvas(stream: Any) -> tuple[int, int] | None:
    text = bytes(stream.codec_context.extradata or b"").decode("latin-1")
    match = re.search(r"size:\s*(\d+)x(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _dvd_colours(spu: bytes, palette: list[tuple[int, int, int]] | None
                 ) -> list[tuple[int, int, int, int]] | None:
    """The four colours of a DVD subpicture (pixel values 0-3: background, pattern,
    emphasis 1 and 2), from its SET_COLOR and SET_CONTR commands and the track palette:
    the decoder applies them but PyAV does not hand its palette back."""
    if palette is None or len(spu) < 4:
        return None
    colour, alpha = [0, 1, 2, 3], [0, 15, 15, 15]
    at = struct.unpack(">H", spu[2:4])[0] + 4  # the first command, after date and next
    while at < len(spu):
        command = spu[at]
        if command == 0x03 and at + 2 < len(spu):
            e2e1, pb = spu[at + 1], spu[at + 2]
            colour = [pb & 15, pb >> 4, e2e1 & 15, e2e1 >> 4]
            at += 3
        elif command == 0x04 and at + 2 < len(spu):
            e2e1, pb = spu[at + 1], spu[at + 2]
            alpha = [pb & 15, pb >> 4, e2e1 & 15, e2e1 >> 4]
            at += 3
        elif command == 0x05:
            at += 7
        elif command == 0x06:
            at += 5
        elif command in (0x00, 0x01, 0x02):
            at += 1
        else:
            break  # 0xff ends the first sequence; anything else is not understood
    return [(*palette[c % len(palette)], a * 17) for c, a in zip(colour, alpha, strict=True)]


def _pgs_segments(data: bytes) -> list[tuple[int, bytes]]:
    segments, at = [], 0
    while at + 3 <= len(data):
        kind, size = data[at], struct.unpack(">H", data[at + 1:at + 3])[0]
        segments.append((kind, data[at + 3:at + 3 + size]))
        at += 3 + size
    return segments


def _pgs_colours(data: bytes) -> list[tuple[int, int, int, int]] | None:
    """The palette definition segment (0x14) of a PGS display set, as RGBA by entry id."""
    for kind, body in _pgs_segments(data):
        if kind != 0x14:
            continue
        table = [(0, 0, 0, 0)] * 256
        for at in range(2, len(body) - 4, 5):
            entry, y, cr, cb, a = body[at:at + 5]
            table[entry] = (*_ycbcr_to_rgb(y, cb, cr), a)
        return table
    return None


def _pgs_canvas(data: bytes) -> tuple[int, int] | None:
    for kind, body in _pgs_segments(data):
        if kind == 0x16 and len(body) >= 4:
            return struct.unpack(">HH", body[:4])
    return None


def _ycbcr_to_rgb(y: int, cb: int, cr: int) -> tuple[int, int, int]:
    """Limited-range BT.709 (what Blu-ray subtitles use)."""
    yy, u, v = 1.164 * (y - 16), cb - 128, cr - 128
    rgb = (yy + 1.793 * v, yy - 0.213 * u - 0.533 * v, yy + 2.112 * u)
    return tuple(int(min(max(round(c), 0), 255)) for c in rgb)  # type: ignore[return-value]


# --------------------------------------------------------------------------- writing


def _stamp(seconds: float, separator: str) -> str:
    ms = max(0, round(seconds * 1000))
    return (f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}"
            f"{separator}{ms % 1000:03d}")


def webvtt_text(cues: list[Cue], shift: float = 0.0) -> str:
    """A WebVTT file of the text cues, ``shift`` seconds earlier (the output's clock)."""
    lines = ["WEBVTT", ""]
    for cue in cues:
        if cue.text and cue.end - shift > 0:
            lines += [f"{_stamp(cue.start - shift, '.')} --> {_stamp(cue.end - shift, '.')}",
                      cue.text.replace("-->", "->"), ""]
    return "\n".join(lines)


def srt_text(cues: list[Cue], shift: float = 0.0) -> str:
    lines: list[str] = []
    number = 0
    for cue in cues:
        if cue.text and cue.end - shift > 0:
            number += 1
            lines += [str(number),
                      f"{_stamp(cue.start - shift, ',')} --> {_stamp(cue.end - shift, ',')}",
                      cue.text, ""]
    return "\n".join(lines)


class SubtitleMuxer:
    """A text track of one output: its cues muxed as the video passes their start."""

    def __init__(self, container: Any, track: SubtitleTrack, shift: float) -> None:
        name = container.format.name
        self.codec = ("mov_text" if name.startswith("mov") or "mp4" in name else
                      "subrip" if name == "matroska" else "webvtt")
        self.stream: Any = container.add_mux_stream(self.codec, time_base=MS)
        self.stream.metadata["language"] = track.language
        self.cues = [c for c in track.cues if c.text and c.end - shift > 0]
        self.shift = shift
        self.next = 0

    def due(self, until: float | None) -> list[Any]:
        """Packets of the cues starting before ``until`` seconds (None: all the rest)."""
        packets = []
        while self.next < len(self.cues) and (until is None
                                              or self.cues[self.next].start - self.shift
                                              <= until):
            cue = self.cues[self.next]
            self.next += 1
            text = cue.text.encode()
            data = struct.pack(">H", len(text)) + text if self.codec == "mov_text" else text
            start = max(0, round((cue.start - self.shift) * 1000))
            packet = av.Packet(data)
            packet.stream = self.stream
            packet.pts = packet.dts = start
            packet.duration = max(1, round((cue.end - self.shift) * 1000) - start)
            packet.time_base = MS
            packets.append(packet)
        return packets
