"""``resize_image``: a width x height box and a mode (fit, fill, crop, pad, stretch),
gravity (compass, the smart subject finder, or faces), resampling filter, sharpening after a
downscale and a background for pads; or, as before, a max_dimension square.

A resize that changes nothing is not an encode: the source is copied (metadata policy
applied). A real resize into a lossy format also leaves a lossless PNG of its pixels
(role ``intermediate``) so later image steps encode from those, not from this step's
lossy output (see :mod:`image_lineage`).
"""

from __future__ import annotations

from typing import Any

from mediaq.actions import action
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.actions.image_geometry import (
    GEOMETRY_PARAMS,
    Plan,
    Shaper,
    box_for,
    gravity_of,
    plan_for,
)
from mediaq.actions.image_lineage import lineage, write_intermediate
from mediaq.actions.image_steps import (
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
from mediaq.actions.image_write import output_format
from mediaq.errors import PermanentError


@action(
    "resize_image",
    writer_schema(
        90,
        max_dimension={"type": "integer", "minimum": 1, "default": 2000},
        upscale={"type": "boolean", "default": False},
        **GEOMETRY_PARAMS,
        # copy: a resize that changes nothing delivers the source (no lossy re-encode).
        unchanged={"enum": ["copy", "encode"], "default": "copy"},
        # Also write the resized pixels losslessly for the next image steps to read.
        lossless_intermediate={"type": "boolean", "default": True},
    ),
    produces_primary=True,
)
def resize_image(ctx: ActionContext) -> ActionResult:
    """Resize into ``width`` x ``height`` by ``mode`` (or within max_dimension square),
    upright, keeping its format (and its animation, where the output format has them)."""
    params = ctx.params
    header = header_of(ctx)
    upright = header.upright_size
    fmt = output_format(params.get("format"), header.format)
    if params.get("width") is None and params.get("height") is None:
        side = int(params["max_dimension"])
        box, mode, label = (side, side), "fit", str(side)
        described: dict[str, Any] = {"max_dimension": side}
    else:
        box = box_for(upright, params.get("width"), params.get("height"))
        mode, label = str(params["mode"]), f"{box[0]}x{box[1]}"
        described = {"mode": mode, "box": list(box)}
    plan = plan_for(upright, box, mode, upscale=bool(params["upscale"]))
    out_w, out_h = plan.output
    if out_w * out_h > int(params["max_pixels"]):  # an enlargement is a bomb of our own
        raise PermanentError(f"{ctx.source_path.name}: a {out_w}x{out_h} output exceeds the "
                             f"limit of {params['max_pixels']} pixels")
    how = encoding(ctx, fmt)
    filename = f"{stem(ctx)}_{label}.{how.extension}"
    if plan.identity and params["unchanged"] == "copy" and copyable(ctx, header, fmt):
        output = copied(ctx, header, filename)
        if output is not None:
            ctx.progress(1.0, "copied")
            return ActionResult(outputs=[output], data={
                **summary(header, output), **described, "reencoded": False})
    shaper = Shaper(plan, gravity=gravity_of(params, ctx.source_path.name),
                    filter=str(params["filter"]), sharpen=float(params["sharpen"]),
                    background=str(params["background"]))
    loaded = load(ctx, header, box=plan.decode_size, animated=wants_animation(ctx, header, fmt),
                  each_frame=None if plan.identity else shaper)
    outputs = _written(ctx, loaded, plan, fmt, filename)
    ctx.progress(1.0, "written")
    if shaper.region is not None:
        described["crop"] = list(shaper.region)
    if shaper.placement is not None:  # gravity faces: found, or fell back to smart
        described.update(shaper.placement)
    return ActionResult(outputs=outputs, data={
        **summary(header, outputs[0]), **described, "reencoded": True})


def _written(ctx: ActionContext, loaded: Loaded, plan: Plan, fmt: str,
             filename: str) -> list[OutputFile]:
    """The resized output, and its lossless pixels when the output loses some."""
    picture = loaded.picture
    frames = prepared(ctx, picture, picture.frames, fmt)
    ctx.progress(0.7, "encoding")
    how = encoding(ctx, fmt)
    kept = pixels_kept(ctx, picture, fmt)
    extra: list[OutputFile] = []
    meta: dict[str, Any] = {}
    if plan.identity:
        meta = lineage(loaded.pixels) if kept else {}
    elif (kept and how.lossy and len(frames) == 1
          and ctx.params["lossless_intermediate"]):
        intermediate = write_intermediate(ctx, frames[0], filename.rsplit(".", 1)[0])
        extra.append(intermediate)
        meta = lineage(intermediate.staging_path.name)
    output = write(ctx, picture, frames, how, filename, "primary", meta)
    return [output, *extra]
