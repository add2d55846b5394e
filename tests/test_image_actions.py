"""The image actions, called as the engine calls them, on real files."""

from __future__ import annotations

import errno
import hashlib
import struct
import tempfile
import threading
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image, ImageFile

from mediaq.actions import ActionResult, get_action
from mediaq.errors import Cancelled, InputRefused, InvalidParameters, PermanentError, TransientError
from mediaq.samples import corrupt_samples, generate_samples
from tests.helpers import action_context as make_context
from tests.helpers import run_action

IMAGE_ACTIONS = [
    ("validate_image", {}),
    ("resize_image", {}),
    ("create_thumbnail", {}),
    ("optimize_image", {}),
    ("convert_format", {"format": "webp"}),
]
WRITING_ACTIONS = IMAGE_ACTIONS[1:]


def only_output(result: ActionResult) -> Image.Image:
    """The single delivered output (not the lossless pixels for later steps), opened
    (and fully decoded) with Pillow."""
    [output] = [o for o in result.outputs if o.role != "intermediate"]
    image = Image.open(output.staging_path)
    image.load()
    return image


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` but holds almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 32))  # 68 bytes in all
        + chunk(b"IEND", b"")
    )
    return path


def is_white(pixel: Any) -> bool:
    return all(channel >= 245 for channel in pixel[:3])


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_samples(tmp_path_factory.mktemp("samples"))


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return corrupt_samples(tmp_path_factory.mktemp("bad"))


# ------------------------------------------------------------------ validate_image


def test_validate_describes_a_rotated_jpeg_without_writing_anything(
    samples: dict[str, Path], tmp_path: Path
) -> None:
    photo = samples["photo_landscape.jpg"]
    result = run_action("validate_image", photo, tmp_path / "out")

    assert result.outputs == []
    assert result.data == {
        "format": "JPEG",
        "width": 2400,
        "height": 1600,
        "mode": "RGB",
        "orientation": 6,
        "size_bytes": photo.stat().st_size,
        "animated": False,
        "frames": 1,
        "icc_profile": None,
        "metadata": {"bit_depth": 8, "dpi": [72.0, 72.0], "orientation": 6, "sources": ["exif"]},
    }


def test_validate_counts_frames_of_an_animated_gif(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (40, 30), color) for color in ("red", "green", "blue")]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)

    data = run_action("validate_image", gif, tmp_path / "out").data

    assert (data["format"], data["animated"], data["frames"]) == ("GIF", True, 3)
    assert data["orientation"] is None


def test_validate_refuses_formats_not_allowed(samples: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match=r"^photo_small\.png: PNG images are not allowed"):
        run_action("validate_image", samples["photo_small.png"], tmp_path, allowed_formats=["JPEG"])


def test_postscript_is_never_handed_to_ghostscript(tmp_path: Path) -> None:
    eps = tmp_path / "drawing.eps"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")

    with pytest.raises(PermanentError, match="EPS images are not allowed here"):
        run_action("validate_image", eps, tmp_path / "out")


def test_pillow_keeps_refusing_truncated_images() -> None:
    get_action("validate_image")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# ---------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("filename", "reason"),
    [
        ("truncated.jpg", "truncated image"),
        ("corrupt.png", "corrupt image"),
        ("empty.jpg", "file is empty"),
        ("not_an_image.jpg", "not a supported image"),
    ],
)
@pytest.mark.parametrize(("name", "params"), IMAGE_ACTIONS, ids=[a for a, _ in IMAGE_ACTIONS])
def test_bad_inputs_fail_permanently_with_one_line_naming_the_file(
    bad: dict[str, Path],
    tmp_path: Path,
    name: str,
    params: dict[str, Any],
    filename: str,
    reason: str,
) -> None:
    source = bad[filename]
    before = sha256(source)

    with pytest.raises(PermanentError) as caught:
        run_action(name, source, tmp_path / "out", **params)

    message = caught.value.message
    assert message.startswith(f"{filename}: {reason}")
    assert "\n" not in message
    assert sha256(source) == before
    assert not any((tmp_path / "out").glob("*"))


@pytest.mark.parametrize(("name", "params"), IMAGE_ACTIONS, ids=[a for a, _ in IMAGE_ACTIONS])
def test_missing_input_is_refused(tmp_path: Path, name: str, params: dict[str, Any]) -> None:
    with pytest.raises(InputRefused, match=r"^gone\.jpg: .*does not exist"):
        run_action(name, tmp_path / "gone.jpg", tmp_path / "out", **params)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_oversized_image_is_refused_from_its_header(tmp_path: Path) -> None:
    # The pixel data is a few bytes: decoding would fail as truncated, so this
    # message proves the refusal came before any decoding.
    bomb = png_header_only(tmp_path / "big.png", 12_000, 12_000)

    with pytest.raises(PermanentError) as caught:
        run_action("validate_image", bomb, tmp_path / "out")

    assert caught.value.message == "big.png: 12000x12000 pixels exceeds the limit of 100000000"


@pytest.mark.parametrize(("name", "params"), IMAGE_ACTIONS, ids=[a for a, _ in IMAGE_ACTIONS])
def test_decompression_bomb_is_refused_by_every_action(
    tmp_path: Path, name: str, params: dict[str, Any]
) -> None:
    bomb = png_header_only(tmp_path / "huge.png", 50_000, 50_000)

    with pytest.raises(PermanentError, match=r"^huge\.png: 2500000000 pixels exceeds the limit"):
        run_action(name, bomb, tmp_path / "out", **params)


def test_max_pixels_is_configurable(samples: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match=r"640x480 pixels exceeds the limit of 1000$"):
        run_action("validate_image", samples["photo_small.png"], tmp_path, max_pixels=1000)


# ------------------------------------------------------------------ every writer


@pytest.mark.parametrize("sample", ["photo_landscape.jpg", "photo_small.png", "graphic.webp"])
@pytest.mark.parametrize(("name", "params"), WRITING_ACTIONS, ids=[a for a, _ in WRITING_ACTIONS])
def test_outputs_describe_themselves_and_inputs_stay_untouched(
    samples: dict[str, Path], tmp_path: Path, name: str, params: dict[str, Any], sample: str
) -> None:
    source = samples[sample]
    before = sha256(source)
    progress: list[float] = []
    ctx = make_context(
        name, source, tmp_path / "out", params, on_progress=lambda f, _: progress.append(f)
    )

    result = get_action(name).fn(ctx)

    [output] = [o for o in result.outputs if o.role != "intermediate"]
    assert output.staging_path.parent == tmp_path / "out"
    with Image.open(output.staging_path) as written:
        assert {k: v for k, v in output.meta.items() if k != "pixels_from"} == {
            "format": written.format,
            "width": written.width,
            "height": written.height,
            "mode": written.mode,
        }
    assert result.data["output"]["width"] == output.meta["width"]
    assert result.data["source"]["format"] in ("JPEG", "PNG", "WEBP")
    assert sha256(source) == before
    assert progress == sorted(progress) and progress[-1] == 1.0


@pytest.mark.parametrize(("name", "params"), WRITING_ACTIONS, ids=[a for a, _ in WRITING_ACTIONS])
def test_a_cancelled_step_stops(
    samples: dict[str, Path], tmp_path: Path, name: str, params: dict[str, Any]
) -> None:
    cancel = threading.Event()
    cancel.set()
    ctx = make_context(name, samples["photo_small.png"], tmp_path, params, cancel_event=cancel)

    with pytest.raises(Cancelled):
        get_action(name).fn(ctx)


def test_a_failing_disk_is_transient_and_leaves_no_partial_file(
    samples: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(self: Image.Image, fp: Any, *args: Any, **kwargs: Any) -> None:
        Path(fp).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", disk_full)

    with pytest.raises(TransientError, match="No space left on device"):
        run_action("resize_image", samples["photo_small.png"], tmp_path / "out")
    assert not any((tmp_path / "out").glob("*"))


# -------------------------------------------------------------------- resize_image


def test_resize_applies_exif_orientation(samples: dict[str, Path], tmp_path: Path) -> None:
    result = run_action("resize_image", samples["photo_landscape.jpg"], tmp_path)

    output, intermediate = result.outputs
    assert intermediate.role == "intermediate"
    assert output.staging_path.name == "photo_landscape_2000.jpg"
    assert output.role == "primary"
    image = only_output(result)
    assert (image.format, image.size) == ("JPEG", (1333, 2000))
    assert image.getexif().get(ExifTags.Base.Orientation) in (None, 1)
    # The orange disc drawn top-left in the stored picture ends up top-right.
    red, green, blue = image.getpixel((999, 333))  # type: ignore[misc]
    assert red > 200 and 100 < green < 220 and blue < 80


def test_resize_never_upscales_unless_asked(samples: dict[str, Path], tmp_path: Path) -> None:
    small = samples["photo_small.png"]

    kept = only_output(run_action("resize_image", small, tmp_path / "a"))
    enlarged = only_output(run_action("resize_image", small, tmp_path / "b", upscale=True))

    assert (kept.format, kept.size, kept.mode) == ("PNG", (640, 480), "RGBA")
    assert enlarged.size == (2000, 1500)


def test_resize_writes_the_requested_format(samples: dict[str, Path], tmp_path: Path) -> None:
    result = run_action(
        "resize_image", samples["graphic.webp"], tmp_path, max_dimension=600, format="jpeg"
    )

    assert result.outputs[0].staging_path.name == "graphic_600.jpg"
    assert result.outputs[1].staging_path.name == "graphic_600.pixels.png"
    assert only_output(result).size == (600, 400)


def test_resize_turns_cmyk_into_rgb_jpeg(tmp_path: Path) -> None:
    cmyk = tmp_path / "print.jpg"
    Image.new("CMYK", (400, 200), (0, 255, 255, 0)).save(cmyk, "JPEG")

    image = only_output(run_action("resize_image", cmyk, tmp_path / "out", max_dimension=100))

    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (100, 50))


@settings(max_examples=30, deadline=None)
@given(
    width=st.integers(min_value=1, max_value=64),
    height=st.integers(min_value=1, max_value=64),
    max_dimension=st.integers(min_value=1, max_value=96),
)
def test_resize_keeps_aspect_ratio_without_upscaling(
    width: int, height: int, max_dimension: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "random.png"
        Image.new("RGB", (width, height), "teal").save(source)
        result = run_action("resize_image", source, Path(tmp) / "out", max_dimension=max_dimension)
        out_width, out_height = only_output(result).size

    longest, shortest = max(width, height), min(width, height)
    out_longest, out_shortest = max(out_width, out_height), min(out_width, out_height)
    assert (out_width if width >= height else out_height) == out_longest
    assert out_longest == min(max_dimension, longest)
    assert abs(out_shortest - shortest * out_longest / longest) <= 1


# ---------------------------------------------------------------- create_thumbnail


def test_thumbnail_fits_the_box_upright(samples: dict[str, Path], tmp_path: Path) -> None:
    result = run_action("create_thumbnail", samples["photo_landscape.jpg"], tmp_path)

    [output] = result.outputs
    assert (output.staging_path.name, output.role) == ("photo_landscape_thumb_300.jpg", "thumbnail")
    assert get_action("create_thumbnail").produces_primary is False
    image = only_output(result)
    assert (image.format, image.size) == ("JPEG", (200, 300))


def test_thumbnail_flattens_transparency_on_white(samples: dict[str, Path], tmp_path: Path) -> None:
    image = only_output(
        run_action("create_thumbnail", samples["photo_small.png"], tmp_path, size=64)
    )

    assert (image.mode, image.size) == ("RGB", (64, 48))
    assert is_white(image.getpixel((0, 0)))


# ------------------------------------------------------------------ optimize_image


def test_optimize_reencodes_in_the_same_format(samples: dict[str, Path], tmp_path: Path) -> None:
    photo = samples["photo_landscape.jpg"]
    result = run_action("optimize_image", photo, tmp_path, quality=70)

    image = only_output(result)
    assert result.outputs[0].staging_path.name == "photo_landscape_optimized.jpg"
    assert (image.format, image.size) == ("JPEG", (1600, 2400))
    assert image.info.get("progressive")
    data = result.data
    assert data["original_bytes"] == photo.stat().st_size
    assert data["output_bytes"] == result.outputs[0].staging_path.stat().st_size
    assert data["saving_ratio"] == pytest.approx(
        1 - data["output_bytes"] / data["original_bytes"], abs=1e-4
    )


# ------------------------------------------------------------------ convert_format


def test_convert_to_webp_keeps_alpha(samples: dict[str, Path], tmp_path: Path) -> None:
    result = run_action("convert_format", samples["photo_small.png"], tmp_path, format="webp")

    assert result.outputs[0].staging_path.name == "photo_small.webp"
    image = only_output(result)
    assert (image.format, image.mode, image.size) == ("WEBP", "RGBA", (640, 480))
    alpha = image.getchannel("A")
    assert alpha.getpixel((0, 0)) == 0 and alpha.getpixel((320, 240)) == 255


@pytest.mark.parametrize("spelling", ["jpeg", "jpg"])
def test_convert_to_jpeg_flattens_alpha_on_white(
    samples: dict[str, Path], tmp_path: Path, spelling: str
) -> None:
    result = run_action("convert_format", samples["photo_small.png"], tmp_path, format=spelling)

    assert result.outputs[0].staging_path.name == "photo_small.jpg"
    image = only_output(result)
    assert (image.format, image.mode) == ("JPEG", "RGB")
    assert is_white(image.getpixel((0, 0)))


def test_lossless_webp_keeps_every_pixel(tmp_path: Path) -> None:
    source = tmp_path / "flat.png"
    original = Image.linear_gradient("L").convert("RGB")
    original.save(source)

    image = only_output(
        run_action("convert_format", source, tmp_path / "out", format="webp", lossless=True)
    )

    assert image.convert("RGB").tobytes() == original.tobytes()


# ---------------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("resize_image", {"max_dimension": 0}),
        ("resize_image", {"quality": 101}),
        ("resize_image", {"format": "tiff"}),
        ("resize_image", {"metadata": ["gps", "passport"]}),
        ("resize_image", {"metadata": "all"}),
        ("create_thumbnail", {"mode": "stretch"}),
        ("create_thumbnail", {"sizes": []}),
        ("optimize_image", {"target_ssim": 2}),
        ("resize_image", {"mode": "squash"}),
        ("create_thumbnail", {"size": "big"}),
        ("optimize_image", {"quality": 0}),
        ("convert_format", {}),
        ("convert_format", {"format": "eps"}),
        ("validate_image", {"allowed_formats": ["EPS"]}),
        ("validate_image", {"allowed_formats": []}),
        ("validate_image", {"max_pixels": -1}),
    ],
)
def test_invalid_parameters_are_refused(name: str, params: dict[str, Any]) -> None:
    with pytest.raises(InvalidParameters, match=f"action '{name}'"):
        get_action(name).validate(params)


def test_defaults_are_documented_in_the_schema() -> None:
    defaults = get_action("resize_image").validate({})
    assert defaults["max_dimension"] == 2000
    assert (defaults["quality"], defaults["upscale"], defaults["metadata"]) == (90, False, "strip")
    assert get_action("validate_image").validate({})["max_pixels"] == 100_000_000
