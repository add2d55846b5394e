"""HDR sources (PQ and HLG BT.2020, made by Debian's ffmpeg with zscale): tone mapped to
SDR BT.709 by ``transcode_video`` and compared with Debian's ffmpeg's own conversion
(zscale + tonemap=hable), or kept as 10-bit HEVC with HDR10 metadata that ffprobe reads.
"""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mediaq.actions.color import DEFAULT_PEAK_NITS, tone_map_rgb
from mediaq.errors import PermanentError
from tests.helpers import run_action as run
from tests.media_judge import decodes_fully, ffmpeg, needs_ffmpeg, video_stream

pytestmark = needs_ffmpeg

# Documented in docs/video.md: mean luminance (BT.709 luma of R'G'B', 0..1) and mean HSV
# saturation of the whole clip, against Debian's ffmpeg's zscale+tonemap conversion.
LUMA_TOLERANCE = 0.02
SATURATION_TOLERANCE = 0.03
TRANSFERS = {"pq": "smpte2084", "hlg": "arib-std-b67"}
SIZE = (320, 180)


def make_hdr(path: Path, transfer: str) -> Path:
    """testsrc2 graded as HDR: SDR white at 400 nits, BT.2020, 10-bit HEVC, tagged."""
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={SIZE[0]}x{SIZE[1]}:rate=25:duration=1",
           "-vf", "setparams=color_primaries=bt709:color_trc=bt709:colorspace=gbr:range=pc,"
           "format=gbrpf32le,zscale=t=linear:npl=100,zscale=p=bt2020,"
           f"zscale=t={transfer}:npl=400,zscale=m=bt2020nc:r=tv,format=yuv420p10le",
           "-c:v", "libx265", "-preset", "ultrafast", "-crf", "16", "-x265-params",
           f"log-level=error:colorprim=bt2020:transfer={transfer}:colormatrix=bt2020nc",
           path)
    return path


def reference_sdr(source: Path, out: Path, peak_nits: float = DEFAULT_PEAK_NITS) -> Path:
    """Debian's ffmpeg's tone mapping: the same Hable curve and peak, no desaturation."""
    peak = peak_nits / 100
    ffmpeg("-i", source, "-vf",
           "zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,"
           f"tonemap=tonemap=hable:desat=0:peak={peak},zscale=t=bt709:m=bt709:r=tv,"
           "format=yuv420p", "-c:v", "ffv1", out)
    return out


def rgb_pixels(path: Path) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.float64) / 255


def luma_and_saturation(path: Path) -> tuple[float, float]:
    rgb = rgb_pixels(path)
    top, bottom = rgb.max(axis=1), rgb.min(axis=1)
    saturation = np.where(top > 0, (top - bottom) / np.maximum(top, 1e-9), 0.0)
    luma = rgb @ np.array([0.2126, 0.7152, 0.0722])
    return float(luma.mean()), float(saturation.mean())


def frame_side_data(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-read_intervals",
                          "%+#1", "-show_frames", "-of", "json", str(path)],
                         capture_output=True, check=True, text=True).stdout
    frames = json.loads(out)["frames"]
    return list(frames[0].get("side_data_list", []))


# A 4,000-nit grade on a BT.2020-primaries display, MaxCLL 4000, MaxFALL 1000.
MASTER_DISPLAY = "G(8500,39850)B(6550,2300)R(35400,14600)WP(15635,16450)L(40000000,50)"


def with_hdr10_metadata(source: Path, out: Path) -> Path:
    ffmpeg("-i", source, "-c:v", "libx265", "-preset", "ultrafast", "-crf", "16",
           "-x265-params", "log-level=error:hdr10=1:colorprim=bt2020:transfer=smpte2084:"
           f"colormatrix=bt2020nc:master-display={MASTER_DISPLAY}:max-cll=4000,1000", out)
    return out


@pytest.fixture(scope="module")
def hdr_sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hdr")
    made = {name: make_hdr(d / f"{name}.mp4", transfer) for name, transfer in TRANSFERS.items()}
    made["pq4000"] = with_hdr10_metadata(made["pq"], d / "pq4000.mp4")
    return made


@pytest.mark.parametrize("name", sorted(TRANSFERS))
def test_tone_map_matches_debian_ffmpeg(hdr_sources: dict[str, Path], tmp_path: Path,
                                        name: str) -> None:
    source = hdr_sources[name]
    result = run("transcode_video", source, tmp_path, resolution="source", crf=16,
                 preset="ultrafast")
    out = result.outputs[0].staging_path
    stream = video_stream(out)
    assert (stream["pix_fmt"], stream["color_primaries"], stream["color_transfer"],
            stream["color_space"]) == ("yuv420p", "bt709", "bt709", "bt709")
    assert decodes_fully(out)
    assert result.data["color"] == "tonemap"
    assert result.data["source_transfer"] == TRANSFERS[name]

    reference = reference_sdr(source, tmp_path / "reference.mkv")
    mine_luma, mine_sat = luma_and_saturation(out)
    ref_luma, ref_sat = luma_and_saturation(reference)
    assert abs(mine_luma - ref_luma) <= LUMA_TOLERANCE, (mine_luma, ref_luma)
    assert abs(mine_sat - ref_sat) <= SATURATION_TOLERANCE, (mine_sat, ref_sat)
    # Not washed out: without tone mapping the same source comes out flat and grey.
    flat = run("transcode_video", source, tmp_path / "flat", resolution="source",
               preset="ultrafast", tone_map="off").outputs[0].staging_path
    assert luma_and_saturation(flat)[1] < ref_sat - 0.1


def test_curve_model_follows_its_definition() -> None:
    """Reference white (100 nits, PQ 0.508) stays in the mid tones; the peak reaches 1."""
    white_pq, peak_pq = 0.50808, 0.75183  # ST 2084 of 100 and 1,000 nits
    grey = tone_map_rgb(np.array([[white_pq] * 3, [peak_pq] * 3]), "smpte2084",
                        DEFAULT_PEAK_NITS)
    assert 0.5 < grey[0, 0] < 0.8
    assert grey[1] == pytest.approx([1.0, 1.0, 1.0], abs=1e-3)
    # Hue kept: a saturated red stays red, its green and blue stay at 0.
    red = tone_map_rgb(np.array([[peak_pq, 0.0, 0.0]]), "smpte2084", DEFAULT_PEAK_NITS)
    assert red[0, 0] > 0.5 and red[0, 1] == red[0, 2] == 0.0


@pytest.mark.parametrize("name", sorted(TRANSFERS))
def test_hdr_keep_writes_10_bit_hevc_with_hdr10_metadata(hdr_sources: dict[str, Path],
                                                         tmp_path: Path, name: str) -> None:
    result = run("transcode_video", hdr_sources[name], tmp_path, resolution="source",
                 codec="hevc", preset="ultrafast", hdr="keep")
    out = result.outputs[0].staging_path
    stream = video_stream(out)
    assert stream["pix_fmt"] == "yuv420p10le"
    assert (stream["color_primaries"], stream["color_transfer"], stream["color_space"]) == (
        "bt2020", TRANSFERS[name], "bt2020nc")
    kinds = {side["side_data_type"] for side in frame_side_data(out)}
    assert {"Mastering display metadata", "Content light level metadata"} <= kinds
    assert result.data["color"] == "keep"
    assert decodes_fully(out)


def test_hdr_keep_refuses_an_8_bit_codec(hdr_sources: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match=r"pq\.mp4: hdr: keep needs codec hevc or av1"):
        run("transcode_video", hdr_sources["pq"], tmp_path, codec="h264", hdr="keep")


def test_sdr_source_is_left_alone(tmp_path: Path) -> None:
    source = tmp_path / "sdr.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25:duration=0.4", "-c:v",
           "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", source)
    result = run("transcode_video", source, tmp_path / "out", resolution="source",
                 preset="ultrafast")
    assert result.data["color"] == "sdr"
    assert video_stream(result.outputs[0].staging_path)["pix_fmt"] == "yuv420p"


def test_hls_ladder_of_a_pq_source_is_tone_mapped(hdr_sources: dict[str, Path],
                                                  tmp_path: Path) -> None:
    source = hdr_sources["pq"]
    rung = {"width": 320, "height": 180, "name": "full"}
    result = run("package_hls", source, tmp_path, renditions=[rung], audio=False,
                 preset="ultrafast", crf=16)
    playlist = next(o.staging_path for o in result.outputs
                    if o.staging_path.name.endswith("full.m3u8"))
    sdr = tmp_path / "hls.mkv"
    ffmpeg("-i", playlist, "-c:v", "ffv1", sdr)
    reference = reference_sdr(source, tmp_path / "reference.mkv")
    mine_luma, mine_sat = luma_and_saturation(sdr)
    ref_luma, ref_sat = luma_and_saturation(reference)
    assert abs(mine_luma - ref_luma) <= LUMA_TOLERANCE, (mine_luma, ref_luma)
    assert abs(mine_sat - ref_sat) <= SATURATION_TOLERANCE, (mine_sat, ref_sat)


def test_tone_map_peak_comes_from_the_source_metadata(hdr_sources: dict[str, Path],
                                                      tmp_path: Path) -> None:
    source = hdr_sources["pq4000"]
    result = run("transcode_video", source, tmp_path, resolution="source", crf=16,
                 preset="ultrafast")
    assert result.data["tone_map_peak_nits"] == 4000
    reference = reference_sdr(source, tmp_path / "reference.mkv", peak_nits=4000)
    mine_luma, mine_sat = luma_and_saturation(result.outputs[0].staging_path)
    ref_luma, ref_sat = luma_and_saturation(reference)
    assert abs(mine_luma - ref_luma) <= LUMA_TOLERANCE, (mine_luma, ref_luma)
    assert abs(mine_sat - ref_sat) <= SATURATION_TOLERANCE, (mine_sat, ref_sat)


@pytest.mark.parametrize("codec", ["hevc", "av1"])
def test_hdr_keep_carries_the_source_metadata(hdr_sources: dict[str, Path], tmp_path: Path,
                                              codec: str) -> None:
    result = run("transcode_video", hdr_sources["pq4000"], tmp_path, resolution="source",
                 codec=codec, preset="ultrafast", hdr="keep", hardware="never")
    out = result.outputs[0].staging_path
    stream = video_stream(out)
    assert stream["codec_name"] == codec and stream["pix_fmt"] == "yuv420p10le"
    assert stream["color_transfer"] == "smpte2084"
    sides = {side["side_data_type"]: side for side in frame_side_data(out)}
    light = sides["Content light level metadata"]
    assert (light["max_content"], light["max_average"]) == (4000, 1000)
    # HEVC says 40000000/10000, AV1 1024000/256: 4,000 nits either way.
    assert Fraction(sides["Mastering display metadata"]["max_luminance"]) == 4000


def test_quality_is_measured_against_the_tone_mapped_or_kept_source(
        hdr_sources: dict[str, Path], tmp_path: Path) -> None:
    """SDR renditions are judged against the tone-mapped source, 10-bit ones in 10 bits:
    both score high at a low CRF (judging SDR against raw PQ would score far lower)."""
    sdr = run("transcode_video", hdr_sources["hlg"], tmp_path / "sdr", resolution="source",
              crf=16, preset="ultrafast", measure_quality="ssim")
    kept = run("transcode_video", hdr_sources["pq"], tmp_path / "kept", resolution="source",
               codec="hevc", crf=16, preset="ultrafast", hdr="keep", measure_quality="psnr")
    assert sdr.data["quality"]["ssim"] > 0.95
    assert kept.data["quality"]["psnr"] > 35
    assert kept.data["quality"]["frames_compared"] == 25
