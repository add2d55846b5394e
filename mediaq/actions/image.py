"""Image actions built on Pillow: validate, thumbnail, optimize, convert (resize is in
:mod:`image_resize`, metadata extraction in :mod:`image_metadata`).

Every action reads its source through :mod:`image_io` (safe formats, bombs refused
from the header, one-line errors), from the lossless pixels an earlier step left where
there are some (:mod:`image_lineage`), shapes pixels with :mod:`image_ops` /
:mod:`image_geometry` and writes through :mod:`image_write` (sRGB, metadata policy,
animation where the format has it).
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from mediaq.actions import action, get_action
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.actions.image_faces import face_box
from mediaq.actions.image_geometry import GRAVITIES, Shaper, box_for, plan_for
from mediaq.actions.image_io import (
    DEFAULT_MAX_PIXELS,
    SAFE_FORMATS,
    SourceInfo,
    inspect_image,
)
from mediaq.actions.image_lineage import jpeg_quality, lineage
from mediaq.actions.image_metadata import METADATA_PARAMS, image_metadata
from mediaq.actions.image_ops import cover_size, crop_region, fit_size, resized
from mediaq.actions.image_quality import search_quality, searches_quality
from mediaq.actions.image_steps import (
    OUTPUT_FORMAT,
    QUALITY,
    Loaded,
    copied,
    copyable,
    encoding,
    header_of,
    load,
    pixels_kept,
    prepared,
    stem,
    summary,
    wants_animation,
    write,
    writer_schema,
)
from mediaq.actions.image_write import FORMAT_NAMES, output_format

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
            **METADATA_PARAMS,
            "read_metadata": {"type": "boolean", "default": True},
        }
    },
)
def validate_image(ctx: ActionContext) -> ActionResult:
    """Check the source is a complete, safe image of an allowed format; describe it,
    with its camera, exposure and rights metadata (GPS only if ``keep_gps``)."""
    ctx.check()
    info = inspect_image(
        ctx.source_path,
        formats=tuple(ctx.params["allowed_formats"]),
        max_pixels=int(ctx.params["max_pixels"]),
    )
    data = info.as_data()
    if ctx.params["read_metadata"]:
        data["metadata"] = image_metadata(ctx.source_path, keep_gps=bool(ctx.params["keep_gps"]))
    ctx.progress(1.0, "validated")
    return ActionResult(data=data)


@action(
    "create_thumbnail",
    writer_schema(
        85,
        format={**OUTPUT_FORMAT, "default": "jpeg"},
        size={"type": "integer", "minimum": 1, "maximum": 4096, "default": 300},
        sizes={
            "type": "array",
            "items": {"type": "integer", "minimum": 1, "maximum": 4096},
            "minItems": 1,
            "uniqueItems": True,
        },
        width={"type": "integer", "minimum": 1, "maximum": 4096},
        height={"type": "integer", "minimum": 1, "maximum": 4096},
        gravity={"enum": list(GRAVITIES), "default": "center"},
        mode={"enum": ["fit", "fill", "smart"], "default": "fit"},
        strategy={"enum": ["attention", "entropy"], "default": "attention"},
    ),
)
def create_thumbnail(ctx: ActionContext) -> ActionResult:
    """Upright thumbnails, never enlarged: of one or several square sizes, or of any
    aspect (``width`` x ``height``); ``fit`` inside the box, ``fill`` it with a crop
    at ``gravity`` (``faces`` keeps the faces found, else crops smart), or
    ``smart``-crop the subject."""
    if ctx.params.get("width") is not None or ctx.params.get("height") is not None:
        return _boxed_thumbnail(ctx)
    sizes = sorted({int(size) for size in ctx.params.get("sizes") or [ctx.params["size"]]})
    mode = str(ctx.params["mode"])
    header = header_of(ctx)
    box = _thumbnail_decode_size(header, sizes[-1], mode)
    picture = load(ctx, header, box=box, animated=False,
                   each_frame=(lambda frame: resized(frame, box)) if box else None).picture
    source, placement = _square(ctx, header, picture.first, mode)
    fmt = output_format(ctx.params["format"], header.format)
    how = encoding(ctx, fmt)
    outputs = []
    for index, size in enumerate(sizes):
        ctx.progress(0.5 + 0.5 * index / len(sizes), f"thumbnail {size}")
        [frame] = prepared(
            ctx, picture, [resized(source, _thumbnail_size(header, size, mode))], fmt
        )
        filename = f"{stem(ctx)}_thumb_{size}.{how.extension}"
        outputs.append(write(ctx, picture, [frame], how, filename, "thumbnail"))
    ctx.progress(1.0, "written")
    described = [summary(picture.info, output)["output"] for output in outputs]
    data: dict[str, Any] = {"source": picture.info.as_data(), "mode": mode, "sizes": sizes,
                            **placement}
    if len(sizes) == 1:
        data.update(size=sizes[0], output=described[0])
    else:
        data["outputs"] = described
    return ActionResult(outputs=outputs, data=data)


def _square(ctx: ActionContext, header: SourceInfo, source: Image.Image,
            mode: str) -> tuple[Image.Image, dict[str, Any]]:
    """The square a fill or smart thumbnail is cut from (the whole picture for fit), and
    for ``gravity: faces`` which gravity placed it and the faces seen (source pixels)."""
    if mode == "fit":
        return source, {}
    if ctx.params["gravity"] == "faces":
        side = min(source.size)
        found = face_box(source, (side, side))
        fx, fy = source.width / header.upright_size[0], source.height / header.upright_size[1]
        if found is not None:
            return source.crop(found.box), {"gravity_used": "faces", **found.as_data(fx, fy)}
        # No face: the smart subject finder places the square instead.
        return source.crop(crop_region(source, (1, 1), "attention")), {
            "gravity_used": "smart", "faces": []}
    strategy = "centre" if mode == "fill" else str(ctx.params["strategy"])
    return source.crop(crop_region(source, (1, 1), strategy)), {}


def _boxed_thumbnail(ctx: ActionContext) -> ActionResult:
    """One thumbnail of a width x height box of any aspect."""
    mode = str(ctx.params["mode"])
    header = header_of(ctx)
    box = box_for(header.upright_size, ctx.params.get("width"), ctx.params.get("height"))
    plan = plan_for(header.upright_size, box, "fit" if mode == "fit" else "fill", upscale=False)
    gravity = str(ctx.params["gravity"])
    if mode == "smart":
        gravity = "smart" if ctx.params["strategy"] == "attention" else "entropy"
    shaper = Shaper(plan, gravity=gravity)
    picture = load(ctx, header, box=plan.decode_size, animated=False, each_frame=shaper).picture
    fmt = output_format(ctx.params["format"], header.format)
    how = encoding(ctx, fmt)
    frames = prepared(ctx, picture, picture.frames, fmt)
    filename = f"{stem(ctx)}_thumb_{box[0]}x{box[1]}.{how.extension}"
    output = write(ctx, picture, frames, how, filename, "thumbnail")
    ctx.progress(1.0, "written")
    return ActionResult(outputs=[output], data={
        **summary(picture.info, output), "mode": mode, "box": list(box),
        **({"crop": list(shaper.region)} if shaper.region else {}),
        **(shaper.placement or {})})


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
    writer_schema(
        85,
        progressive={"type": "boolean", "default": True},
        target_ssim={"type": "number", "exclusiveMinimum": 0.5, "maximum": 1},
        max_bytes={"type": "integer", "minimum": 100},
        min_quality={**QUALITY, "default": 30},
    ),
    produces_primary=True,
)
def optimize_image(ctx: ActionContext) -> ActionResult:
    """Re-encode smaller: with the encoder's size optimisations at a fixed quality, or
    searching the lowest quality that keeps ``target_ssim`` and/or fits ``max_bytes``.
    A source the re-encode would not make smaller is delivered as it is."""
    header = header_of(ctx)
    fmt = output_format(ctx.params.get("format"), header.format)
    loaded = load(ctx, header, box=None, animated=wants_animation(ctx, header, fmt))
    picture = loaded.picture
    frames = prepared(ctx, picture, picture.frames, fmt)
    ctx.progress(0.6, "encoding")
    quality = int(ctx.params["quality"])
    search: dict[str, Any] = {}
    if searches_quality(ctx) and encoding(ctx, fmt).lossy and len(frames) == 1:
        search = search_quality(ctx, picture, frames[0], fmt,
                                lambda q: encoding(ctx, fmt, optimize=True, quality=q))
        quality = search["quality"]
    how = encoding(ctx, fmt, optimize=True, quality=quality)
    meta = lineage(loaded.pixels) if pixels_kept(ctx, picture, fmt) else {}
    filename = f"{stem(ctx)}_optimized.{how.extension}"
    output = None
    if not search and copyable(ctx, header, fmt, encoder_options=False):
        output = _at_or_below(ctx, header, loaded, quality, filename)
    reencoded = output is None
    if output is None:
        output = write(ctx, picture, frames, how, filename, "primary", meta)
        if not search and copyable(ctx, header, fmt, encoder_options=False,
                                   lossless_too=True):
            output, reencoded = _smaller_of(ctx, header, output)
    ctx.progress(1.0, "written")
    output_bytes = output.staging_path.stat().st_size
    return ActionResult(
        outputs=[output],
        data={
            **summary(picture.info, output),
            "quality": quality,
            "reencoded": reencoded,
            **({"search": search} if search else {}),
            "original_bytes": picture.info.size_bytes,
            "output_bytes": output_bytes,
            "saving_ratio": round(1 - output_bytes / picture.info.size_bytes, 4),
        },
    )


def _at_or_below(ctx: ActionContext, header: SourceInfo, loaded: Loaded, quality: int,
                 filename: str) -> OutputFile | None:
    """The source copied when the best pixels there are already come from a JPEG at or
    below the requested quality: encoding them again would only copy its artefacts
    into a new generation (for the few percent optimised tables save)."""
    if header.format != "JPEG":
        return None
    found = jpeg_quality(loaded.pixels)
    if found is None or found > quality:
        return None
    ctx.log(f"{ctx.source_path.name}: already JPEG quality {found} (asked {quality}); kept")
    return copied(ctx, header, filename)


def _smaller_of(ctx: ActionContext, header: SourceInfo,
                encoded: OutputFile) -> tuple[OutputFile, bool]:
    """The re-encode, or the source copied (metadata policy applied) when that is no
    larger: an already optimal file is never encoded again."""
    path = encoded.staging_path
    kept = copied(ctx, header, f"{path.stem}.source{path.suffix}")
    if kept is None:
        return encoded, True
    if kept.staging_path.stat().st_size > path.stat().st_size:
        kept.staging_path.unlink()
        return encoded, True
    kept.staging_path.replace(path)
    return OutputFile(staging_path=path, role="primary", meta=kept.meta), False


# Document targets: convert_format hands a document to the registered
# ``convert_document`` action, looked up by name when such a step runs, so the image
# actions import nothing of the document actions and still load without pdfium or
# python-docx (a document step then fails as "not available").
_DOCUMENT_TARGETS = ("txt", "pdf")


@action(
    "convert_format",
    writer_schema(
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
    header = header_of(ctx)
    fmt = output_format(ctx.params["format"], header.format)
    loaded = load(ctx, header, box=None, animated=wants_animation(ctx, header, fmt))
    picture = loaded.picture
    frames = prepared(ctx, picture, picture.frames, fmt)
    ctx.progress(0.7, "encoding")
    how = encoding(ctx, fmt)
    meta = lineage(loaded.pixels) if pixels_kept(ctx, picture, fmt) else {}
    output = write(ctx, picture, frames, how, f"{stem(ctx)}.{how.extension}", "primary", meta)
    ctx.progress(1.0, "written")
    return ActionResult(outputs=[output], data=summary(picture.info, output))
