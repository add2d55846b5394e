"""Why an image cannot be read, in words: every Pillow failure turned into one line
naming the file and the reason (Pillow's own texts name its internals: "decoder error
-2", ``PngImagePlugin.MAX_TEXT_CHUNK``)."""

from __future__ import annotations

import functools
import re
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

from PIL import Image, PngImagePlugin

from mediaq.errors import InputRefused, PermanentError, TransientError

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
    RuntimeError,  # pillow-heif's libheif errors
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
    # Formats Pillow reads that the actions do not admit: named, so the refusal says
    # "ICO images are not allowed here" rather than "format not recognised" (issue 22's
    # corpus: Pillow's own test images). Only unambiguous magic numbers.
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x00\x00\x02\x00", "CUR"),
    (b"DDS ", "DDS"),
    (b"icns", "ICNS"),
    (b"BLP1", "BLP"),
    (b"BLP2", "BLP"),
    (b"%!PS-Adobe", "EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"SIMPLE  =", "FITS"),
    (b"\xffO\xffQ", "JPEG 2000"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"8BPS", "PSD"),
    (b"qoif", "QOI"),
    (b"\x01\xda", "SGI"),
    (b"gimp xcf", "XCF"),
    (b"/* XPM */", "XPM"),
)
# Netpbm (PBM, PGM, PPM, PAM, PFM): "P1".."P7", "PF" or "Pf", then whitespace.
_NETPBM = re.compile(rb"P[1-7Ff]\s")
# ISO-BMFF brands (bytes 8-12 after "ftyp") of the HEIF family.
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})


@contextmanager
def reading(path: Path, max_pixels: int) -> Iterator[None]:
    """Turn whatever Pillow raises on bad input into one clear PermanentError line."""
    name = path.name
    try:
        yield
    except Image.DecompressionBombError as exc:
        raise bomb_refused(name, exc, max_pixels) from None
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise InputRefused(f"{name}: cannot be read ({exc.strerror})") from None
    except OSError as exc:
        if exc.errno is not None:  # the storage failed, not the data
            raise TransientError(f"{name}: read failed ({exc.strerror})") from None
        if "truncated" in str(exc).lower():
            raise PermanentError(f"{name}: truncated image (decoding stopped early)") from None
        if str(exc).startswith("decoder error"):
            raise PermanentError(f"{name}: {undecodable_reason(path)}") from None
        raise PermanentError(f"{name}: corrupt image ({one_line(exc)})") from None
    except _DECODE_ERRORS as exc:
        raise PermanentError(f"{name}: {decode_error_reason(exc)}") from None


def decode_error_reason(exc: Exception) -> str:
    """What Pillow's decoding error says, in words (its own text names its internals)."""
    text = str(exc)
    if "MAX_TEXT_CHUNK" in text:  # one zTXt/iTXt chunk inflates past Pillow's limit
        return f"PNG text chunk too large (over {_megabytes(PngImagePlugin.MAX_TEXT_CHUNK)})"
    if "MAX_TEXT_MEMORY" in text:  # all text chunks together
        return (f"PNG text chunks too large (over {_megabytes(PngImagePlugin.MAX_TEXT_MEMORY)}"
                " in all)")
    return f"corrupt image ({one_line(exc)})"


def _megabytes(size: int) -> str:
    return f"{size / 2 ** 20:g} MB"


# TIFF compressions by Pillow's name for them (``info["compression"]``), as people say them.
_TIFF_COMPRESSIONS = {
    "raw": "uncompressed", "tiff_ccitt": "CCITT", "group3": "CCITT Group 3",
    "group4": "CCITT Group 4",
    "tiff_lzw": "LZW", "tiff_jpeg": "old-style JPEG", "jpeg": "JPEG",
    "tiff_adobe_deflate": "Deflate", "tiff_deflate": "Deflate", "packbits": "PackBits",
    "tiff_thunderscan": "ThunderScan", "tiff_sgilog": "SGI LogLuv", "tiff_sgilog24": "SGI LogLuv",
    "lzma": "LZMA", "zstd": "Zstandard", "webp": "WebP", "jpeg2000": "JPEG 2000",
}


def undecodable_reason(path: Path) -> str:
    """Why the decoder failed ("decoder error -2" says nothing): for a TIFF whose
    compression this installation cannot decode, that compression; else what was being
    decoded."""
    try:
        with Image.open(path) as im:
            fmt, compression = im.format, im.info.get("compression")
    except Exception:  # the header was readable a moment ago: say less
        return "corrupt image (its pixel data cannot be decoded)"
    if fmt == "TIFF" and isinstance(compression, str):
        said = _TIFF_COMPRESSIONS.get(compression, compression)
        if not _tiff_compression_works(compression):
            return f"TIFF with {said} compression is not supported"
        data = "uncompressed" if compression == "raw" else f"{said}-compressed"
        return f"corrupt image (its {data} TIFF data cannot be decoded)"
    return f"corrupt image (its {fmt or 'pixel'} data cannot be decoded)"


@functools.cache
def _tiff_compression_works(compression: str) -> bool:
    """Whether this Pillow (its libtiff) handles ``compression``: one tiny image written
    with it. A codec libtiff was built without fails to write as it fails to read."""
    try:
        Image.new("RGB", (8, 8)).save(BytesIO(), "TIFF", compression=compression)
    except Exception:  # any refusal means: not here
        return False
    return True


def bomb_refused(name: str, exc: Exception, max_pixels: int) -> PermanentError:
    # Pillow refuses before we can see the header, so take the count from its message;
    # the limit that applied is the lower of ours and Pillow's.
    match = re.search(r"\((\d+) pixels\)", str(exc))
    pixels = match.group(1) if match else "too many"
    pillow_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    limit = min(max_pixels, pillow_limit) if pillow_limit else max_pixels
    return PermanentError(f"{name}: {pixels} pixels exceeds the limit of {limit}")


def unidentified_reason(path: Path, formats: tuple[str, ...]) -> str:
    with path.open("rb") as fp:
        claimed = claimed_format(fp.read(16))
    if claimed is None:
        return "not a supported image (format not recognised)"
    if claimed not in formats:
        return f"{claimed} images are not allowed here (allowed: {', '.join(formats)})"
    return f"corrupt image (looks like {claimed} but the header cannot be read)"


def claimed_format(head: bytes) -> str | None:
    """The image format the first 16 bytes of a file claim, if any."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _AVIF_BRANDS:
            return "AVIF"
        if brand in _HEIF_BRANDS:
            return "HEIF"
    if _NETPBM.match(head):
        return "Netpbm"
    return next((fmt for magic, fmt in _SIGNATURES if head.startswith(magic)), None)


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (never empty)."""
    return " ".join(str(exc).split()) or type(exc).__name__
