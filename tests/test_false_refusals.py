"""Files other decoders read must not be refused (issue 22's corpus): a PDF padded with
NUL bytes after %%EOF, audio whose packet times understate what it decodes to (the WMA
Pro case), raw AC-3 / E-AC-3, Theora with dropped (empty) frames; and an audio stream
with no audio data fails with a reason, not a crash. Sources are made by Debian's
ffmpeg and reportlab."""

from __future__ import annotations

import struct
import subprocess
import uuid
from pathlib import Path

import av
import pytest
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

from mediaq.errors import PermanentError
from tests.helpers import run_action as run
from tests.media_judge import audio_stream, decodes_fully, duration_of, ffmpeg, needs_ffmpeg

# ASF's File Properties Object, which holds the play duration the demuxer reports.
ASF_FILE_PROPERTIES = uuid.UUID("8CABDCA1-A947-11CF-8EE4-00C00C205365").bytes_le


def padded_pdf(path: Path, padding: int) -> Path:
    pdf = canvas.Canvas(str(path), pagesize=A4, invariant=1)
    pdf.drawString(72, 700, "Padded after the end")
    pdf.showPage()
    pdf.save()
    with path.open("ab") as fp:
        fp.write(b"\x00" * padding)
    return path


@pytest.mark.parametrize("padding", [512, 20_000])
def test_pdf_with_nul_padding_after_eof_is_read(tmp_path: Path, padding: int) -> None:
    source = padded_pdf(tmp_path / "padded.pdf", padding)
    assert run("validate_document", source, tmp_path / "v").data["page_count"] == 1
    text = run("extract_text", source, tmp_path / "t").outputs[0].staging_path.read_text()
    assert "Padded after the end" in text


def test_pdf_cut_before_eof_is_still_truncated(tmp_path: Path) -> None:
    source = padded_pdf(tmp_path / "cut.pdf", 0)
    data = source.read_bytes()
    source.write_bytes(data[: data.rindex(b"%%EOF")] + b"\x00" * 64)
    with pytest.raises(PermanentError, match=r"cut\.pdf: truncated PDF"):
        run("validate_document", source, tmp_path / "v")


@needs_ffmpeg
def test_audio_stamped_short_but_complete_is_valid(tmp_path: Path) -> None:
    """Packets stamped at half rate, header promising the full length: what WMA Pro files
    look like to the demuxer. Debian's ffmpeg decodes all of it; so must we."""
    halved = tmp_path / "halved.wma"
    ffmpeg("-f", "lavfi", "-i", "sine=d=4:sample_rate=44100", "-c:a", "wmav2",
           "-bsf:a", "setts=ts=TS/2", halved)
    data = bytearray(halved.read_bytes())
    at = data.index(ASF_FILE_PROPERTIES) + 16 + 8 + 16 + 8 + 8 + 8
    play, send, preroll = struct.unpack_from("<QQQ", data, at)
    struct.pack_into("<QQ", data, at, play * 2 - preroll * 10_000, send * 2)
    source = tmp_path / "stamped_short.wma"
    source.write_bytes(bytes(data))
    assert duration_of(source) == pytest.approx(4.0, abs=0.2)  # what the header says
    decoded = subprocess.run(["ffmpeg", "-v", "error", "-i", str(source), "-f", "s16le",
                              "-"], capture_output=True, check=True).stdout
    assert len(decoded) / 2 / 44_100 == pytest.approx(4.0, abs=0.1)

    result = run("validate_audio", source, tmp_path / "v")
    assert result.data["valid"] is True


@needs_ffmpeg
def test_audio_really_cut_is_still_truncated(tmp_path: Path) -> None:
    """The decoding second look does not let a cut file through (FLAC's header counts
    its samples)."""
    whole = tmp_path / "whole.flac"
    ffmpeg("-f", "lavfi", "-i", "anoisesrc=d=4:sample_rate=44100", "-c:a", "flac", whole)
    data = whole.read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(PermanentError, match=r"cut\.flac: truncated"):
        run("validate_audio", cut, tmp_path / "v")


@needs_ffmpeg
@pytest.mark.parametrize("codec", ["ac3", "eac3"])
def test_raw_ac3_and_eac3_are_accepted(tmp_path: Path, codec: str) -> None:
    source = tmp_path / f"broadcast.{codec}"
    ffmpeg("-f", "lavfi", "-i", "sine=d=3:sample_rate=48000", "-ac", "2", "-c:a", codec, source)
    assert run("validate_audio", source, tmp_path / "v").data["codec"] == codec
    out = run("transcode_audio", source, tmp_path / "t").outputs[0].staging_path
    stream = audio_stream(out)
    assert stream is not None and stream["codec_name"] == "aac"
    assert duration_of(out) == pytest.approx(3.0, abs=0.1)


@needs_ffmpeg
def test_audio_stream_without_audio_data_fails_with_a_reason(tmp_path: Path) -> None:
    """A one-frame Theora 'cover' whose Vorbis stream holds no packet."""
    source = tmp_path / "cover.ogg"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25", "-f", "lavfi", "-i",
           "sine=d=3", "-frames:v", "1", "-c:v", "libtheora", "-c:a", "libvorbis", "-t", "3",
           source)
    with pytest.raises(PermanentError, match=r"^cover\.ogg: the audio stream holds no "
                                             r"audio data$"):
        run("transcode_audio", source, tmp_path / "t")


def theora_with_dropped_frames(path: Path, source: Path) -> Path:
    """Debian's ffmpeg's Theora, remuxed with frames 5-7 replaced by empty packets: how
    Theora encoders write a repeated frame. (PyAV only copies packets here.)"""
    with av.open(str(source)) as src, av.open(str(path), "w", format="ogg") as out:
        stream = src.streams.video[0]
        copy = out.add_stream_from_template(stream, opaque=True)
        for index, packet in enumerate(p for p in src.demux(stream) if p.size):
            if 4 <= index <= 6:
                empty = av.Packet(b"")
                empty.pts, empty.dts, empty.time_base = packet.pts, packet.dts, packet.time_base
                packet = empty
            packet.stream = copy
            out.mux(packet)
    return path


@needs_ffmpeg
def test_theora_with_dropped_frames_decodes(tmp_path: Path) -> None:
    plain = tmp_path / "plain.ogv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=2", "-c:v",
           "libtheora", plain)
    source = theora_with_dropped_frames(tmp_path / "dropped.ogv", plain)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(source), "-f", "null", "-"],
                   check=True)  # Debian's ffmpeg reads it
    assert run("validate_video", source, tmp_path / "v").data["valid"] is True
    out = run("transcode_video", source, tmp_path / "t", resolution="source",
              preset="ultrafast").outputs[0].staging_path
    assert decodes_fully(out)
    assert duration_of(out) == pytest.approx(2.0, abs=0.15)
    for action in ("detect_scenes", "generate_sprite_sheet", "generate_thumbnails"):
        assert run(action, source, tmp_path / action).outputs, action
