"""Time ranges of one or many videos joined into one MP4 with short crossfades, streaming.

Each range is decoded from the keyframe before it, re-timed to the output rate and
letterboxed to the output size. The crossfade is the ``fade`` transition of FFmpeg's
``xfade``/``acrossfade`` done on the decoded pictures and samples: over ``crossfade``
seconds each picture is ``(1 - a) * outgoing + a * incoming`` with ``a`` rising
linearly, and the audio of the two ranges overlaps with linear gain ramps. Doing it here
rather than in one filter graph keeps a single pipeline for any number of ranges: one
source is open at a time, and what is held is the outgoing range's last ``crossfade``
of pictures and the current range's audio. Memory does not grow with the number of
ranges (compile_mega joins hundreds).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
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
    Letterbox,
    SourceClip,
    add_h264_stream,
    constant_rate,
    encode_frame,
    even,
    frame_count,
    upright_frames,
)
from mediaq.actions.frames import seek_to
from mediaq.actions.media_output import MediaOutput, media_output

Planes = npt.NDArray[np.uint8]
Samples = npt.NDArray[np.float32]
AUDIO_RATE = 48_000


@dataclass(frozen=True)
class Piece:
    clip: SourceClip
    start: float
    end: float


@dataclass(frozen=True)
class ReelResult:
    frames: int
    duration: float
    encoder: str
    audio: bool


class ReelWriter:
    """Writes pieces into ``target`` (``size`` and ``rate``: the first piece's by
    default) with crossfades between consecutive pieces."""

    def __init__(self, ctx: ActionContext, target: Path, *, crossfade: float, crf: int,
                 preset: str, hardware: str, first: SourceClip,
                 size: tuple[int, int] | None = None, rate: Fraction | None = None,
                 audio: bool = True) -> None:
        self.ctx, self.target = ctx, target
        self.rate = rate or first.rate
        self.size = size or (even(first.height * first.aspect), even(first.height))
        self.fade_frames = max(0, round(crossfade * float(self.rate)))
        self.encoder = choose_video_encoder("h264", hardware, ctx)
        self.options = encoder_options(self.encoder, crf=crf, preset=preset, max_bitrate=None)
        self.want_audio = audio
        self.written = 0

    def write(self, pieces: Iterable[Piece], *, planned_seconds: float | None = None
              ) -> ReelResult:
        """Encode every piece in turn (``pieces`` may be a generator: one is inspected
        at a time); ``planned_seconds`` is for progress only."""
        clock = ProgressClock(self.ctx, planned_seconds or 1.0, "compiling", count_frames=True)
        with media_output(self.target, format="mp4",
                          options={"movflags": "+faststart"}) as out:
            video = out.add_stream(
                lambda c: add_h264_stream(c, self.encoder, width=self.size[0],
                                          height=self.size[1], rate=self.rate,
                                          options=self.options),
                drain=lambda s: s.encode(None))
            feed: AudioEncoderFeed | None = None
            if self.want_audio:
                a_out = out.add_stream(lambda c: add_audio_stream(
                    c, "aac", rate=AUDIO_RATE, layout="stereo", bit_rate=128_000))
                feed = AudioEncoderFeed(a_out)
                out.drain_on_finish(lambda: feed.push(None) if feed else [])
            held: deque[Planes] = deque()
            held_audio: Samples | None = None
            pending = iter(pieces)
            piece = next(pending, None)
            while piece is not None:
                following = next(pending, None)
                last = following is None
                fading_in = list(held)  # the outgoing piece's last pictures
                held.clear()
                samples = self._piece(out, video, piece, fading_in, held, feed, clock)
                if feed is not None and samples is not None:
                    overlap = min(round(self.fade_frames / float(self.rate) * AUDIO_RATE),
                                  samples.shape[1] // 2)
                    if held_audio is not None and overlap:
                        take = min(overlap, held_audio.shape[1])
                        ramp = np.linspace(0, 1, take, dtype=np.float32)
                        samples[:, :take] = (held_audio[:, :take] * (1 - ramp)
                                             + samples[:, :take] * ramp)
                    cut = samples.shape[1] if last else samples.shape[1] - overlap
                    held_audio = None if last else samples[:, cut:]
                    out.mux(feed.push(_audio_frame(samples[:, :cut])))
                if last:
                    while held:
                        self._encode(out, video, held.popleft(), clock)
                piece = following
        return ReelResult(frames=self.written,
                          duration=round(self.written / float(self.rate), 3),
                          encoder=self.encoder, audio=feed is not None)

    def _piece(self, out: MediaOutput, video: Any, piece: Piece, fading_in: list[Planes],
               held: deque[Planes], feed: AudioEncoderFeed | None,
               clock: ProgressClock) -> Samples | None:
        """Encode one piece's pictures, holding back its last ``fade_frames`` in ``held``;
        its audio, for the caller to join."""
        count = frame_count(piece.end - piece.start, self.rate)
        with open_media(piece.clip.path) as container, reading(piece.clip.path):
            vstream: Any = container.streams.video[0]
            vstream.codec_context.thread_type = "AUTO"
            astream: Any = container.streams.audio[0] if container.streams.audio else None
            capture = _AudioCapture(vstream, piece.start,
                                    round(count / float(self.rate) * AUDIO_RATE)) \
                if feed is not None else None
            seek_to(container, vstream, max(piece.start - 0.001, 0.0))
            frames = upright_frames(container, vstream, astream,
                                    capture.add if capture and astream is not None else None)
            fit = Letterbox(piece.clip.aspect, *self.size)
            for index, frame in enumerate(constant_rate(frames, start=piece.start,
                                                        rate=self.rate, count=count)):
                planes: Planes = fit(frame).to_ndarray()  # type: ignore[assignment]
                if index < len(fading_in):
                    mix = (index + 1) / (len(fading_in) + 1)
                    planes = (fading_in[index] * (1 - mix) + planes * mix).astype(np.uint8)
                held.append(planes)
                if len(held) > self.fade_frames:
                    self._encode(out, video, held.popleft(), clock)
            if capture is not None and astream is not None:
                for seconds, _ in frames:  # the audio demuxed after the piece's last frame
                    if seconds > piece.end + 1.0:
                        break
        return capture.samples if capture is not None else None

    def _encode(self, out: MediaOutput, video: Any, planes: Planes,
                clock: ProgressClock) -> None:
        frame = VideoFrame.from_ndarray(planes, format="yuv420p")
        out.mux(encode_frame(video, frame, self.written))
        self.written += 1
        clock.tick(self.written / float(self.rate))


class _AudioCapture:
    """The audio of one piece as a (2, n) float array at 48 kHz: samples placed by their
    time, silence where the source has none (or no audio at all)."""

    def __init__(self, vstream: Any, start: float, length: int) -> None:
        origin = float(vstream.start_time * vstream.time_base) if vstream.start_time else 0.0
        self.begin = origin + start
        self.samples = np.zeros((2, max(length, 1)), np.float32)
        self.resampler = AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)
        self.offset: int | None = None

    def add(self, frame: AudioFrame) -> None:
        if frame.time is None:
            return
        # Anchored on the first frame's time, then laid end to end: a resampler that
        # changes the rate hands back chunks that are not one-for-one with its input.
        if self.offset is None:
            self.offset = round((frame.time - self.begin) * AUDIO_RATE)
        for chunk in self.resampler.resample(frame):
            data = chunk.to_ndarray()
            lo = max(self.offset, 0)
            hi = min(self.offset + data.shape[1], self.samples.shape[1])
            if hi > lo:
                self.samples[:, lo:hi] = data[:, lo - self.offset:hi - self.offset]
            self.offset += data.shape[1]


def _audio_frame(samples: Samples) -> AudioFrame:
    frame = AudioFrame.from_ndarray(np.ascontiguousarray(samples, dtype=np.float32),
                                    format="fltp", layout="stereo")
    frame.sample_rate = AUDIO_RATE
    return frame
