"""``compile_videos``: several videos joined into one MP4, in turn or as a 2x2 grid."""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

from av.audio.frame import AudioFrame
from av.container import InputContainer
from av.video.frame import VideoFrame

from mediaq.actions import action
from mediaq.actions.avio import (
    BITRATE_SCHEMA,
    ProgressClock,
    choose_video_encoder,
    encoder_options,
    open_media,
    parse_bitrate,
    reading,
)
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.actions.clip import (
    HARDWARE_SCHEMA,
    MAX_RATE,
    PRESETS,
    AudioSink,
    AudioTimeline,
    Canvas,
    Letterbox,
    SourceClip,
    add_h264_stream,
    constant_rate,
    encode_frame,
    even,
    frame_count,
    inspect_clip,
    safe_stem,
    upright_frames,
)
from mediaq.actions.media_output import MediaOutput, media_output
from mediaq.errors import InputRefused, PermanentError


@action("compile_videos", {
    "properties": {
        "inputs": {"type": "array", "maxItems": 64,
                   "items": {"type": "string", "minLength": 1, "maxLength": 4096}},
        "layout": {"enum": ["concat", "grid"], "default": "concat"},
        "width": {"type": "integer", "minimum": 64, "maximum": 3840, "multipleOf": 2},
        "height": {"type": "integer", "minimum": 64, "maximum": 2160, "multipleOf": 2},
        "until": {"enum": ["shortest", "longest"], "default": "shortest"},
        "fps": {"type": "number", "minimum": 1, "maximum": MAX_RATE},
        "audio": {"type": "boolean", "default": True},
        "audio_bitrate": {**BITRATE_SCHEMA, "default": "128k"},
        "crf": {"type": "integer", "minimum": 0, "maximum": 51, "default": 23},
        "preset": {"enum": PRESETS, "default": "veryfast"},
        "hardware": HARDWARE_SCHEMA,
    },
})
def compile_videos(ctx: ActionContext) -> ActionResult:
    """Join several videos into one MP4: one after another, or as a 2x2 mosaic.

    ``inputs`` are paths, relative to the source's folder or absolute, inside that folder
    or below it. The job's source comes first unless ``inputs`` names it (then the list
    order is kept); with no ``inputs`` it is compiled alone. concat: each clip scaled and
    padded to ``width`` x ``height`` (default: the first clip's size), audio joined with
    silence where a clip has none. grid: up to four clips in quadrants of ``width`` x
    ``height`` (default 1280x720), lasting until the shortest or longest ends (a clip
    that ended holds its last frame); the audio is the first clip's.
    """
    paths = compile_inputs(ctx.source_path, ctx.params.get("inputs") or [])
    layout = ctx.params["layout"]
    if layout == "grid" and len(paths) > 4:
        raise PermanentError(f"{ctx.source_path.name}: a grid takes at most 4 videos, "
                             f"got {len(paths)}")
    clips = [inspect_clip(path) for path in paths]
    first = clips[0]
    if layout == "grid":
        size = (ctx.params.get("width", 1280), ctx.params.get("height", 720))
    else:  # the first clip's picture in square pixels
        size = (ctx.params.get("width", even(first.height * first.aspect)),
                ctx.params.get("height", even(first.height)))
    rate = Fraction(ctx.params["fps"]).limit_denominator(1001) if ctx.params.get("fps") \
        else first.rate
    path = ctx.output_path(f"{safe_stem(ctx.source_path)}_compilation.mp4")
    with media_output(path, format="mp4", options={"movflags": "+faststart"}) as output:
        writer = CompilationWriter(ctx, output, clips, size, rate)
        if layout == "grid":
            frames = writer.write_grid(ctx.params["until"])
        else:
            frames = writer.write_concat()
    duration = round(frames / float(rate), 3)
    return ActionResult(
        outputs=[OutputFile(path, role="rendition", meta={
            "format": "mp4", "layout": layout, "width": size[0], "height": size[1],
            "duration": duration, "inputs": len(clips)})],
        data={"layout": layout, "inputs": [str(c.path) for c in clips], "width": size[0],
              "height": size[1], "fps": float(rate), "frames": frames, "duration": duration,
              "audio": writer.audio is not None, "encoder": writer.encoder})


def compile_inputs(source: Path, listed: list[str]) -> list[Path]:
    """The clips to compile, each checked to lie in the source's folder or below it."""
    folder = source.parent.resolve()
    paths: list[Path] = []
    for text in listed:
        candidate = Path(text) if Path(text).is_absolute() else source.parent / text
        resolved = candidate.resolve()  # follows symlinks and ".." before the check
        if not resolved.is_relative_to(folder):
            raise InputRefused(f"{candidate.name}: {text} is outside the source's folder "
                               f"{folder}; only files in it or below it can be compiled")
        paths.append(resolved)
    own = source.resolve()
    return paths if own in paths else [own, *paths]


class CompilationWriter:
    """One H.264/AAC MP4 fed clip by clip (concat) or by quadrants (grid)."""

    def __init__(self, ctx: ActionContext, output: MediaOutput, clips: list[SourceClip],
                 size: tuple[int, int], rate: Fraction) -> None:
        self.ctx, self.output, self.clips, self.size, self.rate = ctx, output, clips, size, rate
        params = ctx.params
        self.encoder = choose_video_encoder("h264", params["hardware"], ctx)
        self.video = output.add_stream(
            lambda container: add_h264_stream(
                container, self.encoder, width=size[0], height=size[1], rate=rate,
                options=encoder_options(self.encoder, crf=params["crf"],
                                        preset=params["preset"], max_bitrate=None)),
            drain=lambda stream: stream.encode(None))
        self.audio = self._audio_track(params)
        self.frames = 0
        self.clock = ProgressClock(ctx, self._planned_seconds(params), "compiling",
                                   count_frames=True)

    def _audio_track(self, params: dict[str, Any]) -> AudioTimeline | None:
        # A grid plays the first clip's sound; a concatenation joins every clip's.
        heard = self.clips[:1] if params["layout"] == "grid" else self.clips
        voiced = [c for c in heard if c.audio_rate is not None]
        if not params["audio"] or not voiced:
            return None
        channels = min(max(c.audio_channels for c in voiced), 2)
        bit_rate = parse_bitrate(params["audio_bitrate"])
        return self.output.add_stream(
            lambda container: AudioTimeline(container, rate=48_000, channels=channels,
                                            bit_rate=bit_rate),
            drain=lambda timeline: timeline.finish())

    def _planned_seconds(self, params: dict[str, Any]) -> float:
        lengths = [c.duration for c in self.clips]
        if params["layout"] == "concat":
            return sum(lengths)
        return min(lengths) if params["until"] == "shortest" else max(lengths)

    # ---- concat

    def write_concat(self) -> int:
        """Every clip in turn, letterboxed to the output size; returns the frame count."""
        for clip in self.clips:
            count = frame_count(clip.duration, self.rate)
            end_sample = self._audio_end(self.frames + count)
            fit = Letterbox(clip.aspect, *self.size)
            for frame in self._clip_frames(clip, count, end_sample):
                self._encode(fit(frame))
            if self.audio is not None:
                self._mux(self.audio.fill(end_sample))
        return self.frames

    # ---- grid

    def write_grid(self, until: str) -> int:
        """Up to four clips side by side in quadrants; returns the frame count."""
        counts = [frame_count(c.duration, self.rate) for c in self.clips]
        total = min(counts) if until == "shortest" else max(counts)
        quad_w, quad_h = self.size[0] // 4 * 2, self.size[1] // 4 * 2
        end_sample = self._audio_end(total)
        with contextlib.ExitStack() as stack:
            streams: list[Iterator[VideoFrame]] = []
            for index, (clip, count) in enumerate(zip(self.clips, counts, strict=True)):
                frames = self._clip_frames(clip, min(count, total),
                                           end_sample if index == 0 else None)
                streams.append(stack.enter_context(contextlib.closing(frames)))
            fits = [Letterbox(clip.aspect, quad_w, quad_h) for clip in self.clips]
            canvas = Canvas(*self.size)  # quadrants are overwritten in place, frame by frame
            for _ in range(total):
                for index, stream in enumerate(streams):
                    frame = next(stream, None)
                    if frame is not None:  # an ended clip holds its last frame
                        canvas.paste(fits[index](frame), index % 2 * quad_w,
                                     index // 2 * quad_h)
                self._encode(canvas.frame())
            if self.audio is not None:
                for _ in streams[0]:  # the first clip's audio up to the end
                    pass
                self._mux(self.audio.fill(end_sample))
        return self.frames

    # ---- shared

    def _clip_frames(self, clip: SourceClip, count: int,
                     audio_until: int | None) -> Generator[VideoFrame, None, None]:
        """``count`` upright frames of ``clip`` at the output rate; its audio (when
        ``audio_until`` is given) goes onto the timeline as it is demuxed."""
        with open_media(clip.path) as container, reading(clip.path):
            yield from self._decode_clip(container, clip, count, audio_until)

    def _decode_clip(self, container: InputContainer, clip: SourceClip, count: int,
                     audio_until: int | None) -> Iterator[VideoFrame]:
        vstream: Any = container.streams.video[0]
        vstream.codec_context.thread_type = "AUTO"
        astream = container.streams.audio[0] if container.streams.audio else None
        on_audio: AudioSink | None = None
        if self.audio is not None and astream is not None and audio_until is not None:
            on_audio = self._audio_sink(self.audio, audio_until)
        frames = upright_frames(container, vstream, astream, on_audio)
        produced = 0
        for frame in constant_rate(frames, start=0.0, rate=self.rate, count=count):
            produced += 1
            yield frame
        if produced == 0:
            raise PermanentError(f"{clip.path.name}: the video stream has no decodable frame")
        if self.audio is not None and on_audio is not None and audio_until is not None:
            for _ in frames:  # the clip's audio that comes after its last video frame
                pass
            self._mux(self.audio.add(None, audio_until))

    def _audio_sink(self, timeline: AudioTimeline, until: int) -> AudioSink:
        """Where a clip's decoded audio goes: onto the timeline, up to sample ``until``."""
        timeline.begin_clip()

        def sink(frame: AudioFrame) -> None:
            self._mux(timeline.add(frame, until))

        return sink

    def _audio_end(self, frames: int) -> int:
        return self.audio.samples_at(frames / float(self.rate)) if self.audio else 0

    def _encode(self, frame: VideoFrame) -> None:
        self._mux(encode_frame(self.video, frame, self.frames))
        self.frames += 1
        self.clock.tick(self.frames / float(self.rate))

    def _mux(self, packets: list[Any]) -> None:
        self.output.mux(packets)
