"""Subtitles drawn onto the picture (``subtitles: burn``).

The bundled FFmpeg has neither libass nor the ``subtitles`` filter, so text cues are
rendered here with Pillow (white, outlined in black, centred near the bottom, sized to
the output's height) and bitmap cues (DVD, PGS) are scaled from their canvas to the
output. Each cue becomes an RGBA picture once; on every frame it covers, it is blended
into the frame's Y, U and V planes (limited-range BT.709) over its own box only.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from av.video.frame import VideoFrame
from PIL import Image, ImageDraw, ImageFont

from mediaq.actions.tracks.subtitles import Cue, SubtitleTrack

# Fonts with wide coverage looked for first; Pillow's own (Latin only) otherwise.
FONT_PATHS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
              "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
# Limited-range BT.709, RGB (0-255) to Y, Cb, Cr.
_RGB_TO_YUV = np.array([[0.1826, 0.6142, 0.0620], [-0.1006, -0.3386, 0.4392],
                        [0.4392, -0.3989, -0.0403]], np.float32)
_OFFSET = np.array([16, 128, 128], np.float32)


@dataclass
class _Overlay:
    x: int  # even, in output pixels
    y: int
    yuv: np.ndarray[Any, Any]  # (h, w, 3) float
    alpha: np.ndarray[Any, Any]  # (h, w) float 0..1
    chroma: np.ndarray[Any, Any]  # (h/2, w/2, 2) float
    chroma_alpha: np.ndarray[Any, Any]


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for path in FONT_PATHS:
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


class Burner:
    """Blends ``track``'s cues into yuv420p frames of ``width`` x ``height``; ``shift``:
    seconds between the source's clock and the output's."""

    def __init__(self, track: SubtitleTrack, width: int, height: int, shift: float) -> None:
        self.track = track
        self.width, self.height = width, height
        self.shift = shift
        self.cues = track.cues
        self.next = 0
        self.cache: dict[int, list[_Overlay]] = {}

    def apply(self, frame: VideoFrame, seconds: float) -> VideoFrame:
        """``frame`` (output time ``seconds``) with the cues it falls in drawn on it."""
        while self.next < len(self.cues) and self.cues[self.next].end - self.shift <= seconds:
            self.cache.pop(self.next, None)
            self.next += 1
        # Cues are in start order: only those from the first unfinished one up to the
        # first that starts later are looked at (a film has thousands).
        active: list[int] = []
        for n in range(self.next, len(self.cues)):
            cue = self.cues[n]
            if cue.start - self.shift > seconds:
                break
            if seconds < cue.end - self.shift:
                active.append(n)
        if not active:
            return frame
        fmt = frame.format.name
        work = frame if fmt == "yuv420p" else frame.reformat(format="yuv420p")
        planes = work.to_ndarray()  # (h * 3/2, w): Y, then U, then V
        h, w = work.height, work.width
        flat = planes.reshape(-1)  # a view: the planes below are written in place
        quarter = (h // 2) * (w // 2)
        y_plane = flat[:h * w].reshape(h, w)
        u_plane = flat[h * w:h * w + quarter].reshape(h // 2, w // 2)
        v_plane = flat[h * w + quarter:h * w + 2 * quarter].reshape(h // 2, w // 2)
        for n in active:
            if n not in self.cache:
                self.cache[n] = [_to_overlay(img, x, y) for img, x, y in self._render(
                    self.cues[n])]
            for overlay in self.cache[n]:
                _blend(overlay, y_plane, u_plane, v_plane)
        out = VideoFrame.from_ndarray(planes, format="yuv420p")
        out.pts, out.time_base = frame.pts, frame.time_base
        return out if fmt == "yuv420p" else out.reformat(format=fmt)

    def _render(self, cue: Cue) -> list[tuple[Image.Image, int, int]]:
        if cue.text:
            return [self._text(cue.text)]
        pictures = []
        for bitmap in cue.bitmaps:
            cw, ch = bitmap.canvas
            sx, sy = self.width / max(cw, 1), self.height / max(ch, 1)
            image = Image.fromarray(np.ascontiguousarray(bitmap.rgba), "RGBA")
            size = (max(1, round(image.width * sx)), max(1, round(image.height * sy)))
            pictures.append((image.resize(size, Image.Resampling.BILINEAR),
                             round(bitmap.x * sx), round(bitmap.y * sy)))
        return pictures

    def _text(self, text: str) -> tuple[Image.Image, int, int]:
        size = max(10, round(self.height / 16))
        font = _font(size)
        stroke = max(1, size // 12)
        lines = _wrap(text, font, int(self.width * 0.9))
        probe = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
        box = probe.multiline_textbbox((0, 0), "\n".join(lines), font=font, stroke_width=stroke,
                                       align="center")
        left, top = int(box[0]), int(box[1])
        tw, th = int(box[2]) - left + 2 * stroke, int(box[3]) - top + 2 * stroke
        image = Image.new("RGBA", (tw, th), (0, 0, 0, 0))
        ImageDraw.Draw(image).multiline_text(
            (stroke - left, stroke - top), "\n".join(lines), font=font,
            fill=(255, 255, 255, 255), stroke_width=stroke, stroke_fill=(0, 0, 0, 255),
            align="center")
        margin = max(2, round(self.height / 20))
        return image, (self.width - tw) // 2, self.height - margin - th


def _wrap(text: str, font: Any, width: int) -> list[str]:
    lines: list[str] = []
    for paragraph in text.splitlines():
        words, line = paragraph.split(), ""
        for word in words:
            candidate = f"{line} {word}".strip()
            if line and font.getlength(candidate) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def _to_overlay(image: Image.Image, x: int, y: int) -> _Overlay:
    """The picture as Y, Cb, Cr and alpha, on even coordinates (4:2:0 chroma)."""
    x, y = x // 2 * 2, y // 2 * 2
    rgba = np.asarray(image.convert("RGBA"), np.float32)
    h, w = rgba.shape[0] // 2 * 2, rgba.shape[1] // 2 * 2
    rgba = rgba[:h, :w]
    yuv = rgba[..., :3] @ _RGB_TO_YUV.T + _OFFSET
    alpha = rgba[..., 3] / 255.0
    # Chroma at half size: alpha-weighted means over each 2x2 block.
    a4 = alpha.reshape(h // 2, 2, w // 2, 2)
    weight = a4.sum(axis=(1, 3))
    c4 = (yuv[..., 1:] * alpha[..., None]).reshape(h // 2, 2, w // 2, 2, 2).sum(axis=(1, 3))
    chroma = c4 / np.maximum(weight, 1e-6)[..., None]
    return _Overlay(x, y, yuv[..., 0], alpha, chroma, weight / 4)


def _blend(o: _Overlay, y_plane: Any, u_plane: Any, v_plane: Any) -> None:
    """Blend ``o`` into the planes where it overlaps them (it may hang over an edge)."""
    h, w = o.alpha.shape
    fh, fw = y_plane.shape
    x0, y0 = max(o.x, 0), max(o.y, 0)
    x1, y1 = min(o.x + w, fw), min(o.y + h, fh)
    if x0 >= x1 or y0 >= y1:
        return
    sy, sx = slice(y0 - o.y, y1 - o.y), slice(x0 - o.x, x1 - o.x)
    a = o.alpha[sy, sx]
    region = y_plane[y0:y1, x0:x1]
    region[:] = np.clip(region * (1 - a) + o.yuv[sy, sx] * a + 0.5, 0, 255)
    cy0, cy1, cx0, cx1 = y0 // 2, y1 // 2, x0 // 2, x1 // 2
    csy = slice(cy0 - o.y // 2, cy1 - o.y // 2)
    csx = slice(cx0 - o.x // 2, cx1 - o.x // 2)
    ca = o.chroma_alpha[csy, csx]
    for plane, channel in ((u_plane, 0), (v_plane, 1)):
        region = plane[cy0:cy1, cx0:cx1]
        region[:] = np.clip(region * (1 - ca) + o.chroma[csy, csx, channel] * ca + 0.5, 0, 255)
