"""Small, real sample media for the demo and the tests, generated on the spot.

:func:`generate_samples` writes good inputs (photos, a graphic, a video with sound,
a tone, a PDF); :func:`corrupt_samples` writes the broken inputs a pipeline must
refuse. Both skip files that already exist and write each file atomically, so an
interrupted run never leaves a half-written sample behind to be skipped later.
"""

from __future__ import annotations

import io
import math
import os
import random
import wave
from array import array
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
from PIL import ExifTags, Image, ImageDraw, ImageFont

Writer = Callable[[Path], object]

AUDIO_RATE = 44_100
TONE_HZ = 440
DURATION_S = 2
VIDEO_SIZE = (320, 240)
VIDEO_FPS = 25
AAC_FRAME_SAMPLES = 1024


def generate_samples(dest: Path) -> dict[str, Path]:
    """Write the sample media into ``dest`` (created if needed); name -> path.

    ``photo_landscape.jpg`` is stored 2400x1600 with EXIF Orientation 6, so it is
    a 1600x2400 portrait once oriented.
    """
    writers: dict[str, Writer] = {
        "photo_landscape.jpg": _write_landscape_photo,
        "photo_small.png": _write_small_png,
        "graphic.webp": _write_graphic_webp,
        "clip.mp4": _write_clip,
        "tone.wav": _write_tone,
        "document.pdf": _write_document,
    }
    return _write_all(dest, writers)


def corrupt_samples(dest: Path) -> dict[str, Path]:
    """Write broken inputs into ``dest``: truncated, corrupt, empty, not an image."""
    writers: dict[str, Writer] = {
        "truncated.jpg": _write_truncated_jpeg,
        "corrupt.png": _write_corrupt_png,
        "empty.jpg": lambda path: path.write_bytes(b""),
        "not_an_image.jpg": lambda path: path.write_text(
            "These are meeting notes, not a photo.\n", encoding="utf-8"
        ),
    }
    return _write_all(dest, writers)


def _write_all(dest: Path, writers: dict[str, Writer]) -> dict[str, Path]:
    dest.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, write in writers.items():
        path = dest / name
        if not path.exists():
            _write_atomically(path, write)
        paths[name] = path
    return paths


def _write_atomically(path: Path, write: Writer) -> None:
    # Keep the suffix: Pillow and PyAV pick the format from it.
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


# ----------------------------------------------------------------------- pictures


def _pattern(size: tuple[int, int], label: str) -> Image.Image:
    """An RGB picture with gradients, shapes and a label (shows orientation at a glance)."""
    width, height = size
    horizontal = Image.linear_gradient("L").rotate(90).resize(size)
    vertical = Image.linear_gradient("L").resize(size)
    radial = Image.radial_gradient("L").resize(size)
    image = Image.merge("RGB", (horizontal, vertical, radial))
    draw = ImageDraw.Draw(image)
    unit = min(width, height) // 8
    draw.ellipse((unit, unit, 3 * unit, 3 * unit), fill="orange", outline="black", width=4)
    draw.rectangle((width - 3 * unit, unit, width - unit, 3 * unit), fill="navy")
    draw.polygon(
        [(width // 2, unit), (width // 2 - unit, 2 * unit), (width // 2 + unit, 2 * unit)],
        fill="white",
    )
    draw.text((unit, height - 2 * unit), label, fill="white", font=_font(unit))
    return image


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(size, 10))


def _write_landscape_photo(path: Path) -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    image = _pattern((2400, 1600), "TOP")
    image.save(path, "JPEG", quality=85, exif=exif.tobytes())


def _write_small_png(path: Path) -> None:
    image = _pattern((640, 480), "alpha").convert("RGBA")
    # Opaque in the middle, fading to transparent at the edges.
    alpha = Image.radial_gradient("L").resize(image.size).point(lambda v: 255 - v)
    image.putalpha(alpha)
    image.save(path, "PNG")


def _write_graphic_webp(path: Path) -> None:
    _pattern((1200, 800), "graphic").save(path, "WEBP", quality=80)


def _write_document(path: Path) -> None:
    """A two-page A4 PDF with a real text layer (Helvetica), written object by object."""
    path.write_bytes(_text_pdf([_document_lines(number) for number in (1, 2)]))


def _document_lines(number: int) -> list[str]:
    return [f"mediaq sample document - page {number}"] + [
        f"Line {line} of sample text." for line in range(1, 13)
    ]


def _text_pdf(pages: list[list[str]]) -> bytes:
    """A minimal PDF 1.4: catalog, page tree, one font, a page and content stream per page."""
    font_id, first_page_id = 3, 4
    page_ids = [first_page_id + 2 * index for index in range(len(pages))]
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [%s] /Count %d >>"
        % (b" ".join(b"%d 0 R" % pid for pid in page_ids), len(pages)),
        font_id: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    }
    for page_id, lines in zip(page_ids, pages, strict=True):
        ops = [b"BT /F1 24 Tf 60 770 Td (%s) Tj /F1 16 Tf" % lines[0].encode("latin-1")]
        ops += [b"0 -40 Td (%s) Tj" % line.encode("latin-1") for line in lines[1:]]
        stream = b"\n".join([*ops, b"ET"])
        objects[page_id] = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
            b"/Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>" % (font_id, page_id + 1)
        )
        objects[page_id + 1] = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream)
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number in sorted(objects):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, objects[number])
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


def _jpeg_bytes(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    _pattern(size, "cut").save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def _write_truncated_jpeg(path: Path) -> None:
    data = _jpeg_bytes((640, 480))
    path.write_bytes(data[: len(data) // 2])


def _write_corrupt_png(path: Path) -> None:
    png_signature = b"\x89PNG\r\n\x1a\n"
    path.write_bytes(png_signature + random.Random(7).randbytes(4096))


# -------------------------------------------------------------------------- sound


def _sine_samples(count: int, start: int = 0) -> array[float]:
    """``count`` samples of the tone from sample ``start``, amplitude 0.5."""
    step = 2 * math.pi * TONE_HZ / AUDIO_RATE
    return array("f", (0.5 * math.sin(step * (start + i)) for i in range(count)))


def _write_tone(path: Path) -> None:
    samples = _sine_samples(AUDIO_RATE * DURATION_S)
    stereo = array("h", (0,)) * (2 * len(samples))
    pcm = array("h", (round(value * 32767) for value in samples))
    stereo[0::2] = pcm
    stereo[1::2] = pcm
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(AUDIO_RATE)
        wav.writeframes(stereo.tobytes())


# -------------------------------------------------------------------------- video


def _write_clip(path: Path) -> None:
    with av.open(str(path), mode="w", format="mp4") as container:
        video = container.add_stream("libx264", rate=VIDEO_FPS)
        video.width, video.height = VIDEO_SIZE
        video.pix_fmt = "yuv420p"
        video.options = {"preset": "ultrafast"}
        audio = container.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        for picture in _video_frames():
            container.mux(video.encode(picture))
        for sound in _audio_frames():
            container.mux(audio.encode(sound))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))


def _video_frames() -> list[av.VideoFrame]:
    background = _pattern(VIDEO_SIZE, "mediaq")
    count = VIDEO_FPS * DURATION_S
    frames = []
    for index in range(count):
        picture = background.copy()
        x = index * (VIDEO_SIZE[0] - 40) // (count - 1)
        ImageDraw.Draw(picture).rectangle((x, 100, x + 40, 140), fill="red")
        frame = av.VideoFrame.from_image(picture)  # type: ignore[no-untyped-call]
        frame.pts = index
        frame.time_base = Fraction(1, VIDEO_FPS)
        frames.append(frame)
    return frames


def _audio_frames() -> list[av.AudioFrame]:
    total = AUDIO_RATE * DURATION_S
    frames = []
    for start in range(0, total, AAC_FRAME_SAMPLES):
        count = min(AAC_FRAME_SAMPLES, total - start)
        plane = _sine_samples(count, start).tobytes()
        frame = av.AudioFrame(format="fltp", layout="stereo", samples=count)
        for channel in frame.planes:
            channel.update(plane)
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        frame.time_base = Fraction(1, AUDIO_RATE)
        frames.append(frame)
    return frames
