"""One lossy encode per delivered output: the seeded WF-IMAGE-PROCESS's WebP is as
good as, and no bigger than, one direct WebP encode of the source; a resize that
changes nothing copies the picture; optimize_image never re-encodes an already
optimal file. Judged with our own numpy SSIM (8x8 windows on luma), Pillow's direct
encodes and exiftool."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageFilter

from tests.helpers import MediaqEnv, requires_tool, run_action


def photograph(path: Path, size: tuple[int, int] = (1600, 1200), quality: int = 95,
               exif: Image.Exif | None = None) -> Path:
    """A photograph-like JPEG: smooth shapes and gradients with sensor-like noise
    (Gaussian, sigma 6), the kind each extra lossy generation visibly damages."""
    rng = np.random.default_rng(27)
    width, height = size
    y, x = np.mgrid[0:height, 0:width] / 100.0
    scene = np.stack([
        120 + 60 * np.sin(x * 0.7) * np.cos(y * 0.5) + 30 * (x / 16),
        110 + 50 * np.cos(x * 0.4 + y * 0.3),
        100 + 70 * np.sin(y * 0.8) - 20 * (y / 12),
    ], axis=2)
    smooth = Image.fromarray(np.clip(scene, 0, 255).astype(np.uint8))
    noisy = np.asarray(smooth.filter(ImageFilter.GaussianBlur(2)), dtype=np.float64)
    noisy += rng.normal(0, 6, noisy.shape)
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(
        path, quality=quality, exif=exif or Image.Exif())
    return path


def camera_exif() -> Image.Exif:
    """A camera's EXIF with a position in it."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make], exif[ExifTags.Base.Model] = "Fujifilm", "X-T5"
    exif[ExifTags.IFD.GPSInfo] = {1: "N", 2: (48.0, 51.0, 30.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    return exif


def luma(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L"), dtype=np.float64)


def mean_ssim(first: np.ndarray, second: np.ndarray, side: int = 8) -> float:
    """Mean SSIM over every 8x8 window of two luma planes (Wang et al.'s constants)."""

    def window_mean(values: np.ndarray) -> np.ndarray:
        total = np.pad(values.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        return (total[side:, side:] - total[:-side, side:] - total[side:, :-side]
                + total[:-side, :-side]) / (side * side)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mean_a, mean_b = window_mean(first), window_mean(second)
    var_a = window_mean(first * first) - mean_a**2
    var_b = window_mean(second * second) - mean_b**2
    covariance = window_mean(first * second) - mean_a * mean_b
    ssim = ((2 * mean_a * mean_b + c1) * (2 * covariance + c2)
            / ((mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2)))
    return float(ssim.mean())


def exiftool(path: Path) -> dict[str, Any]:
    done = subprocess.run(["exiftool", "-j", "-n", str(path)], capture_output=True,
                          text=True, timeout=60, check=True)
    found: dict[str, Any] = json.loads(done.stdout)[0]
    return found


def scan_of(path: Path) -> bytes:
    """A JPEG's entropy-coded picture: everything from the first SOS marker on."""
    data = path.read_bytes()
    return data[data.index(b"\xff\xda"):]


@pytest.mark.slow
def test_the_seeded_workflow_webp_is_as_good_as_one_direct_encode(mq: MediaqEnv) -> None:
    mq.seed()
    source = photograph(mq.inputs / "street.jpg", exif=camera_exif())
    code = mq.submit("WF-IMAGE-PROCESS", source)
    mq.run_burst(timeout=180)
    job = mq.job(code)
    assert job["status"] == "completed", job["error_message"]
    rows = mq.query(
        """SELECT ws.step_number, se.output_data FROM step_executions se
             JOIN workflow_steps ws ON ws.id = se.step_id
             JOIN workflow_jobs j ON j.id = se.job_id
            WHERE j.job_code = %s AND se.status = 'completed'""", (code,))
    steps = {row["step_number"]: row["output_data"] for row in rows}
    webp = Path(steps[5]["primary"])
    direct = mq.root / "direct.webp"
    with Image.open(source) as image:
        image.save(direct, "WEBP", quality=85)  # the same quality the seeded step uses

    reference = luma(source)
    workflow_ssim = mean_ssim(reference, luma(webp))
    direct_ssim = mean_ssim(reference, luma(direct))
    workflow_bytes, direct_bytes = webp.stat().st_size, direct.stat().st_size
    print(f"workflow WebP: SSIM {workflow_ssim:.4f}, {workflow_bytes} bytes; "
          f"direct WebP q85: SSIM {direct_ssim:.4f}, {direct_bytes} bytes")
    assert workflow_ssim >= direct_ssim - 0.002
    assert workflow_bytes <= direct_bytes
    # Validation recorded what the camera said, and not where it stood.
    assert steps[1]["metadata"]["camera_model"] == "X-T5"
    assert "gps" not in steps[1]["metadata"]
    # The steps on the way: nothing to resize, so no encode; one optimised JPEG.
    assert steps[2]["reencoded"] is False
    assert scan_of(Path(steps[2]["primary"])) == scan_of(source)
    assert steps[4]["reencoded"] is True and steps[4]["output_bytes"] < source.stat().st_size


def test_a_real_resize_leaves_lossless_pixels_that_later_steps_encode_from(
    tmp_path: Path,
) -> None:
    """resize (JPEG) -> convert (WebP) as the engine chains them: the WebP is the direct
    encode of the resized pixels, byte for byte, not an encode of the resized JPEG."""
    source = photograph(tmp_path / "big.jpg", size=(960, 720))
    resized = run_action("resize_image", source, tmp_path / "resize", max_dimension=480)
    output, intermediate = resized.outputs
    assert (output.role, intermediate.role) == ("primary", "intermediate")
    assert intermediate.staging_path.suffix == ".png"
    recorded = [{"path": str(o.staging_path), "role": o.role, **o.meta} for o in resized.outputs]

    from mediaq.actions import get_action
    from tests.helpers import action_context

    ctx = action_context("convert_format", source, tmp_path / "convert", {"format": "webp"},
                         previous_outputs=recorded)
    ctx.source_path = output.staging_path
    converted = get_action("convert_format").fn(ctx)
    [webp] = converted.outputs
    direct = tmp_path / "direct.webp"
    with Image.open(intermediate.staging_path) as pixels:
        assert pixels.size == (480, 360)
        pixels.save(direct, "WEBP", quality=85)
    assert webp.staging_path.read_bytes() == direct.read_bytes()


@requires_tool("exiftool")
def test_a_resize_that_changes_nothing_copies_the_picture_and_strips_gps(
    tmp_path: Path,
) -> None:
    source = photograph(tmp_path / "small.jpg", size=(320, 240))
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-Make=Canon",
                    "-GPSLatitude=48.8584", "-GPSLatitudeRef=N", "-GPSLongitude=2.2945",
                    "-GPSLongitudeRef=E", "-Artist=Ada", "-Comment=secret", str(source)],
                   check=True, timeout=60)
    result = run_action("resize_image", source, tmp_path / "out", max_dimension=2000)
    [output] = result.outputs
    assert result.data["reencoded"] is False
    assert scan_of(output.staging_path) == scan_of(source)
    tags = exiftool(output.staging_path)
    assert not {"GPSLatitude", "Make", "Artist", "Comment"} & set(tags)

    kept = run_action("resize_image", source, tmp_path / "kept", max_dimension=2000,
                      metadata=["camera"])
    tags = exiftool(kept.outputs[0].staging_path)
    assert tags["Make"] == "Canon" and "GPSLatitude" not in tags
    assert scan_of(kept.outputs[0].staging_path) == scan_of(source)


def test_asking_for_an_encode_still_encodes(tmp_path: Path) -> None:
    source = photograph(tmp_path / "small.jpg", size=(320, 240))
    result = run_action("resize_image", source, tmp_path / "out", unchanged="encode")
    assert result.data["reencoded"] is True
    assert scan_of(result.outputs[0].staging_path) != scan_of(source)


def test_optimize_never_reencodes_an_already_optimal_file(tmp_path: Path) -> None:
    source = photograph(tmp_path / "lean.jpg", size=(640, 480), quality=60)
    result = run_action("optimize_image", source, tmp_path / "out", quality=85)
    [output] = result.outputs
    assert result.data["reencoded"] is False
    assert result.data["output_bytes"] <= source.stat().st_size
    assert scan_of(output.staging_path) == scan_of(source)
    assert output.staging_path.name == "lean_optimized.jpg"
    assert not list((tmp_path / "out").glob("*.source.*"))

    heavy = photograph(tmp_path / "heavy.jpg", size=(640, 480), quality=98)
    smaller = run_action("optimize_image", heavy, tmp_path / "heavy", quality=85)
    assert smaller.data["reencoded"] is True
    assert smaller.data["output_bytes"] < heavy.stat().st_size


def test_move_to_library_leaves_intermediates_behind_unless_named(tmp_path: Path) -> None:
    from mediaq.actions import get_action
    from tests.helpers import action_context

    source = photograph(tmp_path / "big.jpg", size=(960, 720))
    resized = run_action("resize_image", source, tmp_path / "resize", max_dimension=480)
    recorded = [{"path": str(o.staging_path), "role": o.role, "step": 2, **o.meta}
                for o in resized.outputs]
    library = tmp_path / "library"
    library.mkdir()
    ctx = action_context("move_to_library", source, tmp_path / "stage",
                         {"mode": "copy", "template": "{name}.{ext}"},
                         previous_outputs=recorded, library_roots=(library,))
    filed = get_action("move_to_library").fn(ctx)
    assert sorted(p.name for p in library.iterdir()) == ["big_480.jpg"]
    assert len(filed.data["files"]) == 1


def test_optimize_never_makes_a_png_bigger(tmp_path: Path) -> None:
    """A PNG squeezed harder than Pillow squeezes it is delivered as it is."""
    source = tmp_path / "tight.png"
    gradient = np.tile(np.arange(256, dtype=np.uint8), (64, 1))
    Image.fromarray(np.stack([gradient] * 3, axis=2)).save(source, optimize=True)
    result = run_action("optimize_image", source, tmp_path / "out")
    assert result.data["output_bytes"] <= source.stat().st_size
    assert result.data["reencoded"] is False
