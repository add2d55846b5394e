"""One lossy encode per delivered output: image steps hand each other lossless pixels.

Every image step that writes a primary output also records, in that output's
``meta``, where the pixels it encoded can be read without loss (``pixels_from``): the
file it decoded itself when it changed nothing but the encoding, or a lossless PNG it
wrote beside its output (role ``intermediate``) when it resampled or cut. The next
image step decodes that file instead of the previous step's lossy output, so a chain
resize -> optimize -> convert encodes each delivered file once, from the source's own
pixels, and never the previous generation's artefacts.

A step that would change nothing at all (no resize, same format, same encoder
options) copies its source instead of re-encoding it: a JPEG's metadata segments are
rewritten as the step's metadata policy says, the compressed picture is kept byte
for byte. ``optimize_image`` keeps such a copy whenever its re-encode would be larger,
or when the best pixels there are come from a JPEG already at or below its quality.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from PIL import Image

from mediaq.actions.base import ActionContext, OutputFile
from mediaq.actions.image_io import SAFE_FORMATS, SourceInfo

PIXELS_KEY = "pixels_from"
INTERMEDIATE_ROLE = "intermediate"
# Fast zlib: an intermediate is read once, by the next step; size matters less than time.
_INTERMEDIATE_COMPRESSION = 1
# Formats whose re-encode loses nothing: copying them buys nothing, so they are re-encoded.
_LOSSLESS_FORMATS = frozenset({"PNG", "GIF", "BMP", "TIFF"})

# Annex K's luminance table (natural order), which libjpeg scales by quality.
_ANNEX_K_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip

_SOI = b"\xff\xd8"
_APP0, _APP1, _APP2, _APP13, _SOS, _COM = 0xE0, 0xE1, 0xE2, 0xED, 0xDA, 0xFE
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_XMP_NAMESPACE = b"http://ns.adobe.com/xap/1.0/\x00"
_MAX_SEGMENT = 65_533


def pixel_source(ctx: ActionContext, header: SourceInfo) -> Path:
    """The file whose pixels ``ctx.source_path`` was encoded from without other change:
    the lossless pixels an earlier step recorded, or the source itself. Anything that
    does not match the source's upright size and frame count is ignored."""
    # The entry is found by where the source is recorded (an s3:// object stays one), so
    # no other output is fetched to compare paths; the source itself is open already.
    here = str(ctx.source_path)
    for entry in reversed(ctx.previous_outputs):
        if (entry.get("path") != ctx.source_location and entry.get("local_path") != here) \
                or not entry.get(PIXELS_KEY):
            continue
        candidate = _pixels_path(ctx, entry, str(entry[PIXELS_KEY]))
        if candidate != ctx.source_path and _same_picture(candidate, header):
            return candidate
        break
    return ctx.source_path


def _pixels_path(ctx: ActionContext, entry: dict[str, Any], pixels: str) -> Path:
    """Where ``pixels`` (a name beside ``entry``'s file, or a path) is read here: a
    sibling output of the same step through ``ctx.local_path`` (fetched now if it
    lives in a store), else next to the source."""
    candidate = Path(pixels)
    if candidate.is_absolute():
        return candidate
    sibling = next((o for o in ctx.previous_outputs
                    if o.get("step") == entry.get("step") and o.get("item") == entry.get("item")
                    and Path(str(o.get("path", ""))).name == pixels), None)
    return ctx.local_path(sibling) if sibling is not None else ctx.source_path.parent / candidate


def _same_picture(path: Path, header: SourceInfo) -> bool:
    try:
        with Image.open(path, formats=list(SAFE_FORMATS)) as im:
            frames = int(getattr(im, "n_frames", 1))
            orientation = im.getexif().get(0x0112)
            size = im.size[::-1] if orientation in (5, 6, 7, 8) else im.size
    except (OSError, ValueError, SyntaxError):
        return False
    return size == header.upright_size and frames == header.frames


def lineage(pixels: Path | str) -> dict[str, Any]:
    """The ``meta`` entry that tells the next step where lossless pixels are."""
    return {PIXELS_KEY: str(pixels)}


def write_intermediate(ctx: ActionContext, frame: Image.Image, stem: str) -> OutputFile:
    """A lossless PNG of ``frame`` (sRGB, upright, no metadata) for the next steps."""
    path = ctx.output_path(f"{stem}.pixels.png")
    frame.save(path, "PNG", compress_level=_INTERMEDIATE_COMPRESSION, icc_profile=b"")
    return OutputFile(staging_path=path, role=INTERMEDIATE_ROLE,
                      meta={"format": "PNG", "width": frame.width, "height": frame.height,
                            **lineage(path.name)})


def reencode_would_lose(fmt: str) -> bool:
    """Whether writing ``fmt`` again loses quality (so copying is worth it)."""
    return fmt not in _LOSSLESS_FORMATS


def jpeg_quality(path: Path) -> int | None:
    """The libjpeg quality whose luminance table is nearest ``path``'s (None if ``path``
    is not a JPEG): what an encoder would need to match it."""
    try:
        with Image.open(path, formats=["JPEG"]) as im:
            tables = getattr(im, "quantization", None)
            table = list(tables[0]) if tables else None
    except (OSError, ValueError, SyntaxError):
        return None
    if not table or len(table) != len(_ANNEX_K_LUMA):
        return None

    def distance(quality: int) -> int:
        scale = 5000 // quality if quality < 50 else 200 - 2 * quality
        scaled = (min(255, max(1, (v * scale + 50) // 100)) for v in _ANNEX_K_LUMA)
        return sum(abs(a - b) for a, b in zip(scaled, table, strict=True))

    return min(range(1, 101), key=distance)


def copy_unchanged(source: Path, target: Path, fmt: str, metadata: dict[str, Any]) -> bool:
    """Copy ``source`` to ``target`` with only its metadata changed to ``metadata`` (the
    save options :func:`image_write.metadata_options` gives); False when that cannot
    be done without re-encoding (then nothing is written)."""
    data = source.read_bytes()
    if fmt == "JPEG":
        rewritten = _jpeg_with_metadata(data, metadata)
        if rewritten is None:
            return False
        data = rewritten
    elif metadata.get("exif") or metadata.get("xmp") or _carries_metadata(source):
        return False  # other containers are copied only when there is nothing to strip
    target.write_bytes(data)
    return True


def _carries_metadata(path: Path) -> bool:
    with Image.open(path) as im:
        info = im.info
        return bool(len(im.getexif()) or info.get("icc_profile") or info.get("xmp")
                    or info.get("XML:com.adobe.xmp") or info.get("comment")
                    or getattr(im, "text", None) or "gamma" in info)


def _jpeg_with_metadata(data: bytes, metadata: dict[str, Any]) -> bytes | None:
    """``data`` with its EXIF, XMP, IPTC and ICC segments replaced by ``metadata``'s
    (comments kept only when its ``comment`` is not blanked); None if it is not a
    plain JPEG or the new segments do not fit."""
    segments = _jpeg_segments(data)
    if segments is None:
        return None
    header, scan = segments
    keep_comments = "comment" not in metadata
    kept: list[tuple[int, bytes]] = []
    for marker, segment in header:
        if marker in (_APP1, _APP13):
            continue
        if marker == _APP2 and segment[4:16] == b"ICC_PROFILE\x00":
            continue
        if marker == _COM and not keep_comments:
            continue
        kept.append((marker, segment))
    added = []
    if metadata.get("exif"):
        added.append(_segment(_APP1, bytes(metadata["exif"])))
    if metadata.get("xmp"):
        added.append(_segment(_APP1, _XMP_NAMESPACE + bytes(metadata["xmp"])))
    if any(segment is None for segment in added):
        return None
    # New APP1s go after JFIF's APP0, which must come first where there is one.
    at = 1 if kept and kept[0][0] == _APP0 else 0
    ordered = [s for _, s in kept[:at]] + [s for s in added if s] + [s for _, s in kept[at:]]
    return _SOI + b"".join(ordered) + scan


def _segment(marker: int, payload: bytes) -> bytes | None:
    if len(payload) > _MAX_SEGMENT:
        return None
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def _jpeg_segments(data: bytes) -> tuple[list[tuple[int, bytes]], bytes] | None:
    """The marker segments before the first scan, and the rest from SOS on."""
    if not data.startswith(_SOI):
        return None
    segments: list[tuple[int, bytes]] = []
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        while at + 1 < len(data) and data[at + 1] == 0xFF:  # fill bytes
            at += 1
        marker = data[at + 1]
        if marker == _SOS:
            return segments, data[at:]
        if marker in _STANDALONE:
            segments.append((marker, data[at:at + 2]))
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2:at + 4])
        segments.append((marker, data[at:at + 2 + length]))
        at += 2 + length
    return None
