"""Time ranges of one video joined into one MP4 with short crossfades, streaming.

Each range is decoded from the keyframe before it and re-timed to the source's rate.
The crossfade is the ``fade`` transition of FFmpeg's ``xfade``/``acrossfade`` done on
the decoded pictures and samples: over ``crossfade`` seconds each picture is the mix
``(1 - a) * outgoing + a * incoming`` with ``a`` rising linearly, and the audio of the
two ranges overlaps with linear gain ramps. Doing it here instead of in a filter graph
keeps one graph-free pipeline for any number of ranges; what is held in memory is the
outgoing range's last ``crossfade`` of pictures and its audio (one range at a time).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.video.frame import VideoFrame

from mediaq.actions.avio import (
    AudioEncoderFeed,
    ProgressClock,
    add_audio_stream,
    choose_video_encoder,
    encoder_options,
    open_media,
    reading,
)
from mediaq.actions.base import ActionContext
from mediaq.actions.clip import (
    SourceClip,
    add_h264_stream,
    constant_rate,
    encode_frame,
    even,
    frame_count,
    upright_frames,
)
from mediaq.actions.frames import Scaler, seek_to
from mediaq.actions.media_output import media_output

Planes = npt.NDArray[np.uint8]
Samples = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ReelResult:
    frames: int
    duration: float
    encoder: str
    audio: bool


class ReelWriter:
    """Writes ranges of ``clip`` into ``target`` with crossfades between them."""

    def __init__(self, ctx: ActionContext, clip: SourceClip, target: Path, *,
                 crossfade: float, crf: int, preset: str, hardware: str) -> None:
        self.ctx, self.clip, self.target = ctx, clip, target
        self.rate = clip.rate
        self.size = (even(clip.height * clip.aspect), even(clip.height))
        self.fade_frames = max(0, round(crossfade * float(self.rate)))
        self.audio_rate = clip.audio_rate
        self.encoder = choose_video_encoder("h264", hardware, ctx)
        self.options = encoder_options(self.encoder, crf=crf, preset=preset, max_bitrate=None)
        self.written = 0

    def fade_samples(self) -> int:
        assert self.audio_rate is not None
        return round(self.fade_frames / float(self.rate) * self.audio_rate)

    def write(self, ranges: list[tuple[float, float]]) -> ReelResult:
        counts = [frame_count(end - start, self.rate) for start, end in ranges]
        planned = (sum(counts) - self.fade_frames * (len(ranges) - 1)) / float(self.rate)
        clock = ProgressClock(self.ctx, planned, "compiling reel", count_frames=True)
        with open_media(self.clip.path) as container, reading(self.clip.path), \
                media_output(self.target, format="mp4",
                             options={"movflags": "+faststart"}) as out:
            video = out.add_stream(
                lambda c: add_h264_stream(c, self.encoder, width=self.size[0],
                                          height=self.size[1], rate=self.rate,
                                          options=self.options),
                drain=lambda s: s.encode(None))
            astream: Any = container.streams.audio[0] if container.streams.audio else None
            feed = None
            if astream is not None and self.audio_rate:
                a_out = out.add_stream(lambda c: add_audio_stream(
                    c, "aac", rate=self.audio_rate or 48_000, layout="stereo", bit_rate=128_000))
                feed = AudioEncoderFeed(a_out)
                out.drain_on_finish(lambda: feed.push(None) if feed else [])
            held: deque[Planes] = deque()
            held_audio: Samples | None = None
            vstream: Any = container.streams.video[0]
            vstream.codec_context.thread_type = "AUTO"
            for number, ((start, end), count) in enumerate(zip(ranges, counts, strict=True)):
                last = number == len(ranges) - 1
                fading_in = list(held)  # the outgoing range's last pictures
                held.clear()
                capture = _AudioCapture(vstream, start,
                                        round(count / float(self.rate) * (self.audio_rate or 1)),
                                        self.audio_rate) if feed is not None else None
                seek_to(container, vstream, max(start - 0.001, 0.0))
                frames = upright_frames(container, vstream, astream,
                                        capture.add if capture else None)
                scale = Scaler(*self.size)
                for index, frame in enumerate(constant_rate(frames, start=start,
                                                            rate=self.rate, count=count)):
                    planes: Planes = scale(frame).to_ndarray()  # type: ignore[assignment]
                    if index < len(fading_in):
                        mix = (index + 1) / (len(fading_in) + 1)
                        planes = (fading_in[index] * (1 - mix) + planes * mix).astype(np.uint8)
                    held.append(planes)
                    if len(held) > self.fade_frames:
                        self._encode(out, video, held.popleft(), clock)
                if capture is not None and feed is not None:
                    for seconds, _ in frames:  # audio demuxed after the range's last frame
                        if seconds > end + 1.0:
                            break
                    samples = capture.samples
                    overlap = min(self.fade_samples(), samples.shape[1] // 2)
                    if held_audio is not None and overlap:
                        ramp = np.linspace(0, 1, overlap, dtype=np.float32)
                        take = min(overlap, held_audio.shape[1])
                        samples[:, :take] = (held_audio[:, :take] * (1 - ramp[:take])
                                             + samples[:, :take] * ramp[:take])
                    keep = samples if last else samples[:, :samples.shape[1] - overlap]
                    held_audio = None if last else samples[:, samples.shape[1] - overlap:]
                    out.mux(feed.push(_audio_frame(keep, self.audio_rate or 48_000)))
                if last:
                    while held:
                        self._encode(out, video, held.popleft(), clock)
        duration = self.written / float(self.rate)
        return ReelResult(frames=self.written, duration=round(duration, 3),
                          encoder=self.encoder, audio=feed is not None)

    def _encode(self, out: Any, video: Any, planes: Planes, clock: ProgressClock) -> None:
        frame = VideoFrame.from_ndarray(planes, format="yuv420p")
        out.mux(encode_frame(video, frame, self.written))
        self.written += 1
        clock.tick(self.written / float(self.rate))


class _AudioCapture:
    """The audio of one range as a (2, n) float array at the source's rate: samples
    placed by their time, silence where the source has none."""

    def __init__(self, vstream: Any, start: float, length: int,
                 rate: int | None) -> None:
        self.rate = rate or 48_000
        origin = float(vstream.start_time * vstream.time_base) if vstream.start_time else 0.0
        self.begin = origin + start
        self.samples = np.zeros((2, max(length, 1)), np.float32)
        # Format and layout only: the rate stays, so sample counts are kept and each
        # chunk's place follows from its frame's time.
        self.resampler = AudioResampler(format="fltp", layout="stereo", rate=self.rate)

    def add(self, frame: AudioFrame) -> None:
        if frame.time is None:
            return
        offset = round((frame.time - self.begin) * self.rate)
        for chunk in self.resampler.resample(frame):
            data = chunk.to_ndarray()
            lo, hi = max(offset, 0), min(offset + data.shape[1], self.samples.shape[1])
            if hi > lo:
                self.samples[:, lo:hi] = data[:, lo - offset:hi - offset]
            offset += data.shape[1]


def _audio_frame(samples: Samples, rate: int) -> AudioFrame:
    frame = AudioFrame.from_ndarray(np.ascontiguousarray(samples, dtype=np.float32),
                                    format="fltp", layout="stereo")
    frame.sample_rate = rate
    return frame
