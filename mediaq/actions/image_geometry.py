"""Resize geometry: how a width x height box and a mode (fit, fill, crop, pad, stretch)
shape an image, where a crop or a pad sits (gravity, including the smart subject
finder of :mod:`image_ops` and the faces of :mod:`image_faces`), which resampling
filter, and sharpening after a downscale.

A :class:`Plan` is decided from the upright source size in the header, before anything
is decoded, so the decoder can shrink on load; :class:`Shaper` then applies it to the
decoded pixels, whatever scale the decoder chose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageColor, ImageFilter

from mediaq.actions.image_faces import face_box
from mediaq.actions.image_ops import Box, subject_box
from mediaq.errors import InvalidParameters

MODES = ("fit", "fill", "crop", "pad", "stretch")
COMPASS = ("center", "north", "south", "east", "west",
           "northeast", "northwest", "southeast", "southwest")
# smart: where people look first (edges, saturation, skin); entropy: the busiest part;
# faces: the detected faces (all, or the largest when they do not fit), else smart.
GRAVITIES = (*COMPASS, "smart", "entropy", "faces")
FILTERS: dict[str, Image.Resampling] = {
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "box": Image.Resampling.BOX,
    "nearest": Image.Resampling.NEAREST,
}
# A box reduce before the windowed filters, while 1.5x is left for them (see
# image_ops.resized); the others are asked for by name and get exactly themselves.
_REDUCING_GAP = {"lanczos": 1.5, "bicubic": 1.5}
# sharpen: 1.0 is the light unsharp mask that restores what a downscale softens.
_SHARPEN_RADIUS = 0.8
_SHARPEN_PERCENT = 80
_SHARPEN_THRESHOLD = 2

GEOMETRY_PARAMS: dict[str, Any] = {
    "width": {"type": "integer", "minimum": 1, "maximum": 65_500},
    "height": {"type": "integer", "minimum": 1, "maximum": 65_500},
    "mode": {"enum": list(MODES), "default": "fit"},
    "gravity": {"enum": list(GRAVITIES), "default": "center"},
    "anchor": {"enum": list(GRAVITIES)},  # another name for gravity
    "filter": {"enum": list(FILTERS), "default": "lanczos"},
    "sharpen": {"type": "number", "minimum": 0, "maximum": 5, "default": 0},
}


@dataclass(frozen=True)
class Plan:
    """What to do to an upright source of ``source`` size (header pixels)."""

    source: tuple[int, int]
    # The part of the source to keep, as a size: placed by gravity when applied.
    crop: tuple[int, int] | None
    # The size that part is resampled to.
    scaled: tuple[int, int]
    # The final canvas when it is larger than ``scaled`` (pad): filled with background.
    canvas: tuple[int, int] | None = None

    @property
    def output(self) -> tuple[int, int]:
        return self.canvas or self.scaled

    @property
    def identity(self) -> bool:
        """True when the output is the source, pixel for pixel."""
        return self.crop in (None, self.source) and self.scaled == self.source and (
            self.canvas in (None, self.source))

    @property
    def decode_size(self) -> tuple[int, int] | None:
        """The smallest full-frame size the decoder may shrink to (None: full size)."""
        if self.crop is None:
            return self.scaled
        # A crop is cut at source scale: shrink on load only by what the resample drops.
        scale = min(self.scaled[0] / self.crop[0], self.scaled[1] / self.crop[1])
        if scale >= 1:
            return None
        return (max(1, round(self.source[0] * scale)), max(1, round(self.source[1] * scale)))


def gravity_of(params: dict[str, Any], name: str) -> str:
    """The step's gravity: ``gravity``, or ``anchor`` (its other name) when given."""
    anchor = params.get("anchor")
    if anchor is not None and params.get("gravity", "center") not in ("center", anchor):
        raise InvalidParameters(f"{name}: anchor and gravity disagree "
                                f"({anchor} vs {params['gravity']}); give one")
    return str(anchor or params.get("gravity", "center"))


def box_for(source: tuple[int, int], width: int | None, height: int | None) -> tuple[int, int]:
    """The requested box; a missing side follows the source's aspect ratio."""
    sw, sh = source
    if width is None and height is None:
        raise ValueError("a box needs a width or a height")
    if width is None:
        assert height is not None
        width = max(1, round(sw * height / sh))
    if height is None:
        height = max(1, round(sh * width / sw))
    return width, height


def plan_for(source: tuple[int, int], box: tuple[int, int], mode: str, *,
             upscale: bool) -> Plan:
    """The plan for ``mode`` into ``box`` (width, height); never enlarges unless
    ``upscale``, except ``stretch`` (which exists to force a size)."""
    sw, sh = source
    bw, bh = box
    if mode == "stretch":
        return Plan(source, None, (bw, bh))
    if mode == "crop":
        return Plan(source, (min(bw, sw), min(bh, sh)), (min(bw, sw), min(bh, sh)))
    if mode == "fill":
        crop = _largest_with_aspect(source, box)
        scaled = box if upscale or crop[0] >= bw else crop
        return Plan(source, crop, scaled)
    if min(bw / sw, bh / sh) >= 1 and not upscale:
        fitted = source
    elif bw / sw <= bh / sh:  # the width decides; it lands on the box exactly
        fitted = (bw, max(1, round(sh * bw / sw)))
    else:
        fitted = (max(1, round(sw * bh / sh)), bh)
    if mode == "pad":
        return Plan(source, None, fitted, box if fitted != box else None)
    return Plan(source, None, fitted)


def _largest_with_aspect(source: tuple[int, int], aspect: tuple[int, int]) -> tuple[int, int]:
    sw, sh = source
    width = min(sw, round(sh * aspect[0] / aspect[1]))
    height = min(sh, round(sw * aspect[1] / aspect[0]))
    return max(1, width), max(1, height)


def placed(outer: tuple[int, int], inner: tuple[int, int], gravity: str) -> tuple[int, int]:
    """Top-left corner of ``inner`` placed inside ``outer`` at a compass ``gravity``
    (anything else, smart included, centres)."""
    free_x, free_y = outer[0] - inner[0], outer[1] - inner[1]
    x = 0 if "west" in gravity else free_x if "east" in gravity else free_x // 2
    y = 0 if gravity.startswith("north") else free_y if gravity.startswith("south") else free_y // 2
    return x, y


@dataclass
class Shaper:
    """Applies a :class:`Plan` to decoded frames. A smart or faces crop is decided on
    the first frame and kept, so an animation's frames are cut at one place."""

    plan: Plan
    gravity: str = "center"
    filter: str = "lanczos"
    sharpen: float = 0.0
    background: str = "white"
    region: Box | None = field(default=None, init=False)  # in source pixels, once known
    # For gravity faces, once the crop is decided: which gravity placed it (faces, or
    # smart when none was found) and the faces seen, in source pixels.
    placement: dict[str, Any] | None = field(default=None, init=False)

    def __call__(self, image: Image.Image) -> Image.Image:
        plan = self.plan
        fx, fy = image.width / plan.source[0], image.height / plan.source[1]
        if plan.crop is not None and plan.crop != plan.source:
            box = self._region(image, fx, fy)
            image = image.crop(box)
        if image.size != plan.scaled:
            shrinking = image.width > plan.scaled[0] or image.height > plan.scaled[1]
            image = image.resize(plan.scaled, FILTERS[self.filter],
                                 reducing_gap=_REDUCING_GAP.get(self.filter))
            if self.sharpen > 0 and shrinking:
                image = sharpened(image, self.sharpen)
        elif self.sharpen > 0 and (fx < 1 or fy < 1):  # the decoder did the whole shrink
            image = sharpened(image, self.sharpen)
        if plan.canvas is not None:
            image = padded(image, plan.canvas, self.gravity, self.background)
        return image

    def _region(self, image: Image.Image, fx: float, fy: float) -> Box:
        assert self.plan.crop is not None
        size = (min(image.width, max(1, round(self.plan.crop[0] * fx))),
                min(image.height, max(1, round(self.plan.crop[1] * fy))))
        if self.region is None:
            placement = face_box(image, size) if self.gravity == "faces" else None
            if placement is not None:
                box = placement.box
                self.placement = {"gravity_used": "faces", **placement.as_data(fx, fy)}
            elif self.gravity in ("smart", "entropy", "faces"):
                if self.gravity == "faces":  # no face found: the subject finder decides
                    self.placement = {"gravity_used": "smart", "faces": []}
                strategy = "entropy" if self.gravity == "entropy" else "attention"
                box = subject_box(image, size, strategy)
            else:
                x, y = placed(image.size, size, self.gravity)
                box = (x, y, x + size[0], y + size[1])
            self.region = (round(box[0] / fx), round(box[1] / fy),
                           round(box[2] / fx), round(box[3] / fy))
            return box
        left, top = round(self.region[0] * fx), round(self.region[1] * fy)
        left, top = min(left, image.width - size[0]), min(top, image.height - size[1])
        return left, top, left + size[0], top + size[1]


def sharpened(image: Image.Image, amount: float) -> Image.Image:
    """An unsharp mask of ``amount`` (1.0: the light touch after a downscale)."""
    mask = ImageFilter.UnsharpMask(radius=_SHARPEN_RADIUS,
                                   percent=round(_SHARPEN_PERCENT * amount),
                                   threshold=_SHARPEN_THRESHOLD)
    if image.mode in ("LA", "RGBA"):  # sharpen colour, not the alpha edge
        *colour, alpha = image.split()
        merged = Image.merge(image.mode[:-1], colour).filter(mask)
        return Image.merge(image.mode, (*merged.split(), alpha))
    return image.filter(mask)


def padded(image: Image.Image, canvas: tuple[int, int], gravity: str,
           background: str) -> Image.Image:
    """``image`` on a ``canvas``-sized background (letterbox / pillarbox) at ``gravity``;
    ``transparent`` pads with alpha where the image has a mode that keeps it."""
    if background == "transparent":
        mode = "RGBA" if image.mode in ("RGB", "RGBA", "P") else "LA"
        colour: Any = (0, 0, 0, 0) if mode == "RGBA" else (0, 0)
        image = image.convert(mode)
    else:
        mode = image.mode
        rgba = ImageColor.getrgb(background)
        rgb = rgba[:3]
        if mode in ("L", "LA"):
            grey = round(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])
            colour = grey if mode == "L" else (grey, 255)
        else:
            colour = rgb if mode == "RGB" else (*rgb, 255)
    base = Image.new(mode, canvas, colour)
    base.paste(image, placed(canvas, image.size, gravity))
    return base
