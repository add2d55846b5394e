"""resize_image's box modes (fit, fill, crop, pad, stretch), gravity (compass and
smart), filters, sharpening and pads, and create_thumbnail of any aspect; judged by
ImageMagick and libvips doing the same operation on the same lossless source."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mediaq.errors import InvalidParameters, PermanentError
from tests.helpers import run_action, skip_without_tool
from tests.test_image_corpus import CONVERT, magick, vips

pytestmark = pytest.mark.skipif(CONVERT is None, reason="ImageMagick is not installed")


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 640x480 lossless picture with detail everywhere (so any misplaced pixel shows)."""
    path = tmp_path_factory.mktemp("resize") / "scene.png"
    magick("-size", "640x480", "-seed", "7", "plasma:fractal", "-blur", "0x1",
           "-depth", "8", path)
    return path


def primary(result: Any) -> Path:
    [output] = [o for o in result.outputs if o.role == "primary"]
    return Path(output.staging_path)


def psnr(first: Path, second: Path) -> float:
    """PSNR (dB) of two same-size images, as ImageMagick's compare measures it."""
    done = subprocess.run(["compare", "-metric", "PSNR", str(first), str(second), "null:"],
                          capture_output=True, text=True, timeout=60)
    value = done.stderr.strip().split()[0]
    return float("inf") if value == "inf" else float(value)


def size_of(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


# Each mode next to the ImageMagick command that does the same thing.
MODES: list[tuple[str, dict[str, Any], list[str], tuple[int, int]]] = [
    ("fit", {"width": 300, "height": 300}, ["-resize", "300x300"], (300, 225)),
    ("fit-width-only", {"width": 160}, ["-resize", "160x"], (160, 120)),
    ("fill-north", {"width": 300, "height": 100, "mode": "fill", "gravity": "north"},
     ["-resize", "300x100^", "-gravity", "north", "-extent", "300x100"], (300, 100)),
    ("fill-portrait", {"width": 200, "height": 300, "mode": "fill"},
     ["-resize", "200x300^", "-gravity", "center", "-extent", "200x300"], (200, 300)),
    ("fill-west-anchor", {"width": 100, "height": 150, "mode": "fill", "anchor": "west"},
     ["-resize", "100x150^", "-gravity", "west", "-extent", "100x150"], (100, 150)),
    ("crop-southeast", {"width": 200, "height": 100, "mode": "crop", "gravity": "southeast"},
     ["-gravity", "southeast", "-crop", "200x100+0+0", "+repage"], (200, 100)),
    ("crop-northwest", {"width": 333, "height": 77, "mode": "crop", "gravity": "northwest"},
     ["-gravity", "northwest", "-crop", "333x77+0+0", "+repage"], (333, 77)),
    ("stretch", {"width": 300, "height": 100, "mode": "stretch"},
     ["-resize", "300x100!"], (300, 100)),
]


@pytest.mark.parametrize(("name", "params", "imagemagick", "size"), MODES,
                         ids=[m[0] for m in MODES])
def test_each_mode_matches_imagemagick(photo: Path, tmp_path: Path, name: str,
                                       params: dict[str, Any], imagemagick: list[str],
                                       size: tuple[int, int]) -> None:
    result = run_action("resize_image", photo, tmp_path / "out", format="png", **params)
    ours = primary(result)
    reference = tmp_path / "reference.png"
    magick(photo, *imagemagick, reference)

    assert size_of(ours) == size_of(reference) == size
    # Same pixels up to the two resamplers' rounding (a shifted crop scores below 25 dB).
    assert psnr(ours, reference) > 40, name
    assert result.data["box"] == [size[0], size[1]] or name.startswith("fit")


def test_pad_letterboxes_on_the_background_as_libvips_does(photo: Path, tmp_path: Path) -> None:
    skip_without_tool("vips")
    result = run_action("resize_image", photo, tmp_path / "out", format="png",
                        width=300, height=300, mode="pad", background="#ff0000")
    ours = primary(result)
    fitted, reference = tmp_path / "fitted.png", tmp_path / "padded.png"
    vips("thumbnail", photo, fitted, "300", "--height", "300")
    vips("gravity", fitted, reference, "centre", "300", "300",
         "--extend", "background", "--background", "255 0 0")

    assert size_of(ours) == (300, 300)
    assert psnr(ours, reference) > 40
    with Image.open(ours) as image:
        rgb = image.convert("RGB")
        assert rgb.getpixel((150, 5)) == (255, 0, 0)  # the bar above the picture
        assert rgb.getpixel((150, 294)) == (255, 0, 0)  # and below it
        assert rgb.getpixel((150, 150)) != (255, 0, 0)


def test_pad_at_a_gravity_puts_the_bars_on_the_other_side(photo: Path, tmp_path: Path) -> None:
    result = run_action("resize_image", photo, tmp_path / "out", format="png",
                        width=200, height=300, mode="pad", gravity="south",
                        background="#0000ff")
    ours = primary(result)
    reference = tmp_path / "reference.png"
    magick(photo, "-resize", "200x300", "-background", "#0000ff", "-gravity", "south",
           "-extent", "200x300", reference)

    assert psnr(ours, reference) > 40
    with Image.open(ours) as image:
        assert image.convert("RGB").getpixel((100, 10)) == (0, 0, 255)


def test_smart_gravity_keeps_the_subject(tmp_path: Path) -> None:
    """A detailed, colourful subject on the right of a flat frame: the smart crop keeps
    it where a centre crop would cut it away, as libvips' attention crop does."""
    source = tmp_path / "subject.png"
    magick("-size", "900x300", "xc:#708090",
           "(", "-size", "200x200", "-seed", "3", "plasma:red-yellow", ")",
           "-geometry", "+660+50", "-composite", source)
    result = run_action("resize_image", source, tmp_path / "out", format="png",
                        width=200, height=200, mode="fill", gravity="smart")
    left, top, right, bottom = result.data["crop"]
    assert left <= 660 and right >= 860 and (right - left, bottom - top) == (300, 300)

    skip_without_tool("vips")
    reference = tmp_path / "attention.png"
    vips("thumbnail", source, reference, "200", "--height", "200", "--crop", "attention")
    # Both crops hold the whole subject, at about the same place in the frame.
    ours, theirs = subject_span(primary(result)), subject_span(reference)
    assert ours[1] - ours[0] >= 125 and theirs[1] - theirs[0] >= 125
    assert abs(ours[0] - theirs[0]) <= 40


def subject_span(path: Path) -> tuple[int, int]:
    """First and last column holding the subject (anything but the slate background)."""
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    busy = np.abs(rgb - np.array([0x70, 0x80, 0x90])).sum(axis=2) > 40
    columns = np.flatnonzero(busy.mean(axis=0) > 0.3)
    return int(columns[0]), int(columns[-1])


def test_smart_gravity_in_crop_mode_cuts_at_source_scale(tmp_path: Path) -> None:
    source = tmp_path / "subject.png"
    magick("-size", "800x600", "xc:#203040",
           "(", "-size", "120x120", "-seed", "5", "plasma:blue-orange", ")",
           "-geometry", "+40+440", "-composite", "-depth", "8", source)
    result = run_action("resize_image", source, tmp_path / "out", format="png",
                        width=240, height=240, mode="crop", gravity="smart")
    left, top, right, bottom = result.data["crop"]
    assert (right - left, bottom - top) == (240, 240)
    assert left <= 40 and top <= 440 and right >= 160 and bottom >= 560
    reference = tmp_path / "reference.png"
    magick(source, "-crop", f"240x240+{left}+{top}", "+repage", reference)
    assert psnr(primary(result), reference) == float("inf")


def test_fill_never_enlarges_unless_asked(photo: Path, tmp_path: Path) -> None:
    kept = run_action("resize_image", photo, tmp_path / "a", format="png",
                      width=1000, height=500, mode="fill")
    enlarged = run_action("resize_image", photo, tmp_path / "b", format="png",
                          width=1000, height=500, mode="fill", upscale=True)
    assert size_of(primary(kept)) == (640, 320)  # the 2:1 crop, at source scale
    assert size_of(primary(enlarged)) == (1000, 500)


@pytest.mark.parametrize("name", ["nearest", "box", "bilinear", "bicubic", "lanczos"])
def test_filters_match_imagemagick_filters(photo: Path, tmp_path: Path, name: str) -> None:
    result = run_action("resize_image", photo, tmp_path / "out", format="png",
                        width=160, height=120, mode="stretch", filter=name)
    reference = tmp_path / "reference.png"
    im_filter = {"nearest": "Point", "box": "Box", "bilinear": "Triangle",
                 "bicubic": "Catrom", "lanczos": "Lanczos"}[name]
    magick(photo, "-filter", im_filter, "-resize", "160x120!", reference)
    assert psnr(primary(result), reference) > 30


def test_sharpen_after_a_downscale_adds_edge_contrast(photo: Path, tmp_path: Path) -> None:
    soft = primary(run_action("resize_image", photo, tmp_path / "a", format="png", width=200))
    sharp = primary(run_action("resize_image", photo, tmp_path / "b", format="png", width=200,
                               sharpen=1.5))

    def edge_energy(path: Path) -> float:
        with Image.open(path) as image:
            luma = np.asarray(image.convert("L"), dtype=np.float64)
        return float(np.var(np.diff(luma, axis=0)) + np.var(np.diff(luma, axis=1)))

    assert edge_energy(sharp) > 1.15 * edge_energy(soft)
    assert 25 < psnr(soft, sharp) < 60  # the same picture, crisper


def test_anchor_and_gravity_that_disagree_are_refused(photo: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidParameters, match="anchor and gravity disagree"):
        run_action("resize_image", photo, tmp_path, width=100, height=100, mode="fill",
                   gravity="north", anchor="south")


def test_an_animation_is_cut_at_one_place_in_every_frame(tmp_path: Path) -> None:
    source = tmp_path / "moving.gif"
    magick("-delay", "10", "-size", "120x60", "xc:red", "xc:blue", "xc:lime", source)
    result = run_action("resize_image", source, tmp_path / "out", width=30, height=30,
                        mode="fill", gravity="east")
    with Image.open(primary(result)) as image:
        assert (image.n_frames, image.size) == (3, (30, 30))


# ------------------------------------------------------- thumbnails of any aspect


def test_thumbnail_of_a_wide_box_fills_it(photo: Path, tmp_path: Path) -> None:
    result = run_action("create_thumbnail", photo, tmp_path / "out", format="png",
                        width=320, height=90, mode="fill", gravity="south")
    [output] = result.outputs
    assert output.staging_path.name == "scene_thumb_320x90.png"
    reference = tmp_path / "reference.png"
    magick(photo, "-resize", "320x90^", "-gravity", "south", "-extent", "320x90", reference)
    assert psnr(output.staging_path, reference) > 40


def test_thumbnail_of_a_tall_box_fits_inside_it(photo: Path, tmp_path: Path) -> None:
    result = run_action("create_thumbnail", photo, tmp_path / "out", width=90, height=200)
    [output] = result.outputs
    assert size_of(output.staging_path) == (90, 68)
    assert result.data["box"] == [90, 200]


def test_a_transparent_pad_keeps_alpha_and_a_jpeg_pad_is_flattened(photo: Path,
                                                                   tmp_path: Path) -> None:
    clear = run_action("resize_image", photo, tmp_path / "a", format="png", width=300,
                       height=300, mode="pad", background="transparent")
    with Image.open(primary(clear)) as image:
        assert image.mode == "RGBA" and image.size == (300, 300)
        assert image.getpixel((150, 2))[3] == 0 and image.getpixel((150, 150))[3] == 255
    flat = run_action("resize_image", photo, tmp_path / "b", format="jpeg", width=300,
                      height=300, mode="pad", background="transparent")
    with Image.open(primary(flat)) as image:
        assert image.mode == "RGB"
        assert min(image.getpixel((150, 2))) > 245  # white where the bar was


def test_a_large_jpeg_shrunk_on_load_is_cut_in_the_same_place(tmp_path: Path) -> None:
    """Shrink-on-load decodes the JPEG at a fraction of its size; the crop is still
    placed in source terms (compared with ImageMagick on the full-size decode)."""
    source = tmp_path / "big.jpg"
    magick("-size", "1600x1200", "-seed", "11", "plasma:fractal", "-blur", "0x2",
           "-quality", "95", source)
    result = run_action("resize_image", source, tmp_path / "out", format="png",
                        width=200, height=300, mode="fill", gravity="east")
    reference = tmp_path / "reference.png"
    magick(source, "-resize", "200x300^", "-gravity", "east", "-extent", "200x300", reference)
    left, top, right, bottom = result.data["crop"]
    assert abs(left - 800) <= 2 and (top, right, bottom) == (0, 1600, 1200)
    assert psnr(primary(result), reference) > 35


def test_an_enlargement_past_max_pixels_is_refused_before_anything_is_made(
        photo: Path, tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match=r"scene.png: a 60000x60000 output exceeds"):
        run_action("resize_image", photo, tmp_path / "out", width=60000, height=60000,
                   mode="stretch")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
