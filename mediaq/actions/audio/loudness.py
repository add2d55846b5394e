"""Loudness measured, and gain applied, by FFmpeg's own filters run in process.

FFmpeg's ``ebur128`` filter (ITU-R BS.1770 K-weighting, gating, oversampled true
peak) runs through ``av.filter.Graph``, so the numbers agree with
``ffmpeg -af ebur128=peak=true``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
import av.filter
from av.audio.frame import AudioFrame

from mediaq.actions.audio.encode import EncodePlan, encoded_outputs
from mediaq.actions.audio.source import decode_audio, first_audio_stream, read_tags
from mediaq.actions.avio import ProgressClock, configure_chain, open_media, reading
from mediaq.actions.base import ActionContext


@dataclass(frozen=True)
class Loudness:
    """BS.1770 integrated loudness (LUFS), loudness range (LU) and true peak (dBTP)."""

    integrated: float
    loudness_range: float
    true_peak: float


SILENCE_LUFS = -70.0  # BS.1770's absolute gate: nothing quieter is counted
PEAK_FLOOR_DB = -144.0  # reported for digital silence instead of -inf


class LoudnessMeter:
    """FFmpeg's ebur128 filter, fed decoded frames; reads its running result from the
    metadata it attaches to every frame it passes on."""

    def __init__(self) -> None:
        self.graph: av.filter.Graph | None = None
        self.integrated = SILENCE_LUFS
        self.loudness_range = 0.0
        self.peak = 0.0

    def push(self, frame: AudioFrame | None) -> None:
        if frame is not None and self.graph is None:
            self.graph = audio_graph(frame, [("ebur128", "metadata=1:peak=true:framelog=verbose")])
        if self.graph is None:
            return
        for measured in push_and_pull(self.graph, frame):
            meta = measured.metadata
            self.integrated = float(meta.get("lavfi.r128.I", self.integrated))
            self.loudness_range = float(meta.get("lavfi.r128.LRA", self.loudness_range))
            self.peak = max(self.peak, float(meta.get("lavfi.r128.true_peak", 0.0)))

    def result(self) -> Loudness:
        peak_db = 20 * math.log10(self.peak) if self.peak > 0 else PEAK_FLOOR_DB
        return Loudness(integrated=round(self.integrated, 2),
                        loudness_range=round(self.loudness_range, 2),
                        true_peak=round(max(peak_db, PEAK_FLOOR_DB), 2))


def audio_graph(first: AudioFrame, steps: list[tuple[str, str]]) -> av.filter.Graph:
    """abuffer -> steps -> abuffersink, shaped after the first decoded frame."""
    graph = av.filter.Graph()
    source = graph.add_abuffer(sample_rate=first.sample_rate, format=first.format.name,
                               layout=first.layout.name,
                               time_base=Fraction(1, first.sample_rate))
    return configure_chain(graph, source, steps, "abuffersink")


def push_and_pull(graph: av.filter.Graph, frame: AudioFrame | None) -> list[AudioFrame]:
    """Push ``frame`` (``None`` at the end) and take whatever the graph has ready."""
    graph.push(frame)
    ready: list[AudioFrame] = []
    while True:
        try:
            out = graph.pull()
        except (av.error.BlockingIOError, av.error.EOFError):
            return ready
        assert isinstance(out, AudioFrame)
        ready.append(out)


class Retimer:
    """Numbers frames by their sample count, as a filter graph wants: gapless, from zero."""

    def __init__(self) -> None:
        self.samples = 0

    def __call__(self, frame: AudioFrame) -> AudioFrame:
        frame.pts = self.samples
        frame.time_base = Fraction(1, frame.sample_rate)
        self.samples += frame.samples
        return frame


def measure_loudness(path: Path, clock: ProgressClock) -> Loudness:
    """Decode ``path``'s audio through the loudness meter."""
    meter = LoudnessMeter()
    retime = Retimer()
    with open_media(path) as container, reading(path):
        stream = first_audio_stream(container)
        for frame in decode_audio(container, stream, clock):
            meter.push(retime(frame))
        meter.push(None)
    return meter.result()


class GainStage:
    """A linear gain and, when asked, a look-ahead limiter with its ceiling in dBFS."""

    def __init__(self, gain_db: float, ceiling_db: float | None) -> None:
        self.steps = [("volume", f"volume={gain_db:.4f}dB:precision=double")]
        if ceiling_db is not None:
            # level=0: no auto make-up gain; latency=1: no delay, nothing lost at the end.
            limit = min(max(10 ** (ceiling_db / 20), 0.0625), 1.0)
            self.steps.append(("alimiter", f"limit={limit:.6f}:attack=5:release=50:"
                                           "level=0:latency=1"))
        self.graph: av.filter.Graph | None = None
        self.retime = Retimer()

    def process(self, frame: AudioFrame | None) -> list[AudioFrame]:
        if frame is not None:
            frame = self.retime(frame)
            if self.graph is None:
                self.graph = audio_graph(frame, self.steps)
        if self.graph is None:
            return []
        return push_and_pull(self.graph, frame)


def render_with_gain(ctx: ActionContext, plan: EncodePlan, gain_db: float,
                     ceiling_db: float | None, clock: ProgressClock) -> float:
    """Write ``plan`` from the source with the gain (and limiter) applied."""
    source = ctx.source_path
    stage = GainStage(gain_db, ceiling_db)
    with open_media(source) as container, reading(source):
        stream = first_audio_stream(container)
        tags = read_tags(container, stream)
        with encoded_outputs([plan], tags, source.name) as [output]:
            for frame in decode_audio(container, stream, clock):
                for shaped in stage.process(frame):
                    output.write(shaped)
            for shaped in stage.process(None):
                output.write(shaped)
        return output.seconds_written


