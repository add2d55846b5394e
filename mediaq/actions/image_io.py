"""Reading images safely: allowed formats only, bombs refused from the header,
every Pillow failure turned into one line (:mod:`image_reasons`), pixels normalised
and turned upright.

Decoding is restricted to :data:`SAFE_FORMATS`, so Pillow never hands a file to an
external program (EPS/PS). HEIC/HEIF comes from pillow-heif when it is installed;
AVIF from Pillow itself.
"""

from __future__ import annotations

import resource
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageCms, ImageSequence, UnidentifiedImageError

from mediaq.actions.base import check_source_file
from mediaq.actions.image_reasons import reading, unidentified_reason
from mediaq.errors import PermanentError

try:  # HEIC/HEIF photos from phones; optional so a slim install still reads the rest
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_AVAILABLE = True
except ImportError:  # pragma: no cover - pillow-heif is a dependency
    HEIF_AVAILABLE = False

SAFE_FORMATS: tuple[str, ...] = (
    "JPEG",
    "PNG",
    "WEBP",
    "GIF",
    "TIFF",
    "BMP",
    "AVIF",
    *(("HEIF",) if HEIF_AVAILABLE else ()),
)
DEFAULT_MAX_PIXELS = 100_000_000
DEFAULT_MAX_FRAMES = 1000

# Formats whose extra frames are an animation. TIFF pages, an MPO's extra pictures
# (phone previews, gain maps, stereo pairs) and HEIF's extra images are not: they have
# sizes of their own and no timing, so only their first picture is the image.
_ANIMATION_SOURCES = frozenset({"GIF", "PNG", "WEBP", "AVIF"})
# Orientations 5-8 turn the picture a quarter, swapping width and height.
_QUARTER_TURNS = frozenset({5, 6, 7, 8})
_TRANSPOSE_FOR_ORIENTATION: dict[int, tuple[Image.Transpose, ...]] = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}
# Shrink-on-load only when the target is at most half the source, and decode
# at twice the target so the final resample still has detail to work with.
_DRAFT_GAP = 2
_SRGB = ImageCms.createProfile("sRGB")
# Relative colorimetric, as libvips and ImageMagick convert: the source's colours as
# they are, clipped to sRGB. Perceptual through lcms's (ICC v4) sRGB would rescale a
# v2 CMYK profile's black point and push press reds and blues far off.
_INTENT = ImageCms.Intent.RELATIVE_COLORIMETRIC


@dataclass(frozen=True)
class SourceInfo:
    """What the header of a source image says (before any orientation fix)."""

    format: str
    width: int
    height: int
    mode: str
    orientation: int | None
    size_bytes: int
    animated: bool
    frames: int
    icc_profile: str | None = None

    @property
    def upright_size(self) -> tuple[int, int]:
        """Width and height once the EXIF orientation is applied."""
        if self.orientation in _QUARTER_TURNS:
            return self.height, self.width
        return self.width, self.height

    def as_data(self) -> dict[str, Any]:
        """A JSON-able summary."""
        return {
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "mode": self.mode,
            "orientation": self.orientation,
            "size_bytes": self.size_bytes,
            "animated": self.animated,
            "frames": self.frames,
            "icc_profile": self.icc_profile,
        }


@dataclass
class Picture:
    """A decoded source: upright frames in L, LA, RGB or RGBA, plus what an encoder
    may need to carry over (timing, loop count, metadata)."""

    info: SourceInfo
    frames: list[Image.Image]
    durations: list[int] = field(default_factory=list)
    loop: int = 0
    exif: Image.Exif = field(default_factory=Image.Exif)
    xmp: bytes | None = None
    icc: bytes | None = None  # the source's RGB/grey profile, still to apply

    @property
    def first(self) -> Image.Image:
        return self.frames[0]

    @property
    def animated(self) -> bool:
        return len(self.frames) > 1


# --------------------------------------------------------------------------- reading


def inspect_image(
    path: Path,
    *,
    formats: tuple[str, ...] = SAFE_FORMATS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> SourceInfo:
    """Check that ``path`` is a safe, complete image and describe it.

    The header is checked against ``max_pixels`` before anything is decoded;
    then the file is verified and every frame decoded. Raises InputRefused for a
    missing or unreadable file and PermanentError (one line) for a bad one.
    """
    with _open_checked(path, formats, max_pixels) as im, reading(path, max_pixels):
        im.verify()
    # verify() leaves the image unusable, so decode from a fresh open.
    with _open_checked(path, formats, max_pixels) as im, reading(path, max_pixels):
        info = _describe_source(path, im)
        for index in range(info.frames):
            im.seek(index)
            im.load()
    return info


def read_header(
    path: Path,
    *,
    formats: tuple[str, ...] = SAFE_FORMATS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> SourceInfo:
    """Describe ``path`` from its header alone (nothing decoded); errors as above."""
    with _open_checked(path, formats, max_pixels) as im, reading(path, max_pixels):
        return _describe_source(path, im)


def load_picture(
    path: Path,
    *,
    box: tuple[int, int] | None = None,
    animated: bool = False,
    each_frame: Callable[[Image.Image], Image.Image] | None = None,
    formats: tuple[str, ...] = SAFE_FORMATS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> Picture:
    """Decode ``path`` upright: the first frame, or every frame when ``animated``.

    ``box`` is the smallest size the caller still needs; JPEGs much larger than
    that are decoded at a reduced scale (shrink-on-load). ``each_frame`` is applied
    to every decoded frame at once, so an animation never sits in memory at full
    size. Errors as for :func:`inspect_image`.
    """
    with _open_checked(path, formats, max_pixels) as im, reading(path, max_pixels):
        _refuse_what_cannot_fit(im)
        info = _describe_source(path, im)
        if animated and info.frames > max_frames:
            raise PermanentError(
                f"{path.name}: {info.frames} frames exceeds the limit of {max_frames}"
            )
        if box is not None and im.format in ("JPEG", "MPO"):
            _shrink_on_load(im, box, info.orientation)
        exif = im.getexif()  # all of it: a PNG is decoded to reach an eXIf chunk at its end
        info = replace(info, orientation=_orientation_in(exif))
        picture = Picture(
            info=info,
            frames=[],
            loop=int(im.info.get("loop", 0) or 0),
            exif=exif,
            xmp=_xmp_of(im),
        )
        icc = im.info.get("icc_profile")
        for frame in ImageSequence.Iterator(im) if animated else [im]:
            frame.load()
            picture.durations.append(int(frame.info.get("duration", 100) or 100))
            decoded = _upright(_normalised(frame, icc, path.name), info.orientation)
            if each_frame is not None:
                decoded = each_frame(decoded)
            # The file-backed image dies with the file; keep a copy if nothing made one.
            picture.frames.append(decoded.copy() if decoded is frame else decoded)
        picture.icc = icc if info.mode != "CMYK" and _is_profile(icc) else None
        return picture


def read_metadata(
    path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[Image.Exif, bytes | None]:
    """The EXIF and XMP of ``path``, read from its header (nothing decoded)."""
    with _open_checked(path, SAFE_FORMATS, max_pixels) as im, reading(path, max_pixels):
        return im.getexif(), _xmp_of(im)


@contextmanager
def _open_checked(path: Path, formats: tuple[str, ...], max_pixels: int) -> Iterator[Image.Image]:
    """Open ``path`` (header only) after refusing missing, empty and oversized files."""
    check_source_file(path)
    with reading(path, max_pixels):
        try:
            im = Image.open(path, formats=list(formats))
        except UnidentifiedImageError:
            raise PermanentError(f"{path.name}: {unidentified_reason(path, formats)}") from None
    try:
        _check_pixels(path, im.size, max_pixels)
        yield im
    finally:
        im.close()


def _refuse_what_cannot_fit(im: Image.Image) -> None:
    """Raise MemoryError when decoding ``im`` needs more address space than the
    process's RLIMIT_AS leaves (a step's child under ``step_memory_limit_mb``).

    Pillow zeroes every block it allocates, so a bomb that fails part-way through the
    allocation has already spent CPU time (seconds on a slow machine) faulting in
    pages; refused here it costs nothing, and fails as the memory limit, as it would.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return
    # Pillow keeps single-band 8-bit images at a byte a pixel, 16-bit ones at two and
    # everything else (RGB included) at four.
    per_pixel = 1 if im.mode in ("1", "L", "P") else 2 if im.mode.startswith("I;16") else 4
    if _address_space_in_use() + im.width * im.height * per_pixel > soft:
        raise MemoryError(f"{im.width}x{im.height} {im.mode} cannot be decoded here")


def _address_space_in_use() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _check_pixels(path: Path, size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise PermanentError(
            f"{path.name}: {width}x{height} pixels exceeds the limit of {max_pixels}"
        )


def _describe_source(path: Path, im: Image.Image) -> SourceInfo:
    frames = int(getattr(im, "n_frames", 1))
    return SourceInfo(
        format=str(im.format),
        width=im.width,
        height=im.height,
        mode=im.mode,
        orientation=_exif_orientation(im),
        size_bytes=path.stat().st_size,
        animated=bool(getattr(im, "is_animated", False)) and im.format in _ANIMATION_SOURCES,
        frames=frames,
        icc_profile=profile_name(im.info.get("icc_profile")),
    )


def _exif_orientation(im: Image.Image) -> int | None:
    """The orientation the header gives. Pillow decodes a whole PNG to look for an
    eXIf chunk after its pixels; describing one reads only the chunks before them."""
    if im.format == "PNG" and "exif" not in im.info:
        return None
    return _orientation_in(im.getexif())


def _orientation_in(exif: Image.Exif) -> int | None:
    value = exif.get(ExifTags.Base.Orientation)
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def _xmp_of(im: Image.Image) -> bytes | None:
    xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
    if isinstance(xmp, str):
        return xmp.encode()
    return xmp if isinstance(xmp, bytes) else None


def _shrink_on_load(im: Image.Image, box: tuple[int, int], orientation: int | None) -> None:
    width, height = box
    if orientation in _QUARTER_TURNS:  # the box is upright; the stored picture is not
        width, height = height, width
    if width * _DRAFT_GAP <= im.width and height * _DRAFT_GAP <= im.height:
        im.draft(None, (width * _DRAFT_GAP, height * _DRAFT_GAP))


# --------------------------------------------------------------------- pixel shapes


def _upright(image: Image.Image, orientation: int | None) -> Image.Image:
    for method in _TRANSPOSE_FOR_ORIENTATION.get(orientation or 1, ()):
        image = image.transpose(method)
    return image


def _normalised(frame: Image.Image, icc: Any, name: str) -> Image.Image:
    """``frame`` in L, LA, RGB or RGBA, so resampling is smooth and alpha survives.

    CMYK is turned into sRGB here, through its own profile where it has one,
    because the resampler and the encoders only speak RGB.
    """
    mode = frame.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return frame
    if mode.startswith("I") or mode == "F":
        return _eight_bit_grey(frame)
    if mode == "CMYK":
        return _cmyk_to_srgb(frame, icc, name)
    if mode == "1":
        return frame.convert("L")
    if mode in ("P", "PA") or frame.has_transparency_data:
        return frame.convert("RGBA" if has_alpha(frame) else "RGB")
    return frame.convert("RGB")


def _eight_bit_grey(frame: Image.Image) -> Image.Image:
    # Pillow's I;16 -> L conversion clips at 255 instead of scaling: 16-bit PNGs and
    # TIFFs would come out white. Scale the full 16-bit range down instead.
    values = np.asarray(frame, dtype=np.float64)
    peak = 65535.0 if frame.mode != "F" else max(float(values.max()), 1.0)
    if frame.mode == "I" and values.max() <= 255:
        peak = 255.0
    scaled = np.clip(values * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, "L")


def _cmyk_to_srgb(frame: Image.Image, icc: Any, name: str) -> Image.Image:
    if not _is_profile(icc):
        return frame.convert("RGB")
    try:
        source = ImageCms.ImageCmsProfile(BytesIO(icc))
        converted = ImageCms.profileToProfile(
            frame, source, _SRGB, renderingIntent=_INTENT, outputMode="RGB"
        )
    except (ImageCms.PyCMSError, OSError, ValueError):
        return frame.convert("RGB")  # a broken profile must not lose the picture
    assert converted is not None
    return converted


def has_alpha(image: Image.Image) -> bool:
    """Whether ``image`` carries transparency (an alpha band or a transparent colour)."""
    return "A" in image.getbands() or image.has_transparency_data


def _is_profile(icc: Any) -> bool:
    return isinstance(icc, bytes) and len(icc) >= 132 and icc[36:40] == b"acsp"


def profile_name(icc: Any) -> str | None:
    """The description of an embedded ICC profile, or None."""
    if not _is_profile(icc):
        return None
    try:
        return str(ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(BytesIO(icc)))).strip()
    except (ImageCms.PyCMSError, OSError, ValueError):
        return "unreadable profile"


def to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """``image`` (L/LA/RGB/RGBA) converted from its embedded profile to sRGB.

    Done after resizing, on the few pixels that are left. A profile that is already
    sRGB, a grey profile on a grey image, or a broken profile leaves pixels as they are.
    """
    if icc is None or image.mode in ("L", "LA") or icc[16:20] != b"RGB ":
        return image
    if "sRGB" in (profile_name(icc) or ""):
        return image
    try:
        source = ImageCms.ImageCmsProfile(BytesIO(icc))
        converted = ImageCms.profileToProfile(
            image, source, _SRGB, renderingIntent=_INTENT, outputMode=image.mode
        )
    except (ImageCms.PyCMSError, OSError, ValueError):
        return image
    assert converted is not None
    converted.info.pop("icc_profile", None)
    return converted
