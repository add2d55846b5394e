"""``gravity: faces`` for resize_image and create_thumbnail, on real photographs from
scikit-image's data: the astronaut's face stays inside tall and wide crops that a centre
crop would cut it out of, and a picture without a face (coffee) is cropped as ``smart``
crops it. Geometry is judged by ImageMagick cutting and scaling the same region."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import run_action
from tests.test_image_corpus import CONVERT, magick
from tests.test_image_resize import primary, psnr, size_of

pytestmark = pytest.mark.skipif(CONVERT is None, reason="ImageMagick is not installed")
pytest.importorskip("yuface", reason="yuface (the face detector)")
skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (test photos)")
PHOTOS = Path(skimage_data.__file__).parent


def inside(face: list[int], crop: list[int]) -> bool:
    """Whether the face box (x, y, width, height) lies inside the crop (l, t, r, b)."""
    x, y, w, h = face
    return crop[0] <= x and crop[1] <= y and x + w <= crop[2] and y + h <= crop[3]


def centre_crop(source: tuple[int, int], size: tuple[int, int]) -> list[int]:
    left, top = (source[0] - size[0]) // 2, (source[1] - size[1]) // 2
    return [left, top, left + size[0], top + size[1]]


def faces_found(path: Path) -> int:
    """How many faces the detect_faces action finds in ``path``."""
    result = run_action("detect_faces", path, path.parent / "faces", report=False)
    return int(result.data["faces_count"])


@pytest.mark.parametrize(("box", "crop_size"), [
    ((100, 400), (128, 512)),  # tall: a centre crop cuts the face's left side
    ((400, 100), (512, 128)),  # wide: a centre crop holds the chest, not the face
], ids=["tall", "wide"])
def test_faces_gravity_keeps_the_face_in_frame(tmp_path: Path, box: tuple[int, int],
                                               crop_size: tuple[int, int]) -> None:
    source = PHOTOS / "astronaut.png"
    result = run_action("resize_image", source, tmp_path / "out", format="png",
                        width=box[0], height=box[1], mode="fill", gravity="faces")
    data = result.data
    assert data["gravity_used"] == "faces" and data["faces_kept"] == "all"
    [face] = data["faces"]
    crop = data["crop"]
    assert (crop[2] - crop[0], crop[3] - crop[1]) == crop_size
    assert inside(face, crop)
    assert not inside(face, centre_crop((512, 512), crop_size))  # the test has teeth

    # ImageMagick cuts the same region and scales it: the same picture.
    ours = primary(result)
    reference = tmp_path / "reference.png"
    magick(source, "-crop", f"{crop_size[0]}x{crop_size[1]}+{crop[0]}+{crop[1]}", "+repage",
           "-filter", "Lanczos", "-resize", f"{box[0]}x{box[1]}!", reference)
    assert size_of(ours) == size_of(reference) == box
    assert psnr(ours, reference) > 30
    # And the detector still finds a face in what was delivered.
    assert faces_found(ours)


def test_a_picture_without_faces_is_cropped_smart(tmp_path: Path) -> None:
    source = PHOTOS / "coffee.png"
    faces = run_action("resize_image", source, tmp_path / "faces", format="png",
                       width=200, height=200, mode="fill", gravity="faces")
    smart = run_action("resize_image", source, tmp_path / "smart", format="png",
                       width=200, height=200, mode="fill", gravity="smart")
    assert faces.data["gravity_used"] == "smart" and faces.data["faces"] == []
    assert faces.data["crop"] == smart.data["crop"]
    assert psnr(primary(faces), primary(smart)) == float("inf")


def test_thumbnails_keep_the_face(tmp_path: Path) -> None:
    """A boxed thumbnail and a square one of the astronaut moved to the right of a wide
    grey canvas, where a centre square would cut the face in half."""
    source = tmp_path / "wide.png"
    magick(PHOTOS / "astronaut.png", "-background", "#808080", "-gravity", "east",
           "-extent", "1024x512", source)
    boxed = run_action("create_thumbnail", source, tmp_path / "boxed", format="png",
                       width=150, height=300, mode="fill", gravity="faces")
    assert boxed.data["gravity_used"] == "faces"
    [face] = boxed.data["faces"]
    assert inside(face, boxed.data["crop"])
    assert not inside(face, centre_crop((1024, 512), (256, 512)))
    [thumb] = boxed.outputs
    assert size_of(Path(thumb.staging_path)) == (150, 300)

    square = run_action("create_thumbnail", source, tmp_path / "square", format="png",
                        size=200, mode="fill", gravity="faces")
    assert square.data["gravity_used"] == "faces"
    assert not inside(square.data["faces"][0], centre_crop((1024, 512), (512, 512)))
    [thumb] = square.outputs
    path = Path(thumb.staging_path)
    assert size_of(path) == (200, 200)
    # The face is in the square: the detector finds it there.
    assert faces_found(path)
    with Image.open(path) as image:  # and the grey canvas is not most of it
        rgb = np.asarray(image.convert("RGB"))
    assert np.mean(np.all(rgb == 128, axis=2)) < 0.5


def test_faces_that_do_not_fit_together_keep_the_largest(tmp_path: Path) -> None:
    """Two astronauts side by side, the right one larger: a tall crop cannot hold both
    faces, so it holds the larger one whole."""
    source = tmp_path / "pair.png"
    magick(PHOTOS / "astronaut.png", "-resize", "384x384",
           "-background", "#808080", "-gravity", "south", "-extent", "384x512",
           PHOTOS / "astronaut.png", "+append", source)
    result = run_action("resize_image", source, tmp_path / "out", format="png",
                        width=128, height=512, mode="crop", gravity="faces")
    data = result.data
    assert data["gravity_used"] == "faces" and data["faces_kept"] == "largest"
    assert len(data["faces"]) == 2
    largest = max(data["faces"], key=lambda f: f[2] * f[3])
    assert largest[0] >= 384  # the right-hand, full-size astronaut
    assert inside(largest, data["crop"])
