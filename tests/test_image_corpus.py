"""The image actions on a corpus written by independent tools, judged by them too.

ImageMagick (``convert``/``identify``) and libvips (``vips``) write the sources:
every format the actions read, EXIF orientations, a Display P3 and a CMYK profile,
private EXIF, animations, alpha, a subject for smart crops, a large photo. The
outputs are decoded by ImageMagick rather than Pillow, so a Pillow quirk cannot
hide on both sides: pixel values at known places, sizes, frame timing, EXIF.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import EpsImagePlugin, ExifTags, Image

from mediaq.actions import ActionResult
from mediaq.errors import PermanentError
from tests.helpers import missing_tool_reason, run_action
from tests.test_image_actions import png_header_only


def _imagemagick() -> str | None:
    """ImageMagick's ``convert``, by Debian's own name first (a ``convert`` earlier on
    PATH may be a slower wrapper or a stand-in), or None."""
    if shutil.which("identify") is None:
        return None
    for name in ("convert-im6.q16", "convert-im6", "convert"):
        exe = shutil.which(name)
        if exe is None:
            continue
        try:
            done = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        if "ImageMagick" in done.stdout:
            return exe
    return None


CONVERT = _imagemagick()
IDENTIFY = shutil.which("identify") or "identify"
VIPS = shutil.which("vips")

# Present but not ImageMagick (a stand-in earlier on PATH) counts as missing.
pytestmark = pytest.mark.skipif(CONVERT is None, reason=missing_tool_reason("convert"))

RGBA = tuple[int, ...]
RED, LIME, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
QUADRANTS = (RED, LIME, BLUE, WHITE)  # top-left, top-right, bottom-left, bottom-right
# Red top-left, lime top-right, blue bottom-left, white bottom-right; 200x100.
QUAD = (
    "(", "-size", "100x50", "xc:red", "xc:lime", "+append", ")",
    "(", "-size", "100x50", "xc:blue", "xc:white", "+append", ")",
    "-append",
)  # fmt: skip
# Alpha of alpha.png: red half transparent, lime and blue opaque, white transparent.
ALPHA_MASK = (
    "(",
    "(", "-size", "100x50", "xc:gray50", "xc:white", "+append", ")",
    "(", "-size", "100x50", "xc:white", "xc:black", "+append", ")",
    "-append",
    ")",
)  # fmt: skip
ALPHA_COMPOSE = ("-alpha", "off", "-compose", "CopyOpacity", "-composite")
LOSSY = 40  # per channel, for anything that went through a lossy codec
EXACT = 3  # for lossless sources written losslessly (resampling rounding only)

# Private EXIF written into meta.jpg, and what ImageMagick reads back.
SERIAL = "SN-4417-2209"
MAKER_NOTE = b"SECRET-MAKER-NOTE\x00\x01\x02"
ARTIST = "Ada Lovelace"
COPYRIGHT = "(c) 2024 Ada Lovelace"
COMMENT = "Taken at 12 Example Street by J. Doe"
# How each output format embeds an ICC profile, byte for byte.
PROFILE_MARKERS = {"PNG": b"iCCP", "JPEG": b"ICC_PROFILE\0", "WEBP": b"ICCP", "AVIF": b"colrprof"}


# ------------------------------------------------------------------------- tools


def _run(*command: str | Path, cwd: Path | None = None) -> bytes:
    done = subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, timeout=120
    )
    if done.returncode != 0:
        words = " ".join(str(part) for part in command)
        raise RuntimeError(f"{words}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def magick(*args: str | Path, cwd: Path | None = None) -> bytes:
    assert CONVERT is not None
    return _run(CONVERT, *args, cwd=cwd)


def identify(path: Path, fmt: str) -> str:
    """``identify -format fmt`` of ``path`` (once per frame for animations)."""
    return _run(IDENTIFY, "-format", fmt, path).decode()


def vips(*args: str | Path, cwd: Path | None = None) -> bytes:
    if VIPS is None:
        raise RuntimeError(missing_tool_reason("vips"))
    return _run(VIPS, *args, cwd=cwd)


def decoded(path: Path, *, coalesce: bool = False) -> list[np.ndarray]:
    """Every frame of ``path`` as height x width x RGBA (uint8), decoded by ImageMagick;
    alpha is 255 where the file has none. ``coalesce`` builds full animation frames."""
    data = magick(
        path,
        *(["-coalesce"] if coalesce else []),
        *("-depth", "8", "-alpha", "set", "-type", "TrueColorAlpha", "pam:-"),
    )
    frames = []
    while data:
        header, _, rest = data.partition(b"ENDHDR\n")
        fields = dict(line.split(" ", 1) for line in header.decode().splitlines() if " " in line)
        width, height, depth = int(fields["WIDTH"]), int(fields["HEIGHT"]), int(fields["DEPTH"])
        assert depth == 4, header
        size = width * height * depth
        frames.append(np.frombuffer(rest[:size], np.uint8).reshape(height, width, depth))
        data = rest[size:]
    return frames


def pixels(path: Path) -> np.ndarray:
    """The first frame of ``path`` (height x width x RGBA), decoded by ImageMagick."""
    return decoded(Path(f"{path}[0]"))[0]


def centres(image: np.ndarray) -> list[RGBA]:
    """The RGBA at the centre of each quadrant: TL, TR, BL, BR."""
    height, width = image.shape[:2]
    return [
        tuple(int(value) for value in image[y, x])
        for y in (height // 4, 3 * height // 4)
        for x in (width // 4, 3 * width // 4)
    ]


def assert_colours(
    actual: Sequence[RGBA], expected: Sequence[Sequence[int | None]], tolerance: int
) -> None:
    """Each actual pixel matches its expected one within ``tolerance`` per channel
    (None: that channel does not matter; a missing alpha means opaque)."""
    for where, (got, want) in enumerate(zip(actual, expected, strict=True)):
        want = tuple(want) + (255,) * (4 - len(want))
        for channel, (value, wanted) in enumerate(zip(got, want, strict=True)):
            if wanted is not None:
                assert abs(int(value) - wanted) <= tolerance, (
                    f"pixel {where} channel {channel}: {got} != {want} (±{tolerance})"
                )


def exif_of(path: Path) -> dict[str, str]:
    """The EXIF tags ImageMagick reads from ``path``, without the 'exif:' prefix."""
    text = identify(path, "%[EXIF:*]")
    return dict(line[5:].split("=", 1) for line in text.splitlines() if line.startswith("exif:"))


def embeds_profile(path: Path) -> bool:
    """Whether ``path`` carries an ICC profile: ImageMagick lists one, or the bytes by
    which its format embeds one are there (libpng drops a malformed iCCP on reading)."""
    fmt = identify(path, "%m")
    marker = PROFILE_MARKERS["AVIF" if fmt == "HEIC" else fmt]
    return "icc" in identify(path, "%[profiles]").split(",") or marker in path.read_bytes()


def delays(path: Path) -> list[int]:
    """Per-frame delays in centiseconds, as ImageMagick reads them."""
    return [int(value) for value in identify(path, "%T,").split(",") if value]


def one_output(result: ActionResult) -> Path:
    """The delivered output (not the lossless pixels left for later steps)."""
    [output] = [o for o in result.outputs if o.role != "intermediate"]
    return output.staging_path


def refused(name: str, source: Path, out: Path, **params: Any) -> str:
    """The PermanentError message of the step, checked to be one line naming the file."""
    with pytest.raises(PermanentError) as caught:
        run_action(name, source, out, **params)
    message = caught.value.message
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(f"{source.name}: "), message
    return message


# ------------------------------------------------------------------------ corpus


@dataclass
class Corpus:
    """Files by name; a file no tool here could make is missing, with the reason."""

    root: Path
    files: dict[str, Path] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Path:
        if name in self.missing:
            pytest.skip(self.missing[name])
        return self.files[name]


def _heif_family(root: Path, name: str, brands: frozenset[bytes]) -> None:
    """quad.heic / quad.avif by ImageMagick, else by libvips; checked by brand."""
    errors = []
    for make in (
        lambda: magick("quad.png", "-quality", "90", name, cwd=root),
        lambda: vips("copy", "quad.png", f"{name}[Q=90]", cwd=root),
    ):
        try:
            make()
        except RuntimeError as exc:
            errors.append(" ".join(str(exc).split()))
            continue
        if (root / name).read_bytes()[8:12] in brands:
            return
        errors.append(f"wrote {(root / name).read_bytes()[8:12]!r}, not {sorted(brands)}")
    raise RuntimeError(f"neither ImageMagick nor libvips can write {name}: {'; '.join(errors)}")


def _orientation_seed(root: Path) -> None:
    # ImageMagick records -orient only in an EXIF block the JPEG already has, so give
    # it one (orientation 1); ImageMagick does the rotating and the tagging.
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 1
    exif[ExifTags.Base.Make] = "Seed"
    with Image.open(root / "quad.png") as quad:
        quad.convert("RGB").save(root / "seed.jpg", quality=95, exif=exif.tobytes())
    for name, rotate, orient in (
        ("o6.jpg", "-90", "RightTop"),
        ("o3.jpg", "180", "BottomRight"),
        ("o8.jpg", "90", "LeftBottom"),
    ):
        magick("seed.jpg", "-rotate", rotate, "-orient", orient, "-quality", "95", name, cwd=root)


def _profiles(root: Path) -> None:
    # libvips has Display P3, sRGB and CMYK profiles built in; ImageMagick applies them.
    vips("icc_transform", "quad.png", "p3.jpg[Q=95]", "p3", cwd=root)
    vips("icc_transform", "quad.png", "cmyk_profiled.jpg[Q=95]", "cmyk", cwd=root)
    vips("icc_transform", "quad.png", "srgb_tagged.png", "srgb", cwd=root)
    magick("srgb_tagged.png", "srgb.icc", cwd=root)
    magick("p3.jpg", "-profile", "srgb.icc", "p3_in_srgb.png", cwd=root)
    magick("cmyk_profiled.jpg", "-profile", "srgb.icc", "cmyk_profiled_in_srgb.png", cwd=root)


def _unusable_profile(device_class: bytes, colour_space: bytes) -> bytes:
    """An ICC header with no tags: it reads as a profile, but nothing converts with it."""
    header = bytearray(128)
    struct.pack_into(">I", header, 0, 132)
    header[8:12] = b"\x02\x10\x00\x00"
    header[12:16], header[16:20], header[20:24] = device_class, colour_space, b"XYZ "
    header[36:40] = b"acsp"
    return bytes(header) + struct.pack(">I", 0)


def _extras(root: Path) -> None:
    """Comments, and profiles that cannot be applied, attached by ImageMagick."""
    magick("quad.png", "-set", "comment", COMMENT, "-quality", "92", "comment.jpg", cwd=root)
    magick("quad.png", "-set", "comment", COMMENT, "comment.gif", cwd=root)
    (root / "cmyk_bad.icc").write_bytes(_unusable_profile(b"prtr", b"CMYK"))
    (root / "rgb_bad.icc").write_bytes(_unusable_profile(b"mntr", b"RGB "))
    magick(
        *("quad.png", "-colorspace", "CMYK", "-profile", "cmyk_bad.icc"),
        *("-quality", "92", "cmyk_bad_profile.jpg"),
        cwd=root,
    )
    magick("quad.png", "-profile", "rgb_bad.icc", "PNG24:rgb_bad_profile.png", cwd=root)


def _multi_picture(root: Path) -> None:
    """Files with more than one picture that are not animations: a two-page TIFF by
    ImageMagick, and a JPEG with a second (MPF) picture as phones write them, by
    Pillow (no tool here writes MPF); both second pictures a different size."""
    magick("quad.png", "(", "-size", "100x100", "xc:orange", ")", "pages.tiff", cwd=root)
    with Image.open(root / "quad.png") as quad:
        preview = Image.new("RGB", (40, 40), "orange")
        quad.convert("RGB").save(
            root / "mpf.jpg", format="MPO", quality=95, save_all=True, append_images=[preview]
        )
    magick(
        *("-size", "100x50", "xc:gray(20.3%)", "xc:gray(80.3%)", "+append"),
        *("-colorspace", "Gray", "-depth", "16", "-define", "png:color-type=0", "PNG:grey16.png"),
        cwd=root,
    )
    magick("grey16.png", "-depth", "16", "grey16.tiff", cwd=root)


def _metadata(root: Path) -> None:
    # exiftool is not assumed: Pillow writes the EXIF, ImageMagick reads it back.
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Canon"
    exif[ExifTags.Base.Model] = "EOS Test"
    exif[ExifTags.Base.Artist] = ARTIST
    exif[ExifTags.Base.Copyright] = COPYRIGHT
    exif[ExifTags.IFD.Exif] = {
        ExifTags.Base.BodySerialNumber: SERIAL,
        ExifTags.Base.MakerNote: MAKER_NOTE,
        ExifTags.Base.DateTimeOriginal: "2024:01:02 03:04:05",
    }
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSVersionID: b"\x02\x03\x00\x00",
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (Fraction(51), Fraction(30), Fraction(25, 2)),
        ExifTags.GPS.GPSLongitudeRef: "W",
        ExifTags.GPS.GPSLongitude: (Fraction(0), Fraction(7), Fraction(399, 10)),
    }
    magick("quad.png", "-quality", "95", "plain.jpg", cwd=root)
    with Image.open(root / "plain.jpg") as plain:
        plain.save(root / "meta.jpg", quality=95, exif=exif.tobytes())


def _animations(root: Path) -> None:
    for colour in ("red", "lime", "blue"):
        magick(
            *("-size", "100x50", f"xc:{colour}", "-fill", "white"),
            *("-draw", "rectangle 5,5 20,20", f"PNG24:f_{colour}.png"),
            cwd=root,
        )
    frames = ("-delay", "10", "f_red.png", "-delay", "20", "f_lime.png")
    frames += ("-delay", "30", "f_blue.png", "-loop", "0")
    magick(*frames, "anim.gif", cwd=root)
    try:  # ImageMagick 6 writes WebP frame delays shifted by one frame; libvips does not
        vips("copy", "anim.gif[n=-1]", "anim.webp[lossless]", cwd=root)
    except RuntimeError:
        magick(*frames, "-define", "webp:lossless=true", "anim.webp", cwd=root)


def _smart(root: Path) -> None:
    # A flat grey 1200x600 with a small red/blue checkerboard near the right edge.
    cells = " ".join(
        f"fill {'red' if (row + col) % 2 else 'blue'} "
        f"rectangle {1050 + 20 * col},{240 + 20 * row} {1069 + 20 * col},{259 + 20 * row}"
        for row in range(6)
        for col in range(6)
    )
    magick("-size", "1200x600", "xc:#808080", "-draw", cells, "PNG24:smart.png", cwd=root)


def _large(root: Path) -> None:
    magick(
        *("-size", "2000x3000", "xc:navy", "xc:orange", "+append", "-fill", "red"),
        *("-draw", "circle 2000,1500 2000,1900", "-quality", "85", "large.jpg"),
        cwd=root,
    )


def _photo(root: Path) -> None:
    # Plasma, softened a little: detail enough that SSIM 0.95 needs a middling quality.
    magick(
        *("-seed", "7", "-size", "640x480", "plasma:", "-blur", "0x0.5"),
        *("-quality", "98", "photo.jpg"),
        cwd=root,
    )
    magick("photo.jpg", "-quality", "95", "photo_q95.jpg", cwd=root)


def _refusals(root: Path) -> None:
    (root / "drawing.eps").write_text(
        "%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 50\n"
        "1 0 0 setrgbcolor 0 0 100 50 rectfill showpage\n%%EOF\n"
    )
    (root / "page.ps").write_text("%!PS\n/Helvetica findfont 12 scalefont setfont\nshowpage\n")
    (root / "logo.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="200" height="100">'
        '<rect width="100" height="50" fill="red"/></svg>\n'
    )
    png_header_only(root / "bomb.png", 20_000, 20_000)


# What each file in the format matrix is: (file, lossy, has alpha).
FORMATS: dict[str, tuple[str, bool, bool]] = {
    "baseline_jpeg": ("baseline.jpg", True, False),
    "progressive_jpeg": ("progressive.jpg", True, False),
    "cmyk_jpeg": ("cmyk.jpg", True, False),
    "png16": ("deep16.png", False, False),
    "palette_png": ("palette.png", False, False),
    "alpha_png": ("alpha.png", False, True),
    "tiff": ("quad.tiff", False, False),
    "bmp": ("quad.bmp", False, False),
    "webp": ("quad.webp", True, False),
    "heic": ("quad.heic", True, False),
    "avif": ("quad.avif", True, False),
    "gif": ("quad.gif", False, False),
}


def _formats(root: Path) -> list[tuple[str, Callable[[], Any]]]:
    def im(*args: str) -> Callable[[], bytes]:
        return lambda: magick("quad.png", *args, cwd=root)

    return [
        ("baseline.jpg", im("-quality", "92", "-interlace", "None", "baseline.jpg")),
        ("progressive.jpg", im("-quality", "92", "-interlace", "Plane", "progressive.jpg")),
        ("cmyk.jpg", im("-colorspace", "CMYK", "-quality", "92", "cmyk.jpg")),
        ("deep16.png", im("-depth", "16", "PNG48:deep16.png")),
        ("palette.png", im("PNG8:palette.png")),
        ("alpha.png", im(*ALPHA_MASK, *ALPHA_COMPOSE, "PNG32:alpha.png")),
        ("quad.tiff", im("-compress", "lzw", "quad.tiff")),
        ("quad.bmp", im("quad.bmp")),
        ("quad.webp", im("-quality", "90", "quad.webp")),
        ("quad.heic", lambda: _heif_family(root, "quad.heic", frozenset({b"heic", b"heix"}))),
        ("quad.avif", lambda: _heif_family(root, "quad.avif", frozenset({b"avif"}))),
        ("quad.gif", im("quad.gif")),
        ("small.png", lambda: magick("-size", "100x100", "xc:orange", "PNG24:small.png", cwd=root)),
    ]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    root = tmp_path_factory.mktemp("corpus")
    made = Corpus(root)
    magick(*QUAD, "PNG24:quad.png", cwd=root)
    made.files["quad.png"] = root / "quad.png"
    # Independent groups run side by side; what each writes is named for the record.
    jobs: list[tuple[Sequence[str], Callable[[], Any]]] = [
        ((name,), make) for name, make in _formats(root)
    ]
    jobs += [
        (("o6.jpg", "o3.jpg", "o8.jpg"), lambda: _orientation_seed(root)),
        (
            (
                *("p3.jpg", "p3_in_srgb.png", "cmyk_profiled.jpg"),
                *("cmyk_profiled_in_srgb.png", "srgb_tagged.png"),
            ),
            lambda: _profiles(root),
        ),
        (("meta.jpg",), lambda: _metadata(root)),
        (
            ("comment.jpg", "comment.gif", "cmyk_bad_profile.jpg", "rgb_bad_profile.png"),
            lambda: _extras(root),
        ),
        (("anim.gif", "anim.webp"), lambda: _animations(root)),
        (("pages.tiff", "mpf.jpg", "grey16.png", "grey16.tiff"), lambda: _multi_picture(root)),
        (("smart.png",), lambda: _smart(root)),
        (("large.jpg",), lambda: _large(root)),
        (("photo.jpg", "photo_q95.jpg"), lambda: _photo(root)),
        (("drawing.eps", "page.ps", "logo.svg", "bomb.png"), lambda: _refusals(root)),
    ]
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = [(names, pool.submit(make)) for names, make in jobs]
        for names, future in futures:
            error = future.exception()
            for name in names:
                if error is None:
                    made.files[name] = root / name
                else:
                    made.missing[name] = f"could not make {name}: {' '.join(str(error).split())}"
    yield made


# ------------------------------------------------------------- sources are real


def test_the_corpus_is_what_it_claims(corpus: Corpus) -> None:
    # Guard against a tool quietly writing something simpler than asked for.
    assert identify(corpus["baseline.jpg"], "%m %[interlace] %wx%h") == "JPEG None 200x100"
    assert identify(corpus["progressive.jpg"], "%m %[interlace]") == "JPEG JPEG"
    assert identify(corpus["cmyk.jpg"], "%m %[colorspace]") == "JPEG CMYK"
    assert identify(corpus["deep16.png"], "%m %z %[colorspace]") == "PNG 16 sRGB"
    assert identify(corpus["palette.png"], "%m %r").startswith("PNG PseudoClass")
    assert identify(corpus["alpha.png"], "%m %A") in ("PNG True", "PNG Blend")
    assert identify(corpus["quad.tiff"], "%m %wx%h") == "TIFF 200x100"
    assert identify(corpus["quad.gif"], "%m %wx%h") == "GIF 200x100"
    assert identify(corpus["pages.tiff"], "%m %wx%h,") == "TIFF 200x100,TIFF 100x100,"
    assert identify(corpus["grey16.png"], "%m %z %[colorspace]") == "PNG 16 Gray"
    with Image.open(corpus["cmyk.jpg"]) as cmyk, Image.open(corpus["mpf.jpg"]) as mpf:
        assert cmyk.mode == "CMYK"
        assert (mpf.format, mpf.n_frames) == ("MPO", 2)
    alpha = [pixel[3] for pixel in centres(pixels(corpus["alpha.png"]))]
    assert alpha[1:] == [255, 255, 0] and abs(alpha[0] - 128) <= 1
    assert_colours(centres(pixels(corpus["quad.png"])), QUADRANTS, 0)


# ------------------------------------------------------------- every format, pixels

_OPERATIONS: dict[str, tuple[str, dict[str, Any], tuple[int, int]]] = {
    "resize_to_png": ("resize_image", {"max_dimension": 100, "format": "png"}, (100, 50)),
    "convert_to_jpeg": ("convert_format", {"format": "jpeg"}, (200, 100)),
    "resize_same_format": ("resize_image", {"max_dimension": 100}, (100, 50)),
}
# What a source format becomes when the step names none (ImageMagick's names).
_KEPT_FORMAT = {
    "heic": ("JPEG",),
    "avif": ("AVIF", "HEIC"),  # ImageMagick 6 calls every HEIF-family file HEIC
    "tiff": ("PNG",),
    "bmp": ("PNG",),
    "webp": ("WEBP",),
    "gif": ("GIF",),
}


@pytest.mark.parametrize("operation", list(_OPERATIONS))
@pytest.mark.parametrize("case", list(FORMATS))
def test_every_format_comes_out_with_the_right_pixels(
    corpus: Corpus, tmp_path: Path, case: str, operation: str
) -> None:
    filename, lossy_source, alpha = FORMATS[case]
    source = corpus[filename]
    action, params, size = _OPERATIONS[operation]

    output = one_output(run_action(action, source, tmp_path, **params))

    if operation == "convert_to_jpeg":
        formats: tuple[str, ...] = ("JPEG",)
    elif operation == "resize_to_png":
        formats = ("PNG",)
    else:
        formats = _KEPT_FORMAT.get(case, ("JPEG",) if "jpeg" in case else ("PNG",))
    assert identify(output, "%m") in formats
    image = pixels(output)
    assert (image.shape[1], image.shape[0]) == size
    flattened = identify(output, "%A") in ("False", "Undefined")
    expected: list[tuple[int | None, ...]] = list(QUADRANTS)
    if alpha and flattened:  # on the default white background
        expected = [(255, 128, 128), LIME, BLUE, WHITE]
    elif alpha:
        expected = [(*RED, 128), LIME, BLUE, (None, None, None, 0)]
    lossy = lossy_source or formats[0] in ("JPEG", "WEBP", "AVIF", "HEIC")
    assert_colours(centres(image), expected, LOSSY if lossy else EXACT)


def test_cmyk_with_a_profile_comes_out_as_an_independent_conversion_gives(
    corpus: Corpus, tmp_path: Path
) -> None:
    source = corpus["cmyk_profiled.jpg"]
    assert identify(source, "%[colorspace]") == "CMYK"
    expected = centres(pixels(corpus["cmyk_profiled_in_srgb.png"]))

    output = one_output(run_action("convert_format", source, tmp_path, format="png"))

    assert_colours(centres(pixels(output)), expected, 6)


# --------------------------------------------------------------------- orientation


@pytest.mark.parametrize(
    ("filename", "orientation"),
    [("o6.jpg", "RightTop"), ("o3.jpg", "BottomRight"), ("o8.jpg", "LeftBottom")],
)
@pytest.mark.parametrize(
    ("action", "params", "size"),
    [
        ("resize_image", {"max_dimension": 100}, (100, 50)),
        ("create_thumbnail", {"size": 100}, (100, 50)),
        ("convert_format", {"format": "png"}, (200, 100)),
    ],
    ids=["resize", "thumbnail", "convert"],
)
def test_exif_orientation_is_applied_and_cleared(
    corpus: Corpus,
    tmp_path: Path,
    filename: str,
    orientation: str,
    action: str,
    params: dict[str, Any],
    size: tuple[int, int],
) -> None:
    source = corpus[filename]
    assert identify(source, "%[orientation]") == orientation
    assert centres(pixels(source)) != centres(pixels(corpus["quad.png"]))  # stored turned

    output = one_output(run_action(action, source, tmp_path, **params))

    image = pixels(output)
    assert (image.shape[1], image.shape[0]) == size
    assert_colours(centres(image), QUADRANTS, LOSSY)
    assert identify(output, "%[orientation]") in ("Undefined", "TopLeft")
    assert exif_of(output).get("Orientation", "1") == "1"


# ----------------------------------------------------------------------------- ICC


@pytest.mark.parametrize(
    ("action", "params", "tolerance"),
    [
        ("convert_format", {"format": "png"}, 4),
        ("resize_image", {"max_dimension": 100}, 12),
        ("convert_format", {"format": "webp", "quality": 95}, 12),
        ("create_thumbnail", {"size": 100, "format": "png"}, 4),
    ],
    ids=["convert_png", "resize_jpeg", "convert_webp", "thumbnail_png"],
)
def test_display_p3_is_converted_to_srgb(
    corpus: Corpus, tmp_path: Path, action: str, params: dict[str, Any], tolerance: int
) -> None:
    source = corpus["p3.jpg"]
    assert "P3" in identify(source, "%[icc:description]")
    naive = centres(pixels(source))  # the stored numbers, profile ignored
    expected = centres(pixels(corpus["p3_in_srgb.png"]))  # ImageMagick + lcms
    assert_colours(expected, QUADRANTS, 3)
    assert abs(naive[0][1] - expected[0][1]) > 40 and abs(naive[1][0] - expected[1][0]) > 80

    output = one_output(run_action(action, source, tmp_path, **params))

    got = centres(pixels(output))
    assert_colours(got, expected, tolerance)
    assert abs(got[1][0] - naive[1][0]) > 80  # lime is not P3's lime read as sRGB
    assert not embeds_profile(output)


@pytest.mark.parametrize("fmt", ["png", "avif", "jpeg", "webp"])
@pytest.mark.parametrize(
    "filename", ["cmyk_bad_profile.jpg", "rgb_bad_profile.png", "srgb_tagged.png"]
)
def test_outputs_are_untagged_srgb_whatever_profile_the_source_had(
    corpus: Corpus, tmp_path: Path, filename: str, fmt: str
) -> None:
    # An unusable profile leaves the numbers as they are; it must not be carried onto
    # pixels it no longer describes (a CMYK profile on RGB pixels).
    source = corpus[filename]
    assert embeds_profile(source)

    output = one_output(run_action("convert_format", source, tmp_path, format=fmt))

    assert not embeds_profile(output)
    assert_colours(centres(pixels(output)), QUADRANTS, LOSSY)


# ------------------------------------------------------------------------ metadata


def _private_bytes_absent(output: Path) -> None:
    data = output.read_bytes()
    assert SERIAL.encode() not in data
    assert MAKER_NOTE[:12] not in data
    assert b"EOS Test" not in data


@pytest.mark.parametrize(
    ("action", "params"),
    [
        ("resize_image", {"max_dimension": 100}),
        ("create_thumbnail", {"size": 100}),
        ("optimize_image", {}),
        ("convert_format", {"format": "png"}),
        ("convert_format", {"format": "webp"}),
        ("convert_format", {"format": "avif"}),
    ],
    ids=["resize", "thumbnail", "optimize", "png", "webp", "avif"],
)
def test_default_outputs_carry_no_private_metadata(
    corpus: Corpus, tmp_path: Path, action: str, params: dict[str, Any]
) -> None:
    source = corpus["meta.jpg"]
    before = exif_of(source)
    assert before["BodySerialNumber"] == SERIAL
    assert before["GPSLatitude"] == "51/1, 30/1, 25/2"
    assert before["MakerNote"].startswith("83, 69, 67")  # "SEC..."
    assert (before["Make"], before["Artist"]) == ("Canon", ARTIST)

    output = one_output(run_action(action, source, tmp_path, **params))

    after = exif_of(output)
    assert not any(tag.startswith("GPS") for tag in after), after
    assert not {"BodySerialNumber", "MakerNote", "Make", "Model", "Artist"} & set(after), after
    _private_bytes_absent(output)


@pytest.mark.parametrize("fmt", ["jpeg", "avif"])
def test_named_metadata_groups_keep_exactly_those(corpus: Corpus, tmp_path: Path, fmt: str) -> None:
    output = one_output(
        run_action(
            "resize_image",
            corpus["meta.jpg"],
            tmp_path,
            max_dimension=100,
            format=fmt,
            metadata=["copyright", "artist"],
        )
    )

    after = exif_of(output)
    assert after.pop("Orientation", "1") == "1"  # the only tag the step may add
    assert after == {"Artist": ARTIST, "Copyright": COPYRIGHT}
    _private_bytes_absent(output)


def test_metadata_keep_keeps_everything_but_the_orientation(corpus: Corpus, tmp_path: Path) -> None:
    source = corpus["meta.jpg"]

    output = one_output(
        run_action("resize_image", source, tmp_path, max_dimension=100, metadata="keep")
    )

    before, after = exif_of(source), exif_of(output)
    for tag in ("GPSLatitude", "GPSLatitudeRef", "GPSLongitude", "GPSLongitudeRef"):
        assert after[tag] == before[tag]
    for tag in ("BodySerialNumber", "MakerNote", "Make", "Model", "Artist", "Copyright"):
        assert after[tag] == before[tag]
    assert after.get("Orientation", "1") == "1"


@pytest.mark.parametrize(
    ("filename", "params"),
    [
        ("comment.jpg", {}),
        ("comment.jpg", {"format": "png"}),
        ("comment.jpg", {"metadata": ["copyright", "artist"]}),
        ("comment.gif", {}),
    ],
    ids=["jpeg", "png", "groups", "gif"],
)
def test_source_comments_do_not_travel(
    corpus: Corpus, tmp_path: Path, filename: str, params: dict[str, Any]
) -> None:
    source = corpus[filename]
    assert identify(source, "%c") == COMMENT

    output = one_output(run_action("resize_image", source, tmp_path, max_dimension=100, **params))

    assert identify(output, "%c") == ""
    assert COMMENT.encode() not in output.read_bytes()


def test_metadata_keep_keeps_the_comment(corpus: Corpus, tmp_path: Path) -> None:
    output = one_output(
        run_action(
            "resize_image", corpus["comment.jpg"], tmp_path, max_dimension=100, metadata="keep"
        )
    )

    assert identify(output, "%c") == COMMENT


# ----------------------------------------------------------------------- animation

_FRAME_COLOURS = (RED, LIME, BLUE)


def _assert_animation(output: Path, fmt: str, size: tuple[int, int], delays_cs: list[int]) -> None:
    assert identify(output, "%m,").split(",")[:-1] == [fmt] * 3
    assert delays(output) == delays_cs
    frames = decoded(output, coalesce=True)
    assert len(frames) == 3
    for frame, colour in zip(frames, _FRAME_COLOURS, strict=True):
        assert (frame.shape[1], frame.shape[0]) == size
        # The right-hand half is the frame's colour; the white square is top-left.
        assert_colours(centres(frame)[1::2], [colour, colour], LOSSY)
    with Image.open(output) as image:
        assert image.info.get("loop") == 0


@pytest.mark.parametrize(("filename", "fmt"), [("anim.gif", "GIF"), ("anim.webp", "WEBP")])
def test_resize_keeps_every_frame_and_its_timing(
    corpus: Corpus, tmp_path: Path, filename: str, fmt: str
) -> None:
    source = corpus[filename]
    assert delays(source) == [10, 20, 30]

    output = one_output(run_action("resize_image", source, tmp_path, max_dimension=50))

    _assert_animation(output, fmt, (50, 25), [10, 20, 30])


def test_convert_gif_to_webp_keeps_the_animation(corpus: Corpus, tmp_path: Path) -> None:
    output = one_output(run_action("convert_format", corpus["anim.gif"], tmp_path, format="webp"))

    _assert_animation(output, "WEBP", (100, 50), [10, 20, 30])


def test_animated_false_writes_the_first_frame(corpus: Corpus, tmp_path: Path) -> None:
    output = one_output(
        run_action("convert_format", corpus["anim.gif"], tmp_path, format="webp", animated=False)
    )

    assert identify(output, "%n,") == "1,"
    assert_colours(centres(pixels(output))[1::2], [RED, RED], LOSSY)


@pytest.mark.parametrize("filename", ["pages.tiff", "mpf.jpg"])
@pytest.mark.parametrize(
    ("action", "params", "fmt"),
    [
        ("convert_format", {"format": "webp", "lossless": True}, "WEBP"),
        ("convert_format", {"format": "gif"}, "GIF"),
        ("resize_image", {"max_dimension": 100, "format": "png"}, "PNG"),
        ("resize_image", {"max_dimension": 100}, None),
    ],
    ids=["webp", "gif", "png", "default"],
)
def test_extra_pictures_are_not_animation_frames(
    corpus: Corpus,
    tmp_path: Path,
    filename: str,
    action: str,
    params: dict[str, Any],
    fmt: str | None,
) -> None:
    # A TIFF's second page or a phone JPEG's preview squashed into a second frame
    # would make a two-frame "animation" of things that were never one.
    source = corpus[filename]

    output = one_output(run_action(action, source, tmp_path, **params))

    assert identify(output, "%m,") == f"{fmt or ('PNG' if filename.endswith('tiff') else 'JPEG')},"
    assert_colours(centres(pixels(output)), QUADRANTS, LOSSY)
    validated = run_action("validate_image", source, tmp_path / "v").data
    assert (validated["animated"], validated["frames"]) == (False, 2)


@pytest.mark.parametrize("filename", ["grey16.png", "grey16.tiff"])
@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_sixteen_bit_grey_keeps_its_tones(
    corpus: Corpus, tmp_path: Path, filename: str, fmt: str
) -> None:
    source = corpus[filename]
    left, right = centres(pixels(source))[:2]  # ImageMagick's own 16 to 8 bits
    assert abs(left[0] - 52) <= 1 and abs(right[0] - 205) <= 1  # 20.3% and 80.3%

    output = one_output(run_action("convert_format", source, tmp_path, format=fmt))

    assert_colours(centres(pixels(output)), [left, right, left, right], 2)


# --------------------------------------------------------------------------- alpha


@pytest.mark.parametrize("lossless", [False, True])
def test_alpha_png_to_webp_keeps_alpha_values(
    corpus: Corpus, tmp_path: Path, lossless: bool
) -> None:
    output = one_output(
        run_action(
            "convert_format", corpus["alpha.png"], tmp_path, format="webp", lossless=lossless
        )
    )

    got = centres(pixels(output))
    assert [pixel[3] for pixel in got][1:] == [255, 255, 0]
    assert abs(got[0][3] - 128) <= 1
    assert_colours(got[:3], [(*RED, None), LIME, BLUE], 0 if lossless else LOSSY)


@pytest.mark.parametrize(
    ("background", "transparent", "half_red"),
    [("#00ff00", (0, 255, 0), (128, 128, 0)), ("white", WHITE, (255, 128, 128))],
)
def test_alpha_png_to_jpeg_is_flattened_on_the_background(
    corpus: Corpus,
    tmp_path: Path,
    background: str,
    transparent: tuple[int, int, int],
    half_red: tuple[int, int, int],
) -> None:
    output = one_output(
        run_action(
            "convert_format",
            corpus["alpha.png"],
            tmp_path,
            format="jpeg",
            background=background,
            quality=95,
        )
    )

    assert identify(output, "%m %A") in ("JPEG False", "JPEG Undefined")
    assert_colours(centres(pixels(output)), [half_red, LIME, BLUE, transparent], 12)


# ----------------------------------------------------------------------- thumbnails


def _share(image: np.ndarray, colour: tuple[int, int, int], tolerance: int = 60) -> float:
    """The share of pixels within ``tolerance`` of ``colour`` on every channel."""
    close = np.all(np.abs(image[..., :3].astype(int) - colour) <= tolerance, axis=-1)
    return float(close.mean())


@pytest.mark.parametrize("strategy", ["attention", "entropy"])
def test_smart_crop_keeps_the_subject_a_centre_crop_loses(
    corpus: Corpus, tmp_path: Path, strategy: str
) -> None:
    source = corpus["smart.png"]

    smart = pixels(
        one_output(
            run_action(
                "create_thumbnail",
                source,
                tmp_path / "smart",
                size=300,
                mode="smart",
                strategy=strategy,
                format="png",
            )
        )
    )
    centre = pixels(
        one_output(run_action("create_thumbnail", source, tmp_path / "fill", size=300, mode="fill"))
    )

    assert smart.shape[:2] == centre.shape[:2] == (300, 300)
    # The checkerboard is 120x120 of 600x600 at half scale: 60x60, a quarter red.
    assert _share(smart, RED) > 0.004 and _share(smart, BLUE) > 0.004
    assert _share(centre, RED) == 0 and _share(centre, BLUE) == 0
    assert _share(centre, (128, 128, 128), 8) > 0.99


def test_thumbnail_sizes_from_a_large_jpeg(corpus: Corpus, tmp_path: Path) -> None:
    source = corpus["large.jpg"]
    assert identify(source, "%wx%h") == "4000x3000"
    started = time.monotonic()

    result = run_action("create_thumbnail", source, tmp_path, sizes=[600, 150, 300])

    elapsed = time.monotonic() - started
    assert [output.staging_path.name for output in result.outputs] == [
        "large_thumb_150.jpg",
        "large_thumb_300.jpg",
        "large_thumb_600.jpg",
    ]
    for output, side in zip(result.outputs, (150, 300, 600), strict=True):
        assert output.role == "thumbnail"
        width, height = (int(value) for value in identify(output.staging_path, "%w %h").split())
        assert width == side and abs(height - side * 3 / 4) <= 1
        image = pixels(output.staging_path)
        # navy left, orange right, the red disc in the middle
        assert_colours(
            [
                tuple(image[height // 2, width // 10]),
                tuple(image[height // 2, 9 * width // 10]),
                tuple(image[height // 2, width // 2]),
            ],
            [(0, 0, 128), (255, 165, 0), RED],
            LOSSY,
        )
    assert result.data["sizes"] == [150, 300, 600]
    assert elapsed < 10  # shrink-on-load: 12 megapixels are never decoded in full


# ---------------------------------------------------------------------- optimising


def _gaussian_ssim(first: np.ndarray, second: np.ndarray) -> float:
    """SSIM as Wang et al. define it (11x11 Gaussian, sigma 1.5) on BT.601 luma: an
    independent check of the action's own 8x8-window measure."""

    def luma(image: np.ndarray) -> np.ndarray:
        rgb = image[..., :3].astype(np.float64)
        return rgb @ np.array([0.299, 0.587, 0.114])

    taps = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    taps /= taps.sum()

    def blur(values: np.ndarray) -> np.ndarray:
        rows = np.lib.stride_tricks.sliding_window_view(values, 11, axis=0) @ taps
        result: np.ndarray = np.lib.stride_tricks.sliding_window_view(rows, 11, axis=1) @ taps
        return result

    a, b = luma(first), luma(second)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mean_a, mean_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mean_a**2, blur(b * b) - mean_b**2
    covariance = blur(a * b) - mean_a * mean_b
    index = ((2 * mean_a * mean_b + c1) * (2 * covariance + c2)) / (
        (mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2)
    )
    return float(index.mean())


def test_optimize_to_a_target_ssim_is_smaller_than_quality_95(
    corpus: Corpus, tmp_path: Path
) -> None:
    source = corpus["photo.jpg"]

    result = run_action("optimize_image", source, tmp_path, target_ssim=0.95)

    output = one_output(result)
    search = result.data["search"]
    assert search["ssim"] >= 0.95 and search["target_met"] is True
    assert 30 < search["quality"] < 85  # the target sits inside the searched range
    assert identify(output, "%m %wx%h") == "JPEG 640x480"
    assert output.stat().st_size < corpus["photo_q95.jpg"].stat().st_size
    assert output.stat().st_size == search["bytes"] == result.data["output_bytes"]
    assert _gaussian_ssim(pixels(source), pixels(output)) >= 0.94


def test_optimize_fits_a_byte_budget(corpus: Corpus, tmp_path: Path) -> None:
    source = corpus["photo.jpg"]
    budget = corpus["photo_q95.jpg"].stat().st_size // 5

    result = run_action("optimize_image", source, tmp_path, max_bytes=budget)

    output = one_output(result)
    assert output.stat().st_size <= budget
    assert result.data["search"]["max_bytes"] == budget
    assert identify(output, "%m %wx%h") == "JPEG 640x480"


def test_an_unreachable_byte_budget_is_refused(corpus: Corpus, tmp_path: Path) -> None:
    message = refused("optimize_image", corpus["photo.jpg"], tmp_path / "out", max_bytes=100)

    assert "cannot fit 100 bytes" in message
    assert not any((tmp_path / "out").glob("*"))


# --------------------------------------------------------------------------- sizes


def test_small_images_are_not_upscaled_unless_asked(corpus: Corpus, tmp_path: Path) -> None:
    source = corpus["small.png"]

    kept = one_output(run_action("resize_image", source, tmp_path / "a", max_dimension=500))
    enlarged = one_output(
        run_action("resize_image", source, tmp_path / "b", max_dimension=500, upscale=True)
    )

    assert identify(kept, "%m %wx%h") == "PNG 100x100"
    assert identify(enlarged, "%m %wx%h") == "PNG 500x500"
    assert_colours(centres(pixels(enlarged)), [(255, 165, 0)] * 4, EXACT)


# ------------------------------------------------------------------------- refusals

_EVERY_ACTION: list[tuple[str, dict[str, Any]]] = [
    ("validate_image", {}),
    ("resize_image", {}),
    ("create_thumbnail", {}),
    ("optimize_image", {}),
    ("convert_format", {"format": "png"}),
]
_ACTION_IDS = [name for name, _ in _EVERY_ACTION]


@pytest.fixture
def no_subprocesses(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record (and stop) any attempt to start a program, Ghostscript in particular."""
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise AssertionError(f"a program was started: {args!r}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", refuse)
    return attempts


@pytest.mark.parametrize("filename", ["drawing.eps", "page.ps", "logo.svg"])
@pytest.mark.parametrize(("action", "params"), _EVERY_ACTION, ids=_ACTION_IDS)
def test_postscript_and_svg_are_refused_without_running_anything(
    corpus: Corpus,
    tmp_path: Path,
    no_subprocesses: list[Any],
    filename: str,
    action: str,
    params: dict[str, Any],
) -> None:
    source = corpus[filename]

    message = refused(action, source, tmp_path / "out", **params)

    # An EPS file is named for what it is (Pillow knows the format; the actions do not
    # admit it); PostScript and SVG are not recognised as images at all.
    expected = ("EPS images are not allowed here" if filename.endswith(".eps")
                else "not a supported image")
    assert expected in message
    assert no_subprocesses == []
    assert not any((tmp_path / "out").glob("*"))


@pytest.mark.parametrize(("action", "params"), _EVERY_ACTION, ids=_ACTION_IDS)
def test_a_header_claiming_400_megapixels_is_refused_fast(
    corpus: Corpus, tmp_path: Path, action: str, params: dict[str, Any]
) -> None:
    source = corpus["bomb.png"]
    assert source.stat().st_size == 68
    started = time.monotonic()

    message = refused(action, source, tmp_path / "out", **params)

    assert time.monotonic() - started < 1.0
    assert "exceeds the limit of 100000000" in message
    assert "400000000" in message or "20000x20000" in message


def test_max_pixels_refuses_a_real_large_jpeg_from_its_header(
    corpus: Corpus, tmp_path: Path
) -> None:
    message = refused(
        "create_thumbnail", corpus["large.jpg"], tmp_path, sizes=[150], max_pixels=1_000_000
    )

    assert message == "large.jpg: 4000x3000 pixels exceeds the limit of 1000000"


@pytest.mark.parametrize(
    "filename",
    [
        "baseline.jpg",
        "progressive.jpg",
        "deep16.png",
        "quad.tiff",
        "quad.bmp",
        "quad.webp",
        "quad.heic",
        "quad.avif",
        "quad.gif",
        "anim.gif",
        "anim.webp",
    ],
)
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_truncated_files_fail_with_one_line(corpus: Corpus, tmp_path: Path, filename: str) -> None:
    whole = corpus[filename].read_bytes()
    source = tmp_path / f"cut_{filename}"
    source.write_bytes(whole[: len(whole) * 2 // 3])

    for action, params in _EVERY_ACTION:
        if action == "create_thumbnail" and filename == "anim.gif":
            # A thumbnail needs the first frame only, and a GIF's is whole.
            output = run_action(action, source, tmp_path / action, **params)
            assert_colours(centres(pixels(one_output(output)))[1::2], [RED, RED], LOSSY)
            continue
        message = refused(action, source, tmp_path / action, **params)
        assert "image" in message
        assert not any((tmp_path / action).glob("*"))
