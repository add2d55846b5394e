"""What an upload is, from its first bytes: files made by ffmpeg and ImageMagick (the
independent makers), a PDF and office documents, text; and what is refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mediaq.errors import Refused
from mediaq.upload_files import (
    intent,
    parse_tus_metadata,
    safe_filename,
    sniff_file,
    tus_metadata_header,
)
from tests.helpers import requires_tool

FFMPEG_MADE = {
    "clip.mp4": ("video/mp4", ["-f", "lavfi", "-i", "testsrc=size=64x48:rate=5:duration=0.4",
                               "-pix_fmt", "yuv420p"]),
    "clip.mov": ("video/quicktime", ["-f", "lavfi", "-i", "testsrc=size=64x48:duration=0.4"]),
    "clip.mkv": ("video/x-matroska", ["-f", "lavfi", "-i", "testsrc=size=64x48:duration=0.4"]),
    "clip.webm": ("video/x-matroska", ["-f", "lavfi", "-i", "testsrc=size=64x48:duration=0.4",
                                       "-c:v", "libvpx"]),
    "clip.ts": ("video/mp2t", ["-f", "lavfi", "-i", "testsrc=size=64x48:duration=0.4"]),
    "clip.avi": ("video/x-msvideo", ["-f", "lavfi", "-i", "testsrc=size=64x48:duration=0.4"]),
    "tone.wav": ("audio/wav", ["-f", "lavfi", "-i", "sine=duration=0.3"]),
    "tone.mp3": ("audio/mpeg", ["-f", "lavfi", "-i", "sine=duration=0.3"]),
    "tone.flac": ("audio/flac", ["-f", "lavfi", "-i", "sine=duration=0.3"]),
    "tone.ogg": ("audio/ogg", ["-f", "lavfi", "-i", "sine=duration=0.3", "-c:a", "libopus"]),
    "tone.m4a": ("audio/mp4", ["-f", "lavfi", "-i", "sine=duration=0.3", "-c:a", "aac"]),
}
MAGICK_MADE = {"a.png": "image/png", "a.gif": "image/gif", "a.tiff": "image/tiff",
               "a.webp": "image/webp", "a.jpg": "image/jpeg"}


@requires_tool("ffmpeg")
@pytest.mark.parametrize("name", sorted(FFMPEG_MADE))
def test_ffmpeg_made_media_is_recognised(name: str, tmp_path: Path) -> None:
    kind, args = FFMPEG_MADE[name]
    path = tmp_path / name
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args, str(path)],
                   check=True, timeout=60)
    # the name does not count: the same bytes under another name are the same kind
    renamed = path.rename(tmp_path / "upload.bin")
    assert sniff_file(renamed) == kind


@requires_tool("convert")
@pytest.mark.parametrize("name", sorted(MAGICK_MADE))
def test_imagemagick_made_images_are_recognised(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    subprocess.run(["convert", "-size", "32x24", "gradient:red-blue", str(path)], check=True,
                   timeout=60)
    assert sniff_file(path.rename(tmp_path / "upload")) == MAGICK_MADE[name]


def test_text_pdf_office_and_refusals(tmp_path: Path) -> None:
    from reportlab.pdfgen import canvas

    pdf = canvas.Canvas(str(tmp_path / "a.pdf"))
    pdf.drawString(72, 720, "an uploaded page")
    pdf.save()
    assert sniff_file(tmp_path / "a.pdf") == "application/pdf"
    text = tmp_path / "notes.txt"
    text.write_text("Grüße, a plain note\n" * 300, encoding="utf-8")  # cut mid-character
    assert sniff_file(text) == "text/plain"
    (tmp_path / "x.vtt").write_text("WEBVTT\n\n00:00.000 --> 00:01.000\nhi\n")
    assert sniff_file(tmp_path / "x.vtt") == "text/vtt"
    docx = tmp_path / "report.docx"
    docx.write_bytes(b"PK\x03\x04" + b"\x00" * 60)
    assert sniff_file(docx, "report.docx").endswith("wordprocessingml.document")  # type: ignore[union-attr]
    for refused in (b"\x7fELF\x02\x01\x01" + b"\x00" * 100, b"MZ\x90\x00" + b"\x00" * 100,
                    bytes(range(256)) * 4, b""):
        (tmp_path / "bad").write_bytes(refused)
        assert sniff_file(tmp_path / "bad") is None


def test_names_and_metadata() -> None:
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("C:\\Users\\me\\holiday photo.JPG") == "holiday_photo.JPG"
    assert safe_filename(".hidden") == "hidden"
    assert safe_filename("", "image/png") == "upload.png"
    assert safe_filename("rm -rf $(x);.mp4") == "rm_-rf_x_.mp4"
    fields = parse_tus_metadata("filename aGVsbG8uanBn,workflow V0YtSU1BR0U=,empty")
    assert fields == {"filename": "hello.jpg", "workflow": "WF-IMAGE", "empty": ""}
    want = intent({**fields, "priority": "9", "params": '{"1": {"size": 64}}'})
    assert (want.filename, want.workflow, want.priority, want.params) == (
        "hello.jpg", "WF-IMAGE", 9, {"1": {"size": 64}})
    assert parse_tus_metadata(tus_metadata_header(want.as_json())) == {
        "filename": "hello.jpg", "workflow": "WF-IMAGE", "priority": "9",
        "params": '{"1": {"size": 64}}'}
    for bad in ({"priority": "11"}, {"priority": "x"}, {"params": "[1]"},
                {"params": '{"1": 2}'}, {"params": "{"}):
        with pytest.raises(Refused):
            intent(bad)
    with pytest.raises(Refused, match="base64"):
        parse_tus_metadata("filename !!!")
