"""Image actions built on Pillow: validate, resize, thumbnail, optimize, convert.

Every action reads its source through :mod:`image_io` (safe formats, bombs refused
from the header, one-line errors), shapes pixels with :mod:`image_ops` and writes
through :mod:`image_write` (sRGB, metadata policy, animation where the format has it).
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import Any

from PIL import Image

from mediaq.actions import action, get_action
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.actions.image_io import (
    DEFAULT_MAX_FRAMES,
    DEFAULT_MAX_PIXELS,
    SAFE_FORMATS,
    Picture,
    SourceInfo,
    has_alpha,
    inspect_image,
    load_picture,
    read_header,
    to_srgb,
)
from mediaq.actions.image_ops import cover_size, crop_region, fit_size, resized, ssim
from mediaq.actions.image_write import (
    ANIMATED_FORMATS,
    FORMAT_NAMES,
    METADATA_GROUPS,
    Encoding,
    describe_output,
    encoding_for,
    metadata_options,
    output_format,
    palette_reduced,
    ready_for,
    save_frames,
)
from mediaq.errors import PermanentError

_QUALITY = {"type": "integer", "minimum": 1, "maximum": 100}
_OUTPUT_FORMAT = {"enum": sorted(FORMAT_NAMES)}
# Parameters every action that writes an image understands.
_WRITING: dict[str, Any] = {
    "format": _OUTPUT_FORMAT,
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
    "background": {"type": "string", "default": "white", "pattern": r"^(#[0-9A-Fa-f]{6}|[a-z]+)$"},
    "animated": {"type": "boolean", "default": True},
    "max_pixels": {"type": "integer", "minimum": 1, "default": DEFAULT_MAX_PIXELS},
    "max_frames": {"type": "integer", "minimum": 1, "default": DEFAULT_MAX_FRAMES},
}


def _writer_schema(
    quality: int, *, required: list[str] | None = None, **properties: Any
) -> dict[str, Any]:
    return {
        "properties": {**_WRITING, "quality": {**_QUALITY, "default": quality}, **properties},
        **({"required": required} if required else {}),
    }


# -------------------------------------------------------------------------- helpers


def _stem(ctx: ActionContext) -> str:
    return Path(ctx.input_path).stem


def _encoding(ctx: ActionContext, fmt: str, **overrides: Any) -> Encoding:
    params = ctx.params
    return encoding_for(
        fmt,
        quality=int(overrides.get("quality", params["quality"])),
        optimize=bool(overrides.get("optimize", False)),
        progressive=bool(params["progressive"]),
        lossless=bool(params["lossless"]),
        jpeg_tables=str(params["jpeg_tables"]),
    )


def _prepared(
    ctx: ActionContext, picture: Picture, frames: list[Image.Image], fmt: str
) -> list[Image.Image]:
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


def _write(
    ctx: ActionContext,
    picture: Picture,
    frames: list[Image.Image],
    encoding: Encoding,
    filename: str,
    role: str,
) -> OutputFile:
    """Write ``frames`` as ``filename`` with the step's metadata policy."""
    path = ctx.output_path(filename)
    save_frames(
        frames,
        path,
        encoding,
        durations=picture.durations,
        loop=picture.loop,
        extra=metadata_options(picture, ctx.params["metadata"], encoding.format),
    )
    return OutputFile(staging_path=path, role=role, meta=describe_output(path))


def _load(
    ctx: ActionContext,
    *,
    target: tuple[int, int] | None,
    animated: bool,
) -> Picture:
    """The source upright, every frame resized to ``target`` (None: keep the size)."""
    ctx.check()
    picture = load_picture(
        ctx.source_path,
        box=target,
        animated=animated,
        each_frame=(lambda frame: resized(frame, target)) if target else None,
        max_pixels=int(ctx.params["max_pixels"]),
        max_frames=int(ctx.params["max_frames"]),
    )
    ctx.progress(0.5, "decoded")
    return picture


def _wants_animation(ctx: ActionContext, header: SourceInfo, fmt: str) -> bool:
    return bool(ctx.params["animated"]) and header.animated and fmt in ANIMATED_FORMATS


def _header(ctx: ActionContext) -> SourceInfo:
    ctx.check()
    return read_header(ctx.source_path, max_pixels=int(ctx.params["max_pixels"]))


def _summary(source: SourceInfo, output: OutputFile) -> dict[str, Any]:
    return {
        "source": source.as_data(),
        "output": {**output.meta, "size_bytes": output.staging_path.stat().st_size},
    }


# -------------------------------------------------------------------------- actions


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
    _writer_schema(
        90,
        max_dimension={"type": "integer", "minimum": 1, "default": 2000},
        upscale={"type": "boolean", "default": False},
    ),
    produces_primary=True,
)
def resize_image(ctx: ActionContext) -> ActionResult:
    """Fit the image within max_dimension x max_dimension, upright, keeping its format
    (and its animation, where the output format has them)."""
    max_dimension = int(ctx.params["max_dimension"])
    header = _header(ctx)
    fmt = output_format(ctx.params.get("format"), header.format)
    target = fit_size(header.upright_size, max_dimension, upscale=bool(ctx.params["upscale"]))
    picture = _load(ctx, target=target, animated=_wants_animation(ctx, header, fmt))
    frames = _prepared(ctx, picture, picture.frames, fmt)
    ctx.progress(0.7, "encoding")
    encoding = _encoding(ctx, fmt)
    output = _write(
        ctx,
        picture,
        frames,
        encoding,
        f"{_stem(ctx)}_{max_dimension}.{encoding.extension}",
        "primary",
    )
    ctx.progress(1.0, "written")
    return ActionResult(
        outputs=[output], data={**_summary(picture.info, output), "max_dimension": max_dimension}
    )


@action(
    "create_thumbnail",
    _writer_schema(
        85,
        format={**_OUTPUT_FORMAT, "default": "jpeg"},
        size={"type": "integer", "minimum": 1, "maximum": 4096, "default": 300},
        sizes={
            "type": "array",
            "items": {"type": "integer", "minimum": 1, "maximum": 4096},
            "minItems": 1,
            "uniqueItems": True,
        },
        mode={"enum": ["fit", "fill", "smart"], "default": "fit"},
        strategy={"enum": ["attention", "entropy"], "default": "attention"},
    ),
)
def create_thumbnail(ctx: ActionContext) -> ActionResult:
    """Upright thumbnails of one or several sizes, never enlarged: ``fit`` inside a
    size x size box, ``fill`` it with a centre crop, or ``smart``-crop the subject."""
    sizes = sorted({int(size) for size in ctx.params.get("sizes") or [ctx.params["size"]]})
    mode = str(ctx.params["mode"])
    header = _header(ctx)
    picture = _load(ctx, target=_thumbnail_decode_size(header, sizes[-1], mode), animated=False)
    source = picture.first
    if mode != "fit":
        strategy = "centre" if mode == "fill" else str(ctx.params["strategy"])
        source = source.crop(crop_region(source, (1, 1), strategy))
    fmt = output_format(ctx.params["format"], header.format)
    encoding = _encoding(ctx, fmt)
    outputs = []
    for index, size in enumerate(sizes):
        ctx.progress(0.5 + 0.5 * index / len(sizes), f"thumbnail {size}")
        [frame] = _prepared(
            ctx, picture, [resized(source, _thumbnail_size(header, size, mode))], fmt
        )
        filename = f"{_stem(ctx)}_thumb_{size}.{encoding.extension}"
        outputs.append(_write(ctx, picture, [frame], encoding, filename, "thumbnail"))
    ctx.progress(1.0, "written")
    described = [_summary(picture.info, output)["output"] for output in outputs]
    data: dict[str, Any] = {"source": picture.info.as_data(), "mode": mode, "sizes": sizes}
    if len(sizes) == 1:
        data.update(size=sizes[0], output=described[0])
    else:
        data["outputs"] = described
    return ActionResult(outputs=outputs, data=data)


def _thumbnail_decode_size(header: SourceInfo, largest: int, mode: str) -> tuple[int, int] | None:
    """The size to decode the source at for the largest thumbnail (None: as it is)."""
    upright = header.upright_size
    if mode == "fit":
        target = fit_size(upright, largest, upscale=False)
    else:
        target = cover_size(upright, (largest, largest)) if min(upright) > largest else upright
    return None if target == upright else target


def _thumbnail_size(header: SourceInfo, size: int, mode: str) -> tuple[int, int]:
    """One thumbnail's size: the upright source fitted in the box, or the square crop
    scaled to it; never larger than the source."""
    if mode == "fit":
        return fit_size(header.upright_size, size, upscale=False)
    side = min(size, *header.upright_size)
    return side, side


@action(
    "optimize_image",
    _writer_schema(
        85,
        progressive={"type": "boolean", "default": True},
        target_ssim={"type": "number", "exclusiveMinimum": 0.5, "maximum": 1},
        max_bytes={"type": "integer", "minimum": 100},
        min_quality={**_QUALITY, "default": 30},
    ),
    produces_primary=True,
)
def optimize_image(ctx: ActionContext) -> ActionResult:
    """Re-encode smaller: with the encoder's size optimisations at a fixed quality, or
    searching the lowest quality that keeps ``target_ssim`` and/or fits ``max_bytes``."""
    header = _header(ctx)
    fmt = output_format(ctx.params.get("format"), header.format)
    picture = _load(ctx, target=None, animated=_wants_animation(ctx, header, fmt))
    frames = _prepared(ctx, picture, picture.frames, fmt)
    ctx.progress(0.6, "encoding")
    quality = int(ctx.params["quality"])
    search: dict[str, Any] = {}
    if _searches_quality(ctx) and _encoding(ctx, fmt).lossy and len(frames) == 1:
        search = _search_quality(ctx, picture, frames[0], fmt)
        quality = search["quality"]
    encoding = _encoding(ctx, fmt, optimize=True, quality=quality)
    output = _write(
        ctx, picture, frames, encoding, f"{_stem(ctx)}_optimized.{encoding.extension}", "primary"
    )
    ctx.progress(1.0, "written")
    output_bytes = output.staging_path.stat().st_size
    return ActionResult(
        outputs=[output],
        data={
            **_summary(picture.info, output),
            "quality": quality,
            **({"search": search} if search else {}),
            "original_bytes": picture.info.size_bytes,
            "output_bytes": output_bytes,
            "saving_ratio": round(1 - output_bytes / picture.info.size_bytes, 4),
        },
    )


def _searches_quality(ctx: ActionContext) -> bool:
    return ctx.params.get("target_ssim") is not None or ctx.params.get("max_bytes") is not None


# Quality searches compare at most this many pixels: SSIM's authors downsample too.
_SSIM_PIXELS = 1_500_000


def _search_quality(
    ctx: ActionContext, picture: Picture, reference: Image.Image, fmt: str
) -> dict[str, Any]:
    """Bisect quality between ``min_quality`` and ``quality``: the lowest that keeps
    ``target_ssim``, or the highest that fits ``max_bytes``; both when both are set."""
    target_ssim = ctx.params.get("target_ssim")
    max_bytes = ctx.params.get("max_bytes")
    low, high = sorted((int(ctx.params["min_quality"]), int(ctx.params["quality"])))
    extra = metadata_options(picture, ctx.params["metadata"], fmt)
    small_reference = _ssim_sized(reference)
    trials: dict[int, tuple[int, float | None]] = {}

    def trial(quality: int) -> tuple[int, float | None]:
        if quality not in trials:
            ctx.progress(0.6 + 0.03 * len(trials), f"trying quality {quality}")
            buffer = BytesIO()
            encoding = _encoding(ctx, fmt, optimize=True, quality=quality)
            reference.save(buffer, format=encoding.format, **encoding.options, **extra)
            score = None
            if target_ssim is not None:
                buffer.seek(0)
                with Image.open(buffer) as decoded:
                    trial_image = _ssim_sized(decoded.convert(reference.mode))
                score = round(ssim(small_reference, trial_image), 5)
            trials[quality] = (len(buffer.getbuffer()), score)
        return trials[quality]

    if target_ssim is not None:
        quality = _lowest(low, high, lambda q: (trial(q)[1] or 0.0) >= target_ssim)
    else:
        budget = int(ctx.params["max_bytes"])
        quality = _highest(low, high, lambda q: trial(q)[0] <= budget)
    size, score = trial(quality)
    if max_bytes is not None and size > max_bytes:
        raise PermanentError(
            f"{ctx.source_path.name}: cannot fit {max_bytes} bytes"
            + (f" at SSIM {target_ssim}" if target_ssim is not None else "")
            + f" (quality {quality} gives {size} bytes)"
        )
    return {
        "quality": quality,
        "bytes": size,
        **({"ssim": score, "target_ssim": target_ssim} if target_ssim is not None else {}),
        **({"max_bytes": max_bytes} if max_bytes is not None else {}),
        "target_met": target_ssim is None or (score or 0.0) >= target_ssim,
        "tries": len(trials),
    }


def _lowest(low: int, high: int, good: Any) -> int:
    """The lowest value in [low, high] where the monotone ``good`` holds (high if none)."""
    while low < high:
        middle = (low + high) // 2
        if good(middle):
            high = middle
        else:
            low = middle + 1
    return high


def _highest(low: int, high: int, good: Any) -> int:
    """The highest value in [low, high] where the monotone ``good`` holds (low if none)."""
    while low < high:
        middle = (low + high + 1) // 2
        if good(middle):
            low = middle
        else:
            high = middle - 1
    return low


def _ssim_sized(image: Image.Image) -> Image.Image:
    pixels = image.width * image.height
    if pixels <= _SSIM_PIXELS:
        return image
    scale = (_SSIM_PIXELS / pixels) ** 0.5
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BOX)


# Document targets: convert_format hands a document to the registered
# ``convert_document`` action, looked up by name when such a step runs, so the image
# actions import nothing of the document actions and still load without pdfium or
# python-docx (a document step then fails as "not available").
_DOCUMENT_TARGETS = ("txt", "pdf")


@action(
    "convert_format",
    _writer_schema(
        85,
        required=["format"],
        format={"enum": sorted(FORMAT_NAMES) + list(_DOCUMENT_TARGETS)},
    ),
    produces_primary=True,
)
def convert_format(ctx: ActionContext) -> ActionResult:
    """Convert an image to jpeg, png, webp, avif or gif (alpha kept, or flattened on the
    background colour for JPEG; animation kept where the format has it), or a document
    to txt or pdf."""
    if ctx.params["format"] in _DOCUMENT_TARGETS:
        # Its parameters were validated against this action's schema, which allows
        # everything convert_document reads ("format").
        return get_action("convert_document").fn(ctx)
    header = _header(ctx)
    fmt = output_format(ctx.params["format"], header.format)
    picture = _load(ctx, target=None, animated=_wants_animation(ctx, header, fmt))
    frames = _prepared(ctx, picture, picture.frames, fmt)
    ctx.progress(0.7, "encoding")
    encoding = _encoding(ctx, fmt)
    output = _write(ctx, picture, frames, encoding, f"{_stem(ctx)}.{encoding.extension}", "primary")
    ctx.progress(1.0, "written")
    return ActionResult(outputs=[output], data=_summary(picture.info, output))
