"""``gravity: faces``: where a crop sits so the faces in a picture stay in frame.

The detector is libfacedetection (``yuface``, see :mod:`mediaq.actions.vision.models`),
run on the decoded frame the crop is cut from. The crop window is centred on the union
of every face box when that union fits in it, else on the largest face; a picture where
no face is found is cropped by the ``smart`` subject finder instead, and the caller
records which was used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from mediaq.actions.image_ops import Box
from mediaq.actions.vision.models import Face, detect_faces

# The detect_faces action's default: below it libfacedetection reports textures as faces.
FACE_MIN_SCORE = 0.6


@dataclass(frozen=True)
class FacePlacement:
    """A crop window chosen for faces: the window, the faces seen (in the analysed
    frame's pixels) and whether all of them or only the largest fit."""

    box: Box
    faces: tuple[Face, ...]
    kept: str  # "all" | "largest"

    def as_data(self, fx: float = 1.0, fy: float = 1.0) -> dict[str, Any]:
        """The faces in source pixels (the frame was decoded at ``fx``, ``fy`` scale)."""
        return {
            "faces": [[round(f.x / fx), round(f.y / fy), round(f.width / fx),
                       round(f.height / fy)] for f in self.faces],
            "faces_kept": self.kept,
        }


def faces_in(image: Image.Image) -> list[Face]:
    """Face boxes in a decoded frame, clipped to it, best first."""
    rgb = np.asarray(image.convert("RGB"))
    found = []
    for face in detect_faces(rgb, FACE_MIN_SCORE):
        # Boxes can reach past the edge for a face cut by the frame: keep the visible part.
        x0, y0 = max(0, face.x), max(0, face.y)
        x1, y1 = min(image.width, face.x + face.width), min(image.height, face.y + face.height)
        if x1 > x0 and y1 > y0:
            found.append(Face(x0, y0, x1 - x0, y1 - y0, face.score))
    return found


def face_box(image: Image.Image, size: tuple[int, int]) -> FacePlacement | None:
    """The ``size`` window of ``image`` that keeps its faces (None: no face found)."""
    faces = faces_in(image)
    if not faces:
        return None
    width, height = min(size[0], image.width), min(size[1], image.height)
    union = (min(f.x for f in faces), min(f.y for f in faces),
             max(f.x + f.width for f in faces), max(f.y + f.height for f in faces))
    kept = "all"
    target = union
    if union[2] - union[0] > width or union[3] - union[1] > height:
        largest = max(faces, key=lambda f: f.width * f.height)
        target = (largest.x, largest.y, largest.x + largest.width, largest.y + largest.height)
        kept = "largest"
    left = _centred(target[0], target[2], width, image.width)
    top = _centred(target[1], target[3], height, image.height)
    return FacePlacement((left, top, left + width, top + height), tuple(faces), kept)


def _centred(start: int, end: int, window: int, extent: int) -> int:
    """The window's start that centres [start, end) in it, kept inside [0, extent)."""
    return max(0, min(extent - window, (start + end - window) // 2))
