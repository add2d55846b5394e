"""What every image action shares: the writer parameters, reading the source (from
the lossless pixels an earlier step left, see :mod:`image_lineage`), preparing frames
for an encoder, writing with the metadata policy, and copying a source that would
come out unchanged instead of re-encoding it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from mediaq.actions.base import ActionContext, OutputFile
from mediaq.actions.image_io import (
    DEFAULT_MAX_FRAMES,
    DEFAULT_MAX_PIXELS,
    Picture,
    SourceInfo,
    has_alpha,
    load_picture,
    read_header,
    read_metadata,
    to_srgb,
)
from mediaq.actions.image_lineage import copy_unchanged, lineage, pixel_source, reencode_would_lose
from mediaq.actions.image_write import (
    ANIMATED_FORMATS,
    FORMAT_NAMES,
    METADATA_GROUPS,
    Encoding,
    describe_output,
    encoding_for,
    metadata_options,
    palette_reduced,
    ready_for,
    save_frames,
)

QUALITY = {"type": "integer", "minimum": 1, "maximum": 100}
OUTPUT_FORMAT = {"enum": sorted(FORMAT_NAMES)}
# Parameters every action that writes an image understands.
WRITING: dict[str, Any] = {
    "format": OUTPUT_FORMAT,
    "progressive": {"type": "boolean", "default": False},
    "lossless": {"type": "boolean", "default": False},
    "colors": {"type": "integer", "minimum": 2, "maximum": 256},
    "jpeg_tables": {"enum": ["standard", "robidoux"], "default": "standard"},
    "metadata": {
        "default": "strip",
        "oneOf": [
            {"enum": ["strip", "keep"]},
            {"type": "array", "items": {"enum": METADATA_GROUPS}, "uniqueItems": True},
        ],
    },
    "background": {"type": "string", "default": "white",
                   "pattern": r"^(#[0-9A-Fa-f]{6}|[a-z]+)$"},
    "animated": {"type": "boolean", "default": True},
    "max_pixels": {"type": "integer", "minimum": 1, "default": DEFAULT_MAX_PIXELS},
    "max_frames": {"type": "integer", "minimum": 1, "default": DEFAULT_MAX_FRAMES},
}
# Colour modes a lossy source may be copied in (anything else is converted on the way).
_COPYABLE_MODES = frozenset({"L", "LA", "RGB", "RGBA"})


def writer_schema(
    quality: int, *, required: list[str] | None = None, **properties: Any
) -> dict[str, Any]:
    return {
        "properties": {**WRITING, "quality": {**QUALITY, "default": quality}, **properties},
        **({"required": required} if required else {}),
    }


@dataclass
class Loaded:
    """A decoded source and the file its pixels came from (the source itself, or an
    earlier step's lossless pixels)."""

    picture: Picture
    pixels: Path


def stem(ctx: ActionContext) -> str:
    return Path(ctx.input_path).stem


def encoding(ctx: ActionContext, fmt: str, **overrides: Any) -> Encoding:
    params = ctx.params
    return encoding_for(
        fmt,
        quality=int(overrides.get("quality", params["quality"])),
        optimize=bool(overrides.get("optimize", False)),
        progressive=bool(params["progressive"]),
        lossless=bool(params["lossless"]),
        jpeg_tables=str(params["jpeg_tables"]),
    )


def header_of(ctx: ActionContext) -> SourceInfo:
    ctx.check()
    return read_header(ctx.source_path, max_pixels=int(ctx.params["max_pixels"]))


def wants_animation(ctx: ActionContext, header: SourceInfo, fmt: str) -> bool:
    return bool(ctx.params["animated"]) and header.animated and fmt in ANIMATED_FORMATS


def load(
    ctx: ActionContext,
    header: SourceInfo,
    *,
    box: tuple[int, int] | None,
    animated: bool,
    each_frame: Callable[[Image.Image], Image.Image] | None = None,
) -> Loaded:
    """The source upright, each frame passed through ``each_frame``; decoded from the
    lossless pixels an earlier step recorded when there are some. Metadata and the
    description are the source's own either way."""
    ctx.check()
    pixels = pixel_source(ctx, header)
    picture = load_picture(
        pixels,
        box=box,
        animated=animated,
        each_frame=each_frame,
        max_pixels=int(ctx.params["max_pixels"]),
        max_frames=int(ctx.params["max_frames"]),
    )
    if pixels != ctx.source_path:
        picture.info = header
        picture.exif, picture.xmp = read_metadata(
            ctx.source_path, max_pixels=int(ctx.params["max_pixels"]))
        ctx.log(f"{ctx.step_name}: decoding lossless pixels {pixels.name} "
                f"instead of {ctx.source_path.name}")
    ctx.progress(0.5, "decoded")
    return Loaded(picture, pixels)


def prepared(ctx: ActionContext, picture: Picture, frames: list[Image.Image],
             fmt: str) -> list[Image.Image]:
    """Frames in sRGB, in one mode, ready for ``fmt`` (flattened, palette-reduced)."""
    frames = [to_srgb(frame, picture.icc) for frame in frames]
    if len(frames) > 1:  # an animation's frames must share a mode
        mode = "RGBA" if any(has_alpha(frame) for frame in frames) else "RGB"
        frames = [frame.convert(mode) for frame in frames]
    frames = [ready_for(frame, fmt, ctx.params["background"]) for frame in frames]
    colours = ctx.params.get("colors")
    if colours and fmt == "PNG":
        frames = [palette_reduced(frame, int(colours)) for frame in frames]
    return frames


def pixels_kept(ctx: ActionContext, picture: Picture, fmt: str) -> bool:
    """Whether an output in ``fmt`` holds the decoded pixels up to its encoder's loss:
    nothing flattened onto a background, nothing reduced to a palette."""
    if fmt == "GIF" or (fmt == "PNG" and ctx.params.get("colors")):
        return False
    return not (fmt == "JPEG" and any(has_alpha(frame) for frame in picture.frames))


def write(
    ctx: ActionContext,
    picture: Picture,
    frames: list[Image.Image],
    how: Encoding,
    filename: str,
    role: str,
    meta: dict[str, Any] | None = None,
) -> OutputFile:
    """Write ``frames`` as ``filename`` with the step's metadata policy."""
    path = ctx.output_path(filename)
    save_frames(
        frames,
        path,
        how,
        durations=picture.durations,
        loop=picture.loop,
        extra=metadata_options(picture, ctx.params["metadata"], how.format),
    )
    return OutputFile(staging_path=path, role=role, meta={**describe_output(path), **(meta or {})})


def copyable(ctx: ActionContext, header: SourceInfo, fmt: str, *,
             encoder_options: bool = True, lossless_too: bool = False) -> bool:
    """Whether the source can be delivered as it is instead of re-encoded to ``fmt``: a
    lossy (or, ``lossless_too``, any) still of that format, upright, sRGB, and
    (``encoder_options``) no encoder setting asked for that only an encode gives."""
    params = ctx.params
    if fmt != header.format or header.frames != 1:
        return False
    if not (lossless_too or reencode_would_lose(fmt)):
        return False
    if header.orientation not in (None, 1) or header.mode not in _COPYABLE_MODES:
        return False
    if header.icc_profile is not None and "sRGB" not in header.icc_profile:
        return False
    if params.get("lossless") or params.get("colors"):
        return False
    return not encoder_options or (not params["progressive"]
                                   and params["jpeg_tables"] == "standard")


def copied(ctx: ActionContext, header: SourceInfo, filename: str) -> OutputFile | None:
    """The source copied as ``filename`` with the step's metadata policy applied, its
    compressed picture untouched; None when only a re-encode can apply the policy."""
    # Decoded all the same: a truncated or corrupt source must fail here as it would
    # in an encode, not be delivered as it is.
    ctx.check()
    load_picture(ctx.source_path, max_pixels=int(ctx.params["max_pixels"]))
    exif, xmp = read_metadata(ctx.source_path, max_pixels=int(ctx.params["max_pixels"]))
    shell = Picture(info=header, frames=[], exif=exif, xmp=xmp)
    path = ctx.output_path(filename)
    options = metadata_options(shell, ctx.params["metadata"], header.format)
    if not copy_unchanged(ctx.source_path, path, header.format, options):
        return None
    meta = {**describe_output(path), **lineage(pixel_source(ctx, header))}
    return OutputFile(staging_path=path, role="primary", meta=meta)


def summary(source: SourceInfo, output: OutputFile) -> dict[str, Any]:
    meta = {k: v for k, v in output.meta.items() if k != "pixels_from"}
    return {
        "source": source.as_data(),
        "output": {**meta, "size_bytes": output.staging_path.stat().st_size},
    }
