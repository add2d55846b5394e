"""Cutting one time range of a video into its own MP4: packets copied when the range
starts on a keyframe and ends on the next range's keyframe (or the end), frames
re-encoded otherwise; and a still of a range's middle frame as its thumbnail."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from mediaq.actions.avio import (
    AudioEncoderFeed,
    add_audio_stream,
    choose_video_encoder,
    encoder_options,
    open_media,
    output_layout,
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
from mediaq.errors import PermanentError


@dataclass(frozen=True)
class KeyPacket:
    seconds: float  # presentation time from the stream's start
    dts: int


def keyframes(path: Path) -> tuple[list[KeyPacket], int]:
    """The video's keyframes, by demuxing packets only (no decoding), and its packet count."""
    found: list[KeyPacket] = []
    count = 0
    with open_media(path) as container, reading(path):
        stream: Any = container.streams.video[0]
        origin = stream.start_time or 0
        for packet in container.demux(stream):
            if packet.dts is None:
                continue  # the demuxer's flush packet
            count += 1
            if packet.is_keyframe and packet.pts is not None:
                found.append(KeyPacket(float((packet.pts - origin) * stream.time_base),
                                       packet.dts))
    return found, count


def keyframe_at(keys: list[KeyPacket], seconds: float, tolerance: float) -> KeyPacket | None:
    return next((k for k in keys if abs(k.seconds - seconds) <= tolerance), None)


def copy_range(source: Path, target: Path, start: KeyPacket, end: KeyPacket | None) -> None:
    """Remux the packets from keyframe ``start`` up to keyframe ``end`` (None: the end),
    by decode order, with the audio packets of the same time span."""
    with open_media(source) as container, reading(source), \
            media_output(target, format="mp4", options={"movflags": "+faststart"}) as out:
        video: Any = container.streams.video[0]
        audio: Any = container.streams.audio[0] if container.streams.audio else None
        v_out = out.add_stream(lambda c: c.add_stream_from_template(video))
        a_out = out.add_stream(lambda c: c.add_stream_from_template(audio)) \
            if audio is not None else None
        v_origin = video.start_time or 0
        start_s = start.seconds
        end_s = end.seconds if end is not None else float("inf")
        seek_to(container, video, start_s)
        v_shift = v_origin + round(start_s / video.time_base)
        # Stop once both streams have passed the range (they interleave loosely).
        done = {video.index: False} | ({audio.index: False} if audio is not None else {})
        for packet in container.demux(*[s for s in (video, audio) if s is not None]):
            if packet.dts is None or packet.pts is None:
                continue
            if packet.stream is video:
                if packet.dts < start.dts:
                    continue
                if end is not None and packet.dts >= end.dts:
                    done[video.index] = True
                    if all(done.values()):
                        break
                    continue
                packet.pts -= v_shift
                packet.dts -= v_shift
                packet.stream = v_out
            else:
                a_origin = audio.start_time or 0
                seconds = float((packet.pts - a_origin) * audio.time_base)
                if seconds < start_s - 1e-6:
                    continue
                if seconds >= end_s - 1e-6:
                    done[audio.index] = True
                    if all(done.values()):
                        break
                    continue
                a_shift = a_origin + round(start_s / audio.time_base)
                packet.pts -= a_shift
                packet.dts -= a_shift
                packet.stream = a_out
            out.mux(packet)


def encode_range(ctx: ActionContext, clip: SourceClip, target: Path, start: float,
                 end: float) -> int:
    """Decode from the keyframe before ``start`` and encode the frames of [start, end)
    at the source's rate (H.264/AAC); the number of frames written."""
    count = frame_count(end - start, clip.rate)
    params = ctx.params
    encoder = choose_video_encoder("h264", params.get("hardware", "auto"), ctx)
    width, height = even(clip.height * clip.aspect), even(clip.height)
    with open_media(clip.path) as container, reading(clip.path), \
            media_output(target, format="mp4", options={"movflags": "+faststart"}) as out:
        vstream: Any = container.streams.video[0]
        vstream.codec_context.thread_type = "AUTO"
        astream: Any = container.streams.audio[0] if container.streams.audio else None
        video = out.add_stream(
            lambda c: add_h264_stream(c, encoder, width=width, height=height, rate=clip.rate,
                                      options=encoder_options(encoder, crf=params["crf"],
                                                              preset=params["preset"],
                                                              max_bitrate=None)),
            drain=lambda s: s.encode(None))
        feed: AudioEncoderFeed | None = None
        on_audio = None
        if astream is not None:
            a_out = out.add_stream(lambda c: add_audio_stream(
                c, "aac", rate=48_000, layout=output_layout(min(clip.audio_channels, 2)),
                bit_rate=128_000))
            v_origin = float(vstream.start_time * vstream.time_base) if vstream.start_time \
                else 0.0
            feed = AudioEncoderFeed(a_out, origin=v_origin + start)
            out.drain_on_finish(lambda: feed.push(None) if feed else [])
            cut_from, cut_to = v_origin + start, v_origin + end

            def on_audio(frame: Any) -> None:
                if frame.time is None or feed is None:
                    return
                frame_end = frame.time + frame.samples / frame.sample_rate
                if frame_end > cut_from and frame.time < cut_to:
                    out.mux(feed.push(frame))

        seek_to(container, vstream, max(start - 0.001, 0.0))
        scale = Scaler(width, height)
        frames = upright_frames(container, vstream, astream, on_audio)
        written = 0
        for frame in constant_rate(frames, start=start, rate=clip.rate, count=count):
            out.mux(encode_frame(video, scale.fresh(frame), written))
            written += 1
            ctx.check()
        if astream is not None:
            for seconds, _ in frames:  # the audio demuxed after the range's last frame
                if seconds > end + 1.0:
                    break
    if written == 0:
        raise PermanentError(f"{clip.path.name}: no frame to cut between {start:.3f} s "
                             f"and {end:.3f} s")
    return written


def still_at(path: Path, seconds: float, target: Path, width: int = 320) -> None:
    """A JPEG of the frame shown at ``seconds``, ``width`` pixels wide."""
    with open_media(path) as container, reading(path):
        stream: Any = container.streams.video[0]
        seek_to(container, stream, seconds)
        picture = None
        for t, frame in upright_frames(container, stream):
            picture = frame
            if t >= seconds - 1e-3:
                break
        if picture is None:
            raise PermanentError(f"{path.name}: no frame to show at {seconds:.3f} s")
        image = picture.to_image()  # type: ignore[no-untyped-call]
    height = max(2, round(image.height * width / image.width))
    image.resize((width, height), Image.Resampling.BILINEAR).save(target, "JPEG", quality=85)
