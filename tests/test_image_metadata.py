"""extract_image_metadata (and validate_image's ``metadata``): the fields people know,
read from EXIF, XMP and IPTC, judged against exiftool reading the same files; location
only when the step keeps it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.helpers import requires_tool, run_action

pytestmark = requires_tool("exiftool")

TAGS = [
    "-Make=Canon", "-Model=Canon EOS R5", "-LensMake=Canon",
    "-LensModel=RF24-105mm F4 L IS USM", "-ExposureTime=1/250", "-FNumber=5.6", "-ISO=400",
    "-FocalLength=50", "-FocalLengthIn35mmFormat=52", "-ExifIFD:ExposureProgram#=3",
    "-ExifIFD:Flash#=25",
    "-DateTimeOriginal=2024:05:01 10:20:30", "-OffsetTimeOriginal=+02:00",
    "-XResolution=300", "-YResolution=300", "-ResolutionUnit=inches",
    "-Artist=Ada Lovelace", "-Copyright=(c) 2024 Ada Lovelace", "-Software=Darktable 4.6",
    "-XMP-dc:Title=Tower at noon", "-XMP-dc:Creator=Ada Lovelace",
    "-XMP-dc:Subject=paris", "-XMP-dc:Subject=tower", "-XMP-xmp:Rating=4",
    "-XMP-photoshop:City=Paris", "-IPTC:City=Paris", "-IPTC:Keywords=paris",
    "-GPSLatitude=33.8568", "-GPSLatitudeRef=S", "-GPSLongitude=151.2153",
    "-GPSLongitudeRef=E", "-GPSAltitude=12.5", "-GPSAltitudeRef=0",
]


def exiftool(path: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(["exiftool", "-j", "-n", *args, str(path)], capture_output=True,
                          text=True, timeout=60, check=True)
    found: dict[str, Any] = json.loads(done.stdout)[0]
    return found


def tagged(path: Path, *tags: str) -> Path:
    subprocess.run(["exiftool", "-q", "-overwrite_original", *tags, str(path)],
                   check=True, timeout=60)
    return path


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "tower.jpg"
    Image.fromarray(np.full((120, 160, 3), 90, dtype=np.uint8)).save(path, quality=90)
    return tagged(path, *TAGS)


def test_the_fields_match_what_exiftool_reads(photo: Path, tmp_path: Path) -> None:
    result = run_action("extract_image_metadata", photo, tmp_path / "out")
    found = result.data["metadata"]
    judge = exiftool(photo)

    assert found["camera_make"] == judge["Make"]
    assert found["camera_model"] == judge["Model"]
    assert found["lens_make"] == judge["LensMake"]
    assert found["lens_model"] == judge["LensModel"]
    assert found["exposure_seconds"] == pytest.approx(judge["ExposureTime"])
    assert found["exposure_time"] == "1/250"
    assert found["f_number"] == pytest.approx(judge["FNumber"])
    assert found["iso"] == judge["ISO"]
    assert found["focal_length_mm"] == pytest.approx(judge["FocalLength"])
    assert found["focal_length_35mm"] == pytest.approx(judge["FocalLengthIn35mmFormat"])
    assert found["exposure_program"] == "aperture priority"  # exiftool's 3
    assert judge["ExposureProgram"] == 3
    flash = exiftool(photo, "-ExifIFD:Flash")["Flash"]  # not the Composite tag
    assert found["flash_fired"] is bool(flash & 1) is True
    assert found["dpi"] == [judge["XResolution"], judge["YResolution"]]
    assert found["bit_depth"] == judge["BitsPerSample"]
    taken = judge["DateTimeOriginal"].replace(":", "-", 2).replace(" ", "T")
    assert found["created"] == taken + judge["OffsetTimeOriginal"]
    assert found["artist"] == judge["Artist"]
    assert found["copyright"] == judge["Copyright"]
    assert found["software"] == judge["Software"]
    assert found["title"] == judge["Title"]
    assert found["creator"] == judge["Creator"]
    assert found["keywords"] == judge["Subject"]
    assert found["rating"] == judge["Rating"]
    assert found["sources"] == ["exif", "xmp", "iptc"]
    # Location stays out by default, coordinates and place names alike.
    assert not {"gps", "city", "state", "country", "sublocation"} & set(found)
    assert "GPSLatitude" in judge and judge["City"] == "Paris"


def test_gps_is_reported_only_when_kept(photo: Path, tmp_path: Path) -> None:
    result = run_action("extract_image_metadata", photo, tmp_path / "out", keep_gps=True)
    found = result.data["metadata"]
    judge = exiftool(photo)
    assert judge["GPSLatitude"] < 0  # south, signed by exiftool -n
    assert found["gps"]["latitude"] == pytest.approx(judge["GPSLatitude"], abs=1e-6)
    assert found["gps"]["longitude"] == pytest.approx(judge["GPSLongitude"], abs=1e-6)
    assert found["gps"]["altitude_m"] == pytest.approx(judge["GPSAltitude"])
    assert found["city"] == "Paris"


def test_validate_image_records_the_same_metadata(photo: Path, tmp_path: Path) -> None:
    validated = run_action("validate_image", photo, tmp_path / "out")
    extracted = run_action("extract_image_metadata", photo, tmp_path / "out2")
    assert validated.data["metadata"] == extracted.data["metadata"]
    assert "gps" not in validated.data["metadata"]
    quiet = run_action("validate_image", photo, tmp_path / "out3", read_metadata=False)
    assert "metadata" not in quiet.data


def test_png_bit_depth_and_density_match_exiftool(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    deep = np.linspace(0, 65535, 64 * 48, dtype=np.uint16).reshape(48, 64)
    Image.fromarray(deep).save(path, dpi=(600, 600))
    found = run_action("extract_image_metadata", path, tmp_path / "out").data["metadata"]
    judge = exiftool(path)
    assert found["bit_depth"] == judge["BitDepth"] == 16
    dpi = judge["PixelsPerUnitX"] * 0.0254  # exiftool gives pixels per metre
    assert found["dpi"][0] == pytest.approx(dpi, abs=0.5)
    assert found["sources"] == []


def test_a_photo_without_metadata_reports_only_its_format_facts(tmp_path: Path) -> None:
    path = tmp_path / "plain.webp"
    Image.new("RGB", (32, 32), "teal").save(path)
    found = run_action("extract_image_metadata", path, tmp_path / "out").data["metadata"]
    assert found == {"bit_depth": 8, "sources": []}
