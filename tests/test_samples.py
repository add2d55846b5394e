"""The generated sample media are real, decodable files of the promised shape."""

from __future__ import annotations

import re
import wave
from pathlib import Path

import av
import pytest
from PIL import ExifTags, Image

from mediaq.samples import corrupt_samples, generate_samples


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_samples(tmp_path_factory.mktemp("samples"))


@pytest.mark.parametrize(
    ("name", "fmt", "size", "mode"),
    [
        ("photo_landscape.jpg", "JPEG", (2400, 1600), "RGB"),
        ("photo_small.png", "PNG", (640, 480), "RGBA"),
        ("graphic.webp", "WEBP", (1200, 800), "RGB"),
    ],
)
def test_images_decode_with_the_promised_shape(
    samples: dict[str, Path], name: str, fmt: str, size: tuple[int, int], mode: str
) -> None:
    with Image.open(samples[name]) as image:
        image.load()
        assert (image.format, image.size, image.mode) == (fmt, size, mode)


def test_landscape_photo_is_a_portrait_once_oriented(samples: dict[str, Path]) -> None:
    with Image.open(samples["photo_landscape.jpg"]) as image:
        assert image.getexif()[ExifTags.Base.Orientation] == 6


def test_small_png_has_real_transparency(samples: dict[str, Path]) -> None:
    with Image.open(samples["photo_small.png"]) as image:
        low, high = image.getchannel("A").getextrema()  # type: ignore[misc]
    assert (low, high) == (0, 255)


def test_clip_is_two_seconds_of_h264_with_aac_stereo(samples: dict[str, Path]) -> None:
    with av.open(str(samples["clip.mp4"])) as container:
        assert container.duration is not None
        assert container.duration / 1_000_000 == pytest.approx(2.0, abs=0.1)
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        assert (video.codec_context.name, video.width, video.height) == ("h264", 320, 240)
        assert video.average_rate == 25
        assert (audio.codec_context.name, audio.sample_rate, audio.channels) == (
            "aac",
            44_100,
            2,
        )
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == 50


def test_tone_is_two_seconds_of_stereo_sound(samples: dict[str, Path]) -> None:
    with wave.open(str(samples["tone.wav"]), "rb") as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.getsampwidth()) == (2, 44_100, 2)
        assert wav.getnframes() == 88_200
        assert any(wav.readframes(1000))


def test_document_is_a_two_page_pdf(samples: dict[str, Path]) -> None:
    data = samples["document.pdf"].read_bytes()
    assert data.startswith(b"%PDF-")
    assert len(re.findall(rb"/Type\s*/Page\b(?!s)", data)) == 2


def test_generation_is_idempotent(samples: dict[str, Path]) -> None:
    stamps = {name: path.stat().st_mtime_ns for name, path in samples.items()}

    again = generate_samples(next(iter(samples.values())).parent)

    assert again == samples
    assert {name: path.stat().st_mtime_ns for name, path in again.items()} == stamps
    assert not list(again["clip.mp4"].parent.glob(".*partial*"))


def test_corrupt_samples_are_broken_as_described(tmp_path: Path) -> None:
    bad = corrupt_samples(tmp_path)

    assert bad["empty.jpg"].stat().st_size == 0
    assert bad["corrupt.png"].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert bad["truncated.jpg"].read_bytes().startswith(b"\xff\xd8\xff")
    assert not bad["truncated.jpg"].read_bytes().endswith(b"\xff\xd9")
    assert bad["not_an_image.jpg"].read_text(encoding="utf-8").strip()
