"""What makes a moment worth keeping, measured offline in one decoding pass, per second:

- motion energy: the mean absolute change of grey levels between consecutive frames
  (160 pixels wide), averaged over the second; a fast-moving section scores high;
- loudness: the RMS level of the audio in dBFS; a loud burst scores high;
- scene changes: the cuts found as detect_scenes finds them;
- faces: whether libfacedetection finds a face in a frame sampled every
  ``face_interval`` seconds (optional: it costs tens of milliseconds a frame).

Memory stays flat: one previous thumbnail, per-second sums, never a frame list.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler

from mediaq.actions.analysis.scenes import Thumbnailer, analysis_size, change_score
from mediaq.actions.avio import ProgressClock, media_duration, open_media, reading
from mediaq.actions.base import ActionContext
from mediaq.actions.frames import decode_tolerantly
from mediaq.errors import PermanentError

SILENCE_DB = -90.0
CUT_THRESHOLD = 0.3
FloatArray = npt.NDArray[np.float64]


@dataclass
class Signals:
    duration: float
    fps: float
    motion: FloatArray  # per second, 0..1
    loudness: FloatArray  # per second, dBFS (SILENCE_DB without audio)
    cuts: list[float]
    faces: FloatArray | None  # per second: faces found in the sampled frame, NaN unsampled
    has_audio: bool
    frames: int = 0
    seconds_spent: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class _PerSecond:
    def __init__(self, seconds: int) -> None:
        self.sums = np.zeros(seconds, np.float64)
        self.counts = np.zeros(seconds, np.int64)

    def add(self, at: float, value: float, weight: int = 1) -> None:
        index = min(max(int(at), 0), len(self.sums) - 1)
        self.sums[index] += value
        self.counts[index] += weight

    def means(self, empty: float) -> FloatArray:
        out = np.full(len(self.sums), empty, np.float64)
        seen = self.counts > 0
        out[seen] = self.sums[seen] / self.counts[seen]
        return out


def measure(ctx: ActionContext, path: Path, *, face_interval: float | None,
            known_faces: list[tuple[float, int]] | None = None) -> Signals:
    """Decode ``path`` once and measure every signal per second; ``known_faces``: (time,
    faces) samples a detect_faces step already took, used instead of detecting again."""
    started = time.monotonic()
    with open_media(path) as container, reading(path):
        if not container.streams.video:
            raise PermanentError(f"{path.name}: has no video stream")
        duration = media_duration(container)
        seconds = max(1, math.ceil(duration))
        vstream: Any = container.streams.video[0]
        vstream.codec_context.thread_type = "AUTO"
        astream: Any = container.streams.audio[0] if container.streams.audio else None
        fps = float(vstream.average_rate or vstream.guessed_rate or 25)
        v_origin = float(vstream.start_time * vstream.time_base) if vstream.start_time else 0.0
        motion, power = _PerSecond(seconds), _PerSecond(seconds)
        faces = np.full(seconds, np.nan) if face_interval or known_faces else None
        if known_faces and faces is not None:
            for at, count in known_faces:
                index = min(max(int(at), 0), seconds - 1)
                faces[index] = np.nanmax([faces[index], float(count)])
            face_interval = None  # already measured
        next_face = 0.0
        resampler = AudioResampler(format="flt", layout="mono", rate=16_000)
        thumbnailer: Thumbnailer | None = None
        previous = None
        cuts: list[float] = []
        last_cut, frames = 0.0, 0
        clock = ProgressClock(ctx, duration, "measuring motion and loudness")
        streams = [vstream] + ([astream] if astream is not None else [])
        for frame in decode_tolerantly(container, streams):
            if isinstance(frame, AudioFrame):
                at = (frame.time or 0.0) - v_origin
                for chunk in resampler.resample(frame):
                    samples = chunk.to_ndarray().astype(np.float64).reshape(-1)
                    if samples.size:
                        power.add(at, float(np.sum(samples * samples)), samples.size)
                continue
            at = (frame.time if frame.time is not None else frames / fps) - v_origin
            frames += 1
            thumbnailer = thumbnailer or Thumbnailer(*analysis_size(frame.width, frame.height,
                                                                    160))
            thumb = thumbnailer(frame)
            if previous is not None:
                motion.add(at, float(np.mean(np.abs(thumb.luma - previous.luma))) / 255.0)
                if change_score(previous, thumb) >= CUT_THRESHOLD and at - last_cut >= 1.0:
                    cuts.append(round(at, 3))
                    last_cut = at
            previous = thumb
            if faces is not None and face_interval and at >= next_face:
                faces[min(int(at), seconds - 1)] = _faces_in(frame)
                next_face = at + face_interval
            clock.tick(at)
    if frames == 0:
        raise PermanentError(f"{path.name}: the video stream has no decodable frame")
    mean_power = power.means(0.0)
    loudness = np.where(mean_power > 0, 10 * np.log10(np.maximum(mean_power, 1e-12)),
                        SILENCE_DB)
    return Signals(duration=duration, fps=fps, motion=motion.means(0.0),
                   loudness=np.maximum(loudness, SILENCE_DB), cuts=cuts, faces=faces,
                   has_audio=astream is not None, frames=frames,
                   seconds_spent=time.monotonic() - started)


def _faces_in(frame: Any) -> float:
    from mediaq.actions.vision.models import detect_faces

    scale = min(1.0, 640 / max(frame.width, frame.height))
    rgb = frame.to_ndarray(format="rgb24", width=max(2, round(frame.width * scale)),
                           height=max(2, round(frame.height * scale)))
    return float(len(detect_faces(rgb, 0.6)))


@dataclass
class Segment:
    start: float
    end: float
    starts_scene: bool
    score: float = 0.0
    parts: dict[str, float] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return self.end - self.start

    def as_data(self) -> dict[str, Any]:
        return {"start": round(self.start, 3), "end": round(self.end, 3),
                "duration": round(self.duration, 3), "score": round(self.score, 4),
                "signals": {k: round(v, 4) for k, v in self.parts.items()}}


def segments_of(signals: Signals, length: float) -> list[Segment]:
    """The video in pieces of about ``length`` seconds that never cross a cut. Cuts less
    than ``length / 2`` after the previous one (a burst of quick cuts, or fast motion
    that the cut detector takes for cuts) do not split: such a passage is one busy
    segment rather than many too short to fade. A scene's last piece shorter than
    ``length / 2`` joins the one before it."""
    kept: list[float] = []
    for cut in signals.cuts:
        if 0 < cut < signals.duration and cut - (kept[-1] if kept else 0.0) >= length / 2:
            kept.append(cut)
    bounds = [0.0, *kept, signals.duration]
    found: list[Segment] = []
    for scene_start, scene_end in itertools.pairwise(bounds):
        start = scene_start
        pieces: list[Segment] = []
        while scene_end - start > 1e-6:
            end = min(start + length, scene_end)
            if pieces and end - start < length / 2:
                pieces[-1].end = end
            else:
                pieces.append(Segment(start, end, starts_scene=False))
            start = end
        found.extend(pieces)
    for seg in found:  # any cut inside counts, also one that did not split
        seg.starts_scene = any(seg.start <= c < seg.end for c in signals.cuts)
    return found


def score(segments: list[Segment], signals: Signals, weights: dict[str, float]) -> None:
    """Each segment's signals, scaled 0..1 over the whole video, and their weighted mean."""
    def span(seg: Segment) -> slice:
        return slice(int(seg.start), max(int(seg.start) + 1, math.ceil(seg.end - 1e-6)))

    motion = np.array([float(np.mean(signals.motion[span(s)])) for s in segments])
    loud = np.array([float(np.max(signals.loudness[span(s)])) for s in segments])
    parts = {"motion": _unit(motion), "loudness": _unit(loud) if signals.has_audio
             else np.zeros(len(segments)),
             "scene_change": np.array([1.0 if s.starts_scene else 0.0 for s in segments])}
    if signals.faces is not None:
        seen = [signals.faces[span(s)] for s in segments]
        parts["faces"] = np.array([float(np.mean(f[~np.isnan(f)] > 0)) if np.any(~np.isnan(f))
                                   else 0.0 for f in seen])
    total = sum(weights.get(k, 0.0) for k in parts) or 1.0
    for index, seg in enumerate(segments):
        seg.parts = {k: float(v[index]) for k, v in parts.items()}
        seg.score = sum(weights.get(k, 0.0) * float(v[index]) for k, v in parts.items()) / total


def _unit(values: FloatArray) -> FloatArray:
    low, high = float(np.min(values)), float(np.max(values))
    if high - low < 1e-9:
        return np.zeros(len(values))
    return (values - low) / (high - low)
