"""Writing images: output formats and their encoder settings, the metadata policy,
and one save path for still and animated outputs.

Outputs are sRGB (sources are converted on the way) and carry no colour profile.
What EXIF/XMP survives is decided by the step's ``metadata`` policy: ``strip``
(the default: GPS, serial numbers and maker notes never leave by accident),
``keep``, or a list of named groups to keep.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import ExifTags, Image

from mediaq.actions.image_io import Picture, has_alpha
from mediaq.actions.image_ops import flattened
from mediaq.actions.image_reasons import one_line
from mediaq.errors import PermanentError, TransientError

WRITABLE_FORMATS: dict[str, str] = {
    "JPEG": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "AVIF": "avif",
    "GIF": "gif",
}
FORMAT_NAMES: dict[str, str] = {
    "jpeg": "JPEG",
    "jpg": "JPEG",
    "png": "PNG",
    "webp": "WEBP",
    "avif": "AVIF",
    "gif": "GIF",
}
ANIMATED_FORMATS = frozenset({"GIF", "WEBP", "PNG", "AVIF"})
# What a source format becomes when the step names no output format.
_DEFAULT_OUTPUT = {"MPO": "JPEG", "HEIF": "JPEG", "TIFF": "PNG", "BMP": "PNG"}
# Largest side each encoder accepts.
_MAX_SIDE = {"JPEG": 65_500, "WEBP": 16_383, "AVIF": 65_536, "GIF": 65_535, "PNG": 2**31 - 1}

# Nicolas Robidoux's quantisation table (ImageMagick's, and mozjpeg's default for
# luma and chroma alike), natural order; scaled by quality as libjpeg scales its own.
# Opt-in: on our photographic samples it did not beat the Annex K tables at equal SSIM.
_ROBIDOUX = (
    16, 16, 16, 18, 25, 37, 56, 85,
    16, 17, 20, 27, 34, 40, 53, 75,
    16, 20, 24, 31, 43, 62, 91, 135,
    18, 27, 31, 40, 53, 74, 106, 156,
    25, 34, 43, 53, 69, 94, 131, 189,
    37, 40, 62, 74, 94, 124, 169, 238,
    56, 53, 91, 106, 131, 169, 226, 311,
    85, 75, 135, 156, 189, 238, 311, 418,
)  # fmt: skip
# At high quality, full-resolution chroma keeps red and blue edges crisp.
_FULL_CHROMA_FROM_QUALITY = 90

# EXIF groups a step may keep by name: tags of the main IFD, of the Exif sub-IFD,
# and whole sub-IFDs.
_IFD0_GROUPS: dict[str, tuple[int, ...]] = {
    "copyright": (ExifTags.Base.Copyright,),
    "artist": (ExifTags.Base.Artist,),
    "description": (ExifTags.Base.ImageDescription,),
    "camera": (ExifTags.Base.Make, ExifTags.Base.Model),
    "software": (ExifTags.Base.Software,),
    "datetime": (ExifTags.Base.DateTime,),
}
_EXIF_IFD_GROUPS: dict[str, tuple[int, ...]] = {
    "datetime": (
        ExifTags.Base.DateTimeOriginal,
        ExifTags.Base.DateTimeDigitized,
        ExifTags.Base.OffsetTime,
        ExifTags.Base.OffsetTimeOriginal,
    ),
    "exposure": (
        ExifTags.Base.ExposureTime,
        ExifTags.Base.FNumber,
        ExifTags.Base.ISOSpeedRatings,
        ExifTags.Base.ExposureProgram,
        ExifTags.Base.ExposureBiasValue,
        ExifTags.Base.Flash,
        ExifTags.Base.FocalLength,
        ExifTags.Base.FocalLengthIn35mmFilm,
    ),
    "lens": (ExifTags.Base.LensMake, ExifTags.Base.LensModel),
    "serial": (ExifTags.Base.BodySerialNumber, ExifTags.Base.LensSerialNumber),
}
METADATA_GROUPS = sorted({*_IFD0_GROUPS, *_EXIF_IFD_GROUPS, "gps", "xmp"})
_XMP_ORIENTATION = re.compile(rb'(tiff:Orientation(?:="|>))[1-8]')


@dataclass(frozen=True)
class Encoding:
    """How to write an output: Pillow format, file extension and save options."""

    format: str
    extension: str
    options: dict[str, Any]

    @property
    def lossy(self) -> bool:
        return self.format in ("JPEG", "AVIF") or (
            self.format == "WEBP" and not self.options.get("lossless")
        )


def output_format(requested: str | None, source_format: str) -> str:
    """The Pillow format to write: ``requested`` (a name in FORMAT_NAMES) or, when
    None, the source's own format where we can write it (JPEG for HEIC, PNG for
    TIFF and BMP)."""
    if requested is not None:
        return FORMAT_NAMES[requested.lower()]
    if source_format in WRITABLE_FORMATS:
        return source_format
    return _DEFAULT_OUTPUT.get(source_format, "PNG")


def encoding_for(
    fmt: str,
    *,
    quality: int,
    optimize: bool = False,
    progressive: bool = False,
    lossless: bool = False,
    jpeg_tables: str = "standard",
) -> Encoding:
    """Save options for ``fmt``; ``optimize`` trades encoding time for size
    (JPEG Huffman tables are always optimised: it costs next to nothing)."""
    options: dict[str, Any]
    if fmt == "JPEG":
        options = {
            "optimize": True,
            "progressive": progressive,
            "subsampling": "4:4:4" if quality >= _FULL_CHROMA_FROM_QUALITY else "4:2:0",
            **_jpeg_quantisation(quality, jpeg_tables),
        }
    elif fmt == "WEBP":
        options = {"quality": quality, "lossless": lossless, "method": 6 if optimize else 4}
    elif fmt == "AVIF":
        options = {"quality": quality, "speed": 4 if optimize else 7}
    else:
        options = {"optimize": optimize or fmt == "GIF"}
    return Encoding(format=fmt, extension=WRITABLE_FORMATS[fmt], options=options)


def _jpeg_quantisation(quality: int, tables: str) -> dict[str, Any]:
    if tables == "standard":
        return {"quality": quality}
    # libjpeg's quality scaling, clamped to 8-bit entries so the file stays baseline.
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    table = [min(255, max(1, (value * scale + 50) // 100)) for value in _ROBIDOUX]
    return {"qtables": [table, table]}


# ------------------------------------------------------------------------- metadata


def metadata_options(picture: Picture, policy: str | list[str], fmt: str) -> dict[str, Any]:
    """Save options carrying the source's EXIF/XMP as ``policy`` allows.

    What Pillow's encoders would copy from the decoded image on their own is blanked:
    the colour profile always (PNG and AVIF would embed a CMYK or unusable source
    profile on sRGB pixels), and the comment (JPEG COM, GIF comment extension)
    unless the policy is ``keep``.
    """
    keep_all = policy == "keep"
    options: dict[str, Any] = {"icc_profile": b""}
    if not keep_all:
        options["comment"] = b""
    if policy == "strip" or fmt == "GIF":
        return options
    groups = set(METADATA_GROUPS) if keep_all else set(policy)
    exif = picture.exif if keep_all else _selected_exif(picture.exif, groups)
    exif[ExifTags.Base.Orientation] = 1  # the pixels are upright now
    if len(exif) > 1 or keep_all:
        options["exif"] = exif.tobytes()
    if "xmp" in groups and picture.xmp:
        options["xmp"] = _XMP_ORIENTATION.sub(rb"\g<1>1", picture.xmp)
    return options


def _selected_exif(source: Image.Exif, groups: set[str]) -> Image.Exif:
    kept = Image.Exif()
    for group, tags in _IFD0_GROUPS.items():
        if group in groups:
            kept.update({tag: source[tag] for tag in tags if tag in source})
    exif_ifd = source.get_ifd(ExifTags.IFD.Exif)
    selected = {
        tag: exif_ifd[tag]
        for group, tags in _EXIF_IFD_GROUPS.items()
        if group in groups
        for tag in tags
        if tag in exif_ifd
    }
    if selected:
        kept[ExifTags.IFD.Exif] = selected
    gps = source.get_ifd(ExifTags.IFD.GPSInfo)
    if "gps" in groups and gps:
        kept[ExifTags.IFD.GPSInfo] = dict(gps)
    return kept


# --------------------------------------------------------------------------- saving


def ready_for(image: Image.Image, fmt: str, background: str) -> Image.Image:
    """``image`` in a mode the ``fmt`` encoder writes (JPEG has no alpha: flatten)."""
    if fmt == "JPEG" and has_alpha(image):
        return flattened(image, background)
    if fmt == "AVIF" and image.mode in ("L", "LA"):
        return image.convert("RGBA" if image.mode == "LA" else "RGB")
    return image


def palette_reduced(image: Image.Image, colours: int) -> Image.Image:
    """``image`` reduced to ``colours`` palette entries (lossy PNG, like pngquant)."""
    method = Image.Quantize.FASTOCTREE if has_alpha(image) else Image.Quantize.MEDIANCUT
    source = image.convert("RGBA" if has_alpha(image) else "RGB")
    return source.quantize(colors=colours, method=method, dither=Image.Dither.FLOYDSTEINBERG)


def save_frames(
    frames: list[Image.Image],
    path: Path,
    encoding: Encoding,
    *,
    durations: list[int] | None = None,
    loop: int = 0,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write one frame, or an animation where the format has them; a failing disk is
    TransientError (worth retrying) and leaves no partial file."""
    check_encodable(path, frames[0].size, encoding.format)
    options = {**encoding.options, **(extra or {})}
    if len(frames) > 1:
        options.update(
            save_all=True, append_images=frames[1:], duration=durations or 100, loop=loop
        )
    try:
        frames[0].save(path, format=encoding.format, **options)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise TransientError(f"{path.name}: could not write output ({one_line(exc)})") from None


def check_encodable(path: Path, size: tuple[int, int], fmt: str) -> None:
    """Refuse, before encoding, a size the ``fmt`` encoder cannot write."""
    if max(size) > _MAX_SIDE[fmt]:
        raise PermanentError(
            f"{path.name}: {size[0]}x{size[1]} is too large for {fmt} "
            f"(at most {_MAX_SIDE[fmt]} pixels a side)"
        )


def describe_output(path: Path) -> dict[str, Any]:
    """Format, size, mode and frame count of a written image, read from its header."""
    with Image.open(path, formats=list(WRITABLE_FORMATS)) as im:
        described: dict[str, Any] = {
            "format": im.format,
            "width": im.width,
            "height": im.height,
            "mode": im.mode,
        }
        frames = int(getattr(im, "n_frames", 1))
        if frames > 1:
            described["frames"] = frames
        return described
