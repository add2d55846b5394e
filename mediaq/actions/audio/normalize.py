"""``normalize_loudness``: integrated loudness to a target, true peak under a limit.

Normalisation applies one linear gain; only when that gain would push the true peak
over the limit does a look-ahead limiter (``alimiter``) hold the peaks down. Every
output is measured again and, when limiting (or a downmix, or a lossy encoder) moved
it off target, rendered again with a corrected gain: at most four passes, and the
one closest to the target is kept.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from mediaq.actions import action
from mediaq.actions.audio.codecs import CODECS, is_lossless
from mediaq.actions.audio.encode import EncodePlan, describe_output, plan_encode
from mediaq.actions.audio.loudness import SILENCE_LUFS, Loudness, measure_loudness, render_with_gain
from mediaq.actions.audio.source import probe_audio
from mediaq.actions.avio import BITRATE_SCHEMA, AudioInfo, ProgressClock, writing
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.errors import PermanentError

LOUDNESS_TOLERANCE_LU = 0.5
PEAK_TOLERANCE_DB = 0.1
MAX_PASSES = 4
MIN_SLOPE = 0.1  # dB of loudness per dB of gain, deep into the limiter
MAX_GAIN_STEP_DB = 20.0
LIMITER_MARGIN_DB = 0.5  # inter-sample peaks rise above a sample-peak limiter's ceiling
LOSSY_AUTO_CODECS = {"mp3": "mp3", "aac": "aac", "opus": "opus", "vorbis": "opus"}


@action("normalize_loudness", {
    "properties": {
        "target_lufs": {"type": "number", "minimum": -70, "maximum": -5, "default": -23},
        "true_peak_db": {"type": "number", "minimum": -9, "maximum": 0, "default": -1.0},
        # auto: PCM stays WAV, other lossless becomes FLAC, mp3/aac/opus keep their codec
        # (vorbis becomes opus), any other lossy codec becomes AAC.
        "codec": {"enum": ["auto", *CODECS], "default": "auto"},
        "bitrate": BITRATE_SCHEMA,  # lossy outputs; default: the source's, at least 192k/160k/128k
    },
}, produces_primary=True)
def normalize_loudness(ctx: ActionContext) -> ActionResult:
    """Bring the integrated loudness (EBU R128) to a target, true peak under a limit."""
    source = ctx.source_path
    info, audio = probe_audio(source)
    target, limit = ctx.params["target_lufs"], ctx.params["true_peak_db"]
    before = measure_loudness(source, ProgressClock(ctx, info.duration, "measuring",
                                                    span=(0.0, 0.3)))
    if before.integrated <= SILENCE_LUFS:
        raise PermanentError(f"{source.name}: silent or shorter than 0.4 s (no loudness above "
                             f"{SILENCE_LUFS:.0f} LUFS); cannot normalise")
    plan = plan_normalised_output(ctx, audio)
    passes = normalisation_passes(ctx, info.duration, plan, before, target, limit)
    best = min(passes, key=lambda p: p.miss(target, limit))
    for other in passes:
        if other is not best:
            other.path.unlink(missing_ok=True)
    with writing(plan.path):
        best.path.replace(plan.path)
    after = best.loudness
    if best.miss(target, limit) > (0.0, LOUDNESS_TOLERANCE_LU):
        ctx.log(f"loudness {after.integrated:.1f} LUFS, true peak {after.true_peak:.1f} dBTP "
                f"after {len(passes)} passes (asked {target:.1f} LUFS, {limit:.1f} dBTP)")
    meta = {**describe_output(plan, best.seconds), "loudness_lufs": after.integrated,
            "true_peak_db": after.true_peak}
    return ActionResult(
        outputs=[OutputFile(plan.path, role="primary", meta=meta)],
        data={
            "target_lufs": target, "true_peak_limit_db": limit,
            "input_lufs": before.integrated, "output_lufs": after.integrated,
            "input_true_peak_db": before.true_peak, "output_true_peak_db": after.true_peak,
            "input_lra": before.loudness_range, "output_lra": after.loudness_range,
            "gain_db": round(best.gain, 2), "limited": best.ceiling is not None,
            "passes": len(passes), "codec": plan.codec, "format": plan.format,
        },
    )


@dataclass(frozen=True)
class GainPass:
    """One rendering of the source with a gain (and maybe a limiter), as measured."""

    gain: float
    ceiling: float | None
    path: Path
    seconds: float
    loudness: Loudness

    def miss(self, target: float, limit: float) -> tuple[float, float]:
        """How far off this pass is: true peak over the limit first, then loudness."""
        over = max(self.loudness.true_peak - limit - PEAK_TOLERANCE_DB, 0.0)
        return over, abs(self.loudness.integrated - target)


def normalisation_passes(ctx: ActionContext, duration: float, plan: EncodePlan,
                         before: Loudness, target: float, limit: float) -> list[GainPass]:
    """Render and measure until a pass is within tolerance (at most MAX_PASSES).

    The first pass applies the gain that BS.1770 says is needed, limited only if that
    gain would push the true peak over the limit. Later passes correct what limiting,
    a downmix or a lossy encoder changed. Every pass stays on disk until the caller
    keeps the best; on failure or cancellation all are deleted."""
    gain = target - before.integrated
    ceiling = limit - LIMITER_MARGIN_DB if before.true_peak + gain > limit else None
    passes: list[GainPass] = []
    try:
        for attempt in range(1, MAX_PASSES + 1):
            path = plan.path.with_name(f"{plan.path.stem}.pass{attempt}{plan.path.suffix}")
            seconds = render_with_gain(
                ctx, dataclasses.replace(plan, path=path), gain, ceiling,
                ProgressClock(ctx, duration, "normalising", span=(0.3, 0.75)))
            after = measure_loudness(path, ProgressClock(ctx, duration, "verifying",
                                                         span=(0.75, 1.0)))
            done = GainPass(gain, ceiling, path, seconds, after)
            passes.append(done)
            if done.miss(target, limit) <= (0.0, LOUDNESS_TOLERANCE_LU):
                break
            if after.true_peak > limit + PEAK_TOLERANCE_DB:
                # Hold the peaks lower: lower the limiter's ceiling, or start limiting.
                current = ceiling if ceiling is not None else min(limit, before.true_peak + gain)
                ceiling = current - (after.true_peak - limit) - PEAK_TOLERANCE_DB
            gain = next_gain(passes, target)
    except BaseException:
        for done in passes:
            done.path.unlink(missing_ok=True)
        raise
    return passes


def next_gain(passes: list[GainPass], target: float) -> float:
    """The gain for the next pass: a secant step, kept inside the bracket.

    Under a limiter the loudness grows more slowly than the gain, so the slope is
    learned from the last two passes (1 after the first). Once one pass was too quiet
    and another too loud, a step that leaves the gains between them is replaced by
    interpolating between those two (regula falsi)."""
    last = passes[-1]
    slope = 1.0
    if len(passes) >= 2:
        previous = passes[-2]
        if abs(last.gain - previous.gain) > 1e-3:
            slope = ((last.loudness.integrated - previous.loudness.integrated)
                     / (last.gain - previous.gain))
            slope = min(max(slope, MIN_SLOPE), 1.0)
    step = (target - last.loudness.integrated) / slope
    candidate = last.gain + min(max(step, -MAX_GAIN_STEP_DB), MAX_GAIN_STEP_DB)
    quiet = [p for p in passes if p.loudness.integrated < target]
    loud = [p for p in passes if p.loudness.integrated > target]
    if quiet and loud:
        low = max(quiet, key=lambda p: p.gain)
        high = min(loud, key=lambda p: p.gain)
        if low.gain < high.gain and not low.gain < candidate < high.gain:
            share = ((target - low.loudness.integrated)
                     / (high.loudness.integrated - low.loudness.integrated))
            # Stay off the ends, where a flat stretch of the curve would stall the search.
            candidate = low.gain + (high.gain - low.gain) * min(max(share, 0.1), 0.9)
    return candidate


def plan_normalised_output(ctx: ActionContext, audio: AudioInfo) -> EncodePlan:
    codec = ctx.params["codec"]
    if codec == "auto":
        if audio.codec.startswith("pcm_"):
            codec = "wav"
        elif is_lossless(audio.codec):
            codec = "flac"
        else:
            codec = LOSSY_AUTO_CODECS.get(audio.codec, "aac")
    bitrate = ctx.params.get("bitrate")
    spec = CODECS[codec]
    if bitrate is None and spec.default_bitrate is not None and audio.bit_rate \
            and not is_lossless(audio.codec):
        # Re-encoding lossy audio: never below the source's rate, within the codec's range.
        per_channel = spec.max_per_channel or spec.bitrate_range[1]
        high = min(spec.bitrate_range[1], per_channel * min(audio.channels, 2))
        bitrate = min(max(spec.default_bitrate, audio.bit_rate), high)
    return plan_encode(ctx, audio, codec, suffix="_normalized", bitrate=bitrate)


