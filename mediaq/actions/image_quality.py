"""Quality searches for ``optimize_image``: the lowest quality that keeps a target
SSIM, or the highest that fits a byte budget, by bisection over real encodes."""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any

from PIL import Image

from mediaq.actions.base import ActionContext
from mediaq.actions.image_io import Picture
from mediaq.actions.image_ops import ssim
from mediaq.actions.image_write import Encoding, metadata_options
from mediaq.errors import PermanentError


def searches_quality(ctx: ActionContext) -> bool:
    return ctx.params.get("target_ssim") is not None or ctx.params.get("max_bytes") is not None


# Quality searches compare at most this many pixels: SSIM's authors downsample too.
_SSIM_PIXELS = 1_500_000


def search_quality(
    ctx: ActionContext,
    picture: Picture,
    reference: Image.Image,
    fmt: str,
    encoding_at: Callable[[int], Encoding],
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
            encoding = encoding_at(quality)
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
