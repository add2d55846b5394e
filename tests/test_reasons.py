"""Failure messages that name a reason, not a library's internals (from a corpus of real
third-party files, issue 22): each file made here, run through the action that met it."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from PIL import Image

from mediaq.actions import image_reasons
from mediaq.errors import PermanentError
from tests.helpers import requires_tool, run_action


def fails_with(action: str, source: Path, tmp_path: Path) -> str:
    with pytest.raises(PermanentError) as raised:
        run_action(action, source, tmp_path / "staging")
    message = raised.value.message
    assert "\n" not in message and message.startswith(f"{source.name}: ")
    return message


def chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def webp_compressed_tiff(path: Path) -> Path:
    """A TIFF whose Compression tag (259) says WebP (50001), as GDAL and libvips write."""
    Image.new("RGB", (32, 32), (200, 30, 30)).save(path, compression="raw")
    data = bytearray(path.read_bytes())
    assert data[:4] == b"II*\x00"
    (ifd,) = struct.unpack("<I", data[4:8])
    (count,) = struct.unpack("<H", data[ifd:ifd + 2])
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        if struct.unpack("<H", data[entry:entry + 2])[0] == 259:
            data[entry + 8:entry + 10] = struct.pack("<H", 50001)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("action", ["validate_image", "create_thumbnail"])
def test_a_webp_compressed_tiff_says_its_compression_is_not_supported(
    tmp_path: Path, action: str,
) -> None:
    source = webp_compressed_tiff(tmp_path / "scan.tif")
    with Image.open(source) as im:
        assert (im.format, im.info["compression"]) == ("TIFF", "webp")
    message = fails_with(action, source, tmp_path)
    if image_reasons._tiff_compression_works("webp"):  # a libtiff with WebP: the data is bad
        assert message == ("scan.tif: corrupt image (its WebP-compressed TIFF data cannot"
                           " be decoded)")
    else:
        assert message == "scan.tif: TIFF with WebP compression is not supported"
    assert "decoder error" not in message


def test_a_png_text_chunk_past_pillows_limit_says_so(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (0, 90, 200)).save(buffer, "PNG")
    png = buffer.getvalue()
    comment = chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"A" * (2 * 2 ** 20)))
    source = tmp_path / "poster.png"
    source.write_bytes(png[:33] + comment + png[33:])  # after the IHDR chunk
    message = fails_with("validate_image", source, tmp_path)
    assert message == "poster.png: PNG text chunk too large (over 1 MB)"


FFMPEG = shutil.which("ffmpeg") or "ffmpeg"


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-nostdin", "-loglevel", "error", "-y", *args], check=True)


@requires_tool("ffmpeg")
@pytest.mark.parametrize("action", ["validate_audio", "transcode_audio"])
def test_a_flac_cut_after_its_header_is_truncated(tmp_path: Path, action: str) -> None:
    whole = tmp_path / "whole.flac"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=2", str(whole))
    source = tmp_path / "song.flac"
    source.write_bytes(whole.read_bytes()[:100])
    assert fails_with(action, source, tmp_path) == "song.flac: truncated: the file ends early"


@requires_tool("ffmpeg")
@pytest.mark.parametrize("action", ["validate_video", "validate_audio"])
def test_a_matroska_file_with_mangled_data_is_not_a_valid_mkv(
    tmp_path: Path, action: str,
) -> None:
    whole = tmp_path / "whole.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=2", "-c:v", "libx264",
           str(whole))
    data = bytearray(whole.read_bytes())
    for i in range(len(data) // 3, len(data) - 16):  # everything after the first third
        data[i] = (data[i] * 7 + 13) & 0xFF
    source = tmp_path / "clip.mkv"
    source.write_bytes(bytes(data))
    assert fails_with(action, source, tmp_path) == "clip.mkv: not a valid MKV file"


@requires_tool("convert")
@pytest.mark.parametrize(("suffix", "named"), [("ico", "ICO"), ("psd", "PSD"),
                                               ("jp2", "JPEG 2000"), ("ppm", "Netpbm"),
                                               ("xpm", "XPM")])
def test_an_image_format_not_admitted_is_named(tmp_path: Path, suffix: str,
                                               named: str) -> None:
    # Pillow's own test images (issue 22's corpus): formats Pillow reads but the actions
    # do not admit said "format not recognised".
    source = tmp_path / f"icon.{suffix}"
    subprocess.run([shutil.which("convert-im6.q16") or "convert", "-size", "32x32",
                    "xc:red", str(source)], check=True, capture_output=True)
    message = fails_with("validate_image", source, tmp_path)
    assert f"{named} images are not allowed here" in message
