"""Image actions built on Pillow: validate, resize, thumbnail, optimize, convert.

Every action reads its source through :func:`load_upright` (or :func:`inspect_image`
for validation), which refuses what is unsafe or broken with a one-line
PermanentError before anything reaches the caller. Decoding is restricted to
:data:`SAFE_FORMATS`, so Pillow never hands a file to an external program (EPS/PS).
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from mediaq.actions import action
from mediaq.actions.base import ActionContext, ActionResult, OutputFile, check_source_file
from mediaq.errors import InputRefused, PermanentError, TransientError

SAFE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP")
DEFAULT_MAX_PIXELS = 100_000_000

# Pillow's decoders signal malformed data with more than OSError.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    struct.error,
    zlib.error,
)

# Leading bytes of the formats we read, to tell "corrupt PNG" from "not an image".
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)

# Largest side each encoder accepts.
_MAX_SIDE = {"JPEG": 65_500, "WEBP": 16_383, "PNG": 2**31 - 1}
# Orientations 5-8 turn the picture a quarter, swapping width and height.
_QUARTER_TURNS = frozenset({5, 6, 7, 8})
# Shrink-on-load only when the target is at most half the source, and decode
# at twice the target so the final resample still has detail to work with.
_DRAFT_GAP = 2


# --------------------------------------------------------------------------- reading


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
        }


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
    with _open_checked(path, formats, max_pixels) as im, _reading(path, max_pixels):
        im.verify()
    # verify() leaves the image unusable, so decode from a fresh open.
    with _open_checked(path, formats, max_pixels) as im, _reading(path, max_pixels):
        info = _describe_source(path, im)
        for index in range(info.frames):
            im.seek(index)
            im.load()
    return info


def load_upright(
    path: Path,
    *,
    box: int | None = None,
    formats: tuple[str, ...] = SAFE_FORMATS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[SourceInfo, Image.Image]:
    """Decode the first frame of ``path`` with its EXIF orientation applied.

    ``box`` is the side of the square the caller will shrink the image into;
    JPEGs much larger than that are decoded at a reduced scale. Errors as for
    :func:`inspect_image`.
    """
    with _open_checked(path, formats, max_pixels) as im, _reading(path, max_pixels):
        info = _describe_source(path, im)
        if box is not None and im.format in ("JPEG", "MPO"):
            _shrink_on_load(im, fit_size(im.size, box, upscale=False))
        im.load()
        return info, ImageOps.exif_transpose(im)


@contextmanager
def _open_checked(path: Path, formats: tuple[str, ...], max_pixels: int) -> Iterator[Image.Image]:
    """Open ``path`` (header only) after refusing missing, empty and oversized files."""
    check_source_file(path)
    with _reading(path, max_pixels):
        try:
            im = Image.open(path, formats=list(formats))
        except UnidentifiedImageError:
            raise PermanentError(f"{path.name}: {_unidentified_reason(path, formats)}") from None
    try:
        _check_pixels(path, im.size, max_pixels)
        yield im
    finally:
        im.close()


def _check_pixels(path: Path, size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise PermanentError(
            f"{path.name}: {width}x{height} pixels exceeds the limit of {max_pixels}"
        )


@contextmanager
def _reading(path: Path, max_pixels: int) -> Iterator[None]:
    """Turn whatever Pillow raises on bad input into one clear PermanentError line."""
    name = path.name
    try:
        yield
    except Image.DecompressionBombError as exc:
        raise _bomb_refused(name, exc, max_pixels) from None
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise InputRefused(f"{name}: cannot be read ({exc.strerror})") from None
    except OSError as exc:
        if exc.errno is not None:  # the storage failed, not the data
            raise TransientError(f"{name}: read failed ({exc.strerror})") from None
        if "truncated" in str(exc).lower():
            raise PermanentError(f"{name}: truncated image (decoding stopped early)") from None
        raise PermanentError(f"{name}: corrupt image ({_one_line(exc)})") from None
    except _DECODE_ERRORS as exc:
        raise PermanentError(f"{name}: corrupt image ({_one_line(exc)})") from None


def _bomb_refused(name: str, exc: Exception, max_pixels: int) -> PermanentError:
    # Pillow refuses before we can see the header, so take the count from its message;
    # the limit that applied is the lower of ours and Pillow's.
    match = re.search(r"\((\d+) pixels\)", str(exc))
    pixels = match.group(1) if match else "too many"
    pillow_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    limit = min(max_pixels, pillow_limit) if pillow_limit else max_pixels
    return PermanentError(f"{name}: {pixels} pixels exceeds the limit of {limit}")


def _unidentified_reason(path: Path, formats: tuple[str, ...]) -> str:
    with path.open("rb") as fp:
        claimed = _claimed_format(fp.read(16))
    if claimed is None:
        return "not a supported image (format not recognised)"
    if claimed not in formats:
        return f"{claimed} images are not allowed here (allowed: {', '.join(formats)})"
    return f"corrupt image (looks like {claimed} but the header cannot be read)"


def _claimed_format(head: bytes) -> str | None:
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _SIGNATURES if head.startswith(magic)), None)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _describe_source(path: Path, im: Image.Image) -> SourceInfo:
    frames = int(getattr(im, "n_frames", 1))
    return SourceInfo(
        format=str(im.format),
        width=im.width,
        height=im.height,
        mode=im.mode,
        orientation=_exif_orientation(im),
        size_bytes=path.stat().st_size,
        animated=bool(getattr(im, "is_animated", False)),
        frames=frames,
    )


def _exif_orientation(im: Image.Image) -> int | None:
    value = im.getexif().get(ExifTags.Base.Orientation)
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def _shrink_on_load(im: Image.Image, target: tuple[int, int]) -> None:
    width, height = target
    if width * _DRAFT_GAP <= im.width and height * _DRAFT_GAP <= im.height:
        im.draft(None, (width * _DRAFT_GAP, height * _DRAFT_GAP))


# ------------------------------------------------------------------------ transforming


def fit_size(size: tuple[int, int], box: int, *, upscale: bool) -> tuple[int, int]:
    """``size`` scaled to fit a ``box`` x ``box`` square, keeping the aspect ratio.

    The longer side becomes ``box``; smaller images keep their size unless ``upscale``.
    """
    width, height = size
    longest = max(width, height)
    if longest <= box and not upscale:
        return size
    scale = box / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def _resized(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    if image.size == target:
        return image
    return image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _working_copy(image: Image.Image) -> Image.Image:
    """``image`` in L, LA, RGB or RGBA, so resampling is smooth and alpha survives."""
    if image.mode in ("L", "LA", "RGB", "RGBA"):
        return image
    if image.mode == "1":
        return image.convert("L")
    return image.convert("RGBA" if _has_alpha(image) else "RGB")


def _has_alpha(image: Image.Image) -> bool:
    return "A" in image.getbands() or image.has_transparency_data


def _flattened_on_white(image: Image.Image) -> Image.Image:
    background = Image.new("RGBA", image.size, "white")
    return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")


def _ready_for(image: Image.Image, fmt: str) -> Image.Image:
    """``image`` in a mode the ``fmt`` encoder can write (JPEG has no alpha)."""
    image = _working_copy(image)
    if fmt == "JPEG" and _has_alpha(image):
        return _flattened_on_white(image)
    return image


# -------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class Encoding:
    """How to write an output: Pillow format, file extension and save options."""

    format: str
    extension: str
    options: dict[str, Any]


_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
_FORMAT_NAMES = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG", "webp": "WEBP"}


def output_format(requested: str | None, source_format: str) -> str:
    """The Pillow format to write: ``requested`` (jpeg|jpg|png|webp) or, when None,
    the source's own format where we can write it and PNG otherwise."""
    if requested is not None:
        return _FORMAT_NAMES[requested.lower()]
    if source_format == "MPO":  # multi-picture JPEG from cameras
        return "JPEG"
    return source_format if source_format in _EXTENSIONS else "PNG"


def encoding_for(
    fmt: str,
    *,
    quality: int,
    optimize: bool = False,
    progressive: bool = False,
    lossless: bool = False,
) -> Encoding:
    """Save options for ``fmt``; ``optimize`` trades encoding time for size
    (JPEG Huffman tables are always optimised: it costs next to nothing)."""
    options: dict[str, Any]
    if fmt == "JPEG":
        options = {"quality": quality, "optimize": True, "progressive": progressive}
    elif fmt == "WEBP":
        options = {"quality": quality, "lossless": lossless, "method": 6 if optimize else 4}
    else:
        options = {"optimize": optimize}
    return Encoding(format=fmt, extension=_EXTENSIONS[fmt], options=options)


def _save(image: Image.Image, path: Path, encoding: Encoding) -> None:
    """Write ``image``; a failing disk is TransientError (worth retrying)."""
    _check_encodable(path, image.size, encoding.format)
    icc_profile = _matching_icc_profile(image)
    extra = {"icc_profile": icc_profile} if icc_profile else {}
    try:
        image.save(path, format=encoding.format, **encoding.options, **extra)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise TransientError(f"{path.name}: could not write output ({_one_line(exc)})") from None


def _matching_icc_profile(image: Image.Image) -> bytes | None:
    # A CMYK or grey profile carried over from the source would mis-colour RGB output.
    profile = image.info.get("icc_profile")
    expected = b"GRAY" if image.mode in ("L", "LA") else b"RGB "
    if isinstance(profile, bytes) and profile[16:20] == expected:
        return profile
    return None


def _check_encodable(path: Path, size: tuple[int, int], fmt: str) -> None:
    if max(size) > _MAX_SIDE[fmt]:
        raise PermanentError(
            f"{path.name}: {size[0]}x{size[1]} is too large for {fmt} "
            f"(at most {_MAX_SIDE[fmt]} pixels a side)"
        )


def describe_output(path: Path) -> dict[str, Any]:
    """Format, size and mode of a written image, read back from its header."""
    with Image.open(path, formats=list(_EXTENSIONS)) as im:
        return {"format": im.format, "width": im.width, "height": im.height, "mode": im.mode}


# -------------------------------------------------------------------------- actions


def _render(
    ctx: ActionContext,
    *,
    box: int | None,
    upscale: bool,
    requested_format: str | None,
    encoding_options: dict[str, Any],
    suffix: str,
    role: str = "primary",
) -> tuple[SourceInfo, OutputFile]:
    """Decode the source upright, fit it in ``box`` (None: keep the size), and write
    it as ``{input stem}{suffix}.{ext}``. Shared by every action that writes an image."""
    ctx.check()
    source, image = load_upright(ctx.source_path, box=box)
    ctx.progress(0.4, "decoded")
    if box is not None:
        image = _resized(image, fit_size(source.upright_size, box, upscale=upscale))
    fmt = output_format(requested_format, source.format)
    image = _ready_for(image, fmt)
    ctx.progress(0.7, "encoding")
    encoding = encoding_for(fmt, **encoding_options)
    path = ctx.output_path(f"{Path(ctx.input_path).stem}{suffix}.{encoding.extension}")
    _save(image, path, encoding)
    meta = describe_output(path)
    ctx.progress(1.0, "written")
    return source, OutputFile(staging_path=path, role=role, meta=meta)


def _summary(source: SourceInfo, output: OutputFile) -> dict[str, Any]:
    return {
        "source": source.as_data(),
        "output": {**output.meta, "size_bytes": output.staging_path.stat().st_size},
    }


_QUALITY = {"type": "integer", "minimum": 1, "maximum": 100}
_OUTPUT_FORMAT = {"enum": ["jpeg", "jpg", "png", "webp"]}


@action(
    "validate_image",
    {
        "properties": {
            "max_pixels": {"type": "integer", "minimum": 1, "default": DEFAULT_MAX_PIXELS},
            "allowed_formats": {
                "type": "array",
                "items": {"enum": list(SAFE_FORMATS)},
                "minItems": 1,
                "uniqueItems": True,
                "default": list(SAFE_FORMATS),
            },
        }
    },
)
def validate_image(ctx: ActionContext) -> ActionResult:
    """Check the source is a complete, safe image of an allowed format; describe it."""
    ctx.check()
    info = inspect_image(
        ctx.source_path,
        formats=tuple(ctx.params["allowed_formats"]),
        max_pixels=int(ctx.params["max_pixels"]),
    )
    ctx.progress(1.0, "validated")
    return ActionResult(data=info.as_data())


@action(
    "resize_image",
    {
        "properties": {
            "max_dimension": {"type": "integer", "minimum": 1, "default": 2000},
            "quality": {**_QUALITY, "default": 90},
            "upscale": {"type": "boolean", "default": False},
            "format": _OUTPUT_FORMAT,
        }
    },
    produces_primary=True,
)
def resize_image(ctx: ActionContext) -> ActionResult:
    """Fit the image within max_dimension x max_dimension, upright, keeping its format."""
    max_dimension = int(ctx.params["max_dimension"])
    source, output = _render(
        ctx,
        box=max_dimension,
        upscale=bool(ctx.params["upscale"]),
        requested_format=ctx.params.get("format"),
        encoding_options={"quality": int(ctx.params["quality"])},
        suffix=f"_{max_dimension}",
    )
    return ActionResult(
        outputs=[output],
        data={**_summary(source, output), "max_dimension": max_dimension},
    )


@action(
    "create_thumbnail",
    {
        "properties": {
            "size": {"type": "integer", "minimum": 1, "maximum": 4096, "default": 300},
            "format": {**_OUTPUT_FORMAT, "default": "jpeg"},
            "quality": {**_QUALITY, "default": 85},
        }
    },
)
def create_thumbnail(ctx: ActionContext) -> ActionResult:
    """Write an upright thumbnail that fits in a size x size box (never enlarged)."""
    size = int(ctx.params["size"])
    source, output = _render(
        ctx,
        box=size,
        upscale=False,
        requested_format=ctx.params["format"],
        encoding_options={"quality": int(ctx.params["quality"])},
        suffix=f"_thumb_{size}",
        role="thumbnail",
    )
    return ActionResult(outputs=[output], data={**_summary(source, output), "size": size})


@action(
    "optimize_image",
    {
        "properties": {
            "quality": {**_QUALITY, "default": 85},
            "progressive": {"type": "boolean", "default": True},
        }
    },
    produces_primary=True,
)
def optimize_image(ctx: ActionContext) -> ActionResult:
    """Re-encode the image in its own format with the encoder's size optimisations."""
    source, output = _render(
        ctx,
        box=None,
        upscale=False,
        requested_format=None,
        encoding_options={
            "quality": int(ctx.params["quality"]),
            "optimize": True,
            "progressive": bool(ctx.params["progressive"]),
        },
        suffix="_optimized",
    )
    output_bytes = output.staging_path.stat().st_size
    return ActionResult(
        outputs=[output],
        data={
            **_summary(source, output),
            "original_bytes": source.size_bytes,
            "output_bytes": output_bytes,
            "saving_ratio": round(1 - output_bytes / source.size_bytes, 4),
        },
    )


@action(
    "convert_format",
    {
        "properties": {
            "format": _OUTPUT_FORMAT,
            "quality": {**_QUALITY, "default": 85},
            "lossless": {"type": "boolean", "default": False},
        },
        "required": ["format"],
    },
    produces_primary=True,
)
def convert_format(ctx: ActionContext) -> ActionResult:
    """Convert to jpeg, png or webp; alpha is kept, or flattened on white for JPEG."""
    source, output = _render(
        ctx,
        box=None,
        upscale=False,
        requested_format=ctx.params["format"],
        encoding_options={
            "quality": int(ctx.params["quality"]),
            "lossless": bool(ctx.params["lossless"]),
        },
        suffix="",
    )
    return ActionResult(outputs=[output], data=_summary(source, output))
