"""package_cmaf: one encode packaged as HLS and DASH over shared fMP4 segments, judged by
ffprobe, the MPEG-DASH MPD schema (ISO/IEC 23009-1's XSD, validated with lxml), and
playback in headless Chromium with hls.js and dash.js, with and without the keys."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from lxml import etree

from mediaq.actions import get_action
from mediaq.errors import InvalidParameters, PermanentError
from tests.helpers import MediaqEnv, diagnostic_workflow, requires_tool, run_action
from tests.media_judge import ffmpeg, ffprobe, needs_ffmpeg
from tests.test_streaming_actions import play_in_chromium

pytestmark = needs_ffmpeg

SCHEMA_DIR = Path(__file__).parent / "data" / "dash-schema"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of 480x270 video with two audio streams, English and French."""
    path = tmp_path_factory.mktemp("cmaf") / "talk.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=480x270:rate=25",
           "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
           "-f", "lavfi", "-i", "sine=frequency=660:sample_rate=48000", "-t", "3",
           "-map", "0", "-map", "1", "-map", "2", "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", "-c:a", "aac", "-metadata:s:a:0", "language=eng",
           "-metadata:s:a:1", "language=fra", "-shortest", path)
    return path


def mpd_schema() -> etree.XMLSchema:
    text = (SCHEMA_DIR / "DASH-MPD.xsd").read_text()
    text = text.replace("http://www.w3.org/XML/2008/06/xlink.xsd", "xlink.xsd")
    return etree.XMLSchema(etree.fromstring(text.encode(),
                                            base_url=str(SCHEMA_DIR / "DASH-MPD.xsd")))


def uris(playlist: Path) -> list[str]:
    return [line for line in playlist.read_text().splitlines()
            if line and not line.startswith("#")]


def mpd_files(mpd: Path, folder: Path) -> set[str]:
    """Every init and media segment an MPD's SegmentTemplates name."""
    text = mpd.read_text()
    names = set(re.findall(r'initialization="([^"]+)"', text))
    for media in re.findall(r'media="([^"]+)"', text):
        pattern = re.escape(media).replace(re.escape("$Number%05d$"), r"\d{5}")
        names |= {p.name for p in folder.iterdir() if re.fullmatch(pattern, p.name)}
    return names


def test_one_encode_shared_by_hls_and_dash(source: Path, tmp_path: Path) -> None:
    result = run_action("package_cmaf", source, tmp_path, renditions=["240p", "144p"],
                        codecs=["h264", "hevc", "av1"], segment_seconds=1,
                        audio_bitrates=["128k", "64k"])
    data = result.data
    master, mpd = tmp_path / data["master"], tmp_path / data["manifest"]
    # Three codecs x two rungs; each track cut into the same 1 s segments.
    assert [(r["codec"], r["height"]) for r in data["renditions"]] == [
        ("h264", 240), ("h264", 144), ("hevc", 240), ("hevc", 144), ("av1", 240),
        ("av1", 144)]
    assert {r["segments"] for r in data["renditions"]} == {3}
    # The audio ladder: each language at each bit rate.
    assert [(a["language"], a["bitrate"]) for a in data["audio"]] == [
        ("eng", 128_000), ("eng", 64_000), ("fra", 128_000), ("fra", 64_000)]
    for rung in data["audio"]:  # each near the bit rate asked for (mono AAC tops out early)
        assert 0.4 < rung["average_bitrate"] / rung["bitrate"] < 1.3, rung
    # HLS and DASH name the very same init and media segment files.
    hls_names: set[str] = set()
    for playlist in uris(master) + re.findall(r'URI="([^"]+)"', master.read_text()):
        hls_names |= set(uris(tmp_path / playlist))
        hls_names |= set(re.findall(r'URI="([^"]+)"', (tmp_path / playlist).read_text()))
    assert hls_names == mpd_files(mpd, tmp_path) and len(hls_names) == 6 * 4 + 4 * 5
    assert data["shared_segments"] == 6 * 3 + 4 * 4
    # ffprobe: each rung's codec and size, from its init + first segment.
    for rendition in data["renditions"]:
        label = rendition["name"]
        joined = tmp_path / f"{label}.mp4"
        joined.write_bytes((tmp_path / f"talk_cmaf_{label}_init.mp4").read_bytes()
                           + (tmp_path / f"talk_cmaf_{label}_00001.m4s").read_bytes())
        stream = ffprobe(joined)["streams"][0]
        assert stream["codec_name"] == rendition["codec"]
        assert (stream["width"], stream["height"]) == (rendition["width"], rendition["height"])
    codecs = re.findall(r'CODECS="([^"]+)"', master.read_text())
    assert {c.split(".")[0] for c in codecs} == {"avc1", "hvc1", "av01"}
    # The MPD is valid per ISO/IEC 23009-1's schema; languages are declared.
    schema = mpd_schema()
    doc = etree.parse(str(mpd))
    assert schema.validate(doc), schema.error_log
    assert re.findall(r'lang="(\w+)"', mpd.read_text()) == ["eng", "fra"]
    assert "hvc1" in mpd.read_text() and "av01" in mpd.read_text()


def test_aes128_keys_rotate_and_decrypt(source: Path, tmp_path: Path) -> None:
    result = run_action("package_cmaf", source, tmp_path, renditions=["144p"],
                        segment_seconds=1, hls_encryption="aes-128", key_rotation_segments=2,
                        key_uri="https://keys.example.com/k/", audio_bitrates=["64k"],
                        audio_languages=["fra"])
    playlist = tmp_path / "talk_cmaf_h264_144p.m3u8"
    text = playlist.read_text()
    keys = re.findall(r'#EXT-X-KEY:METHOD=AES-128,URI="([^"]+)"', text)
    assert keys == ["https://keys.example.com/k/talk_cmaf_key_000.key",
                    "https://keys.example.com/k/talk_cmaf_key_001.key"]
    assert text.index("#EXT-X-MAP") < text.index("#EXT-X-KEY")  # the init stays clear
    # Each segment decrypts (AES-128-CBC, IV = its sequence number) to an fMP4 fragment.
    for sequence, name in enumerate(uris(playlist), start=1):
        key = (tmp_path / f"talk_cmaf_key_{(sequence - 1) // 2:03d}.key").read_bytes()
        decryptor = Cipher(algorithms.AES(key),
                           modes.CBC(sequence.to_bytes(16, "big"))).decryptor()
        unpadder = padding.PKCS7(128).unpadder()
        plain = unpadder.update(decryptor.update((tmp_path / name).read_bytes())
                                + decryptor.finalize()) + unpadder.finalize()
        assert plain[4:8] in (b"styp", b"moof")
    assert [a["language"] for a in result.data["audio"]] == ["fra"]
    assert {o.meta.get("kind") for o in result.outputs} >= {"key", "segment", "init"}


def test_bad_requests_are_refused_in_words(source: Path, tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match=r"no audio in deu \(the source has: eng, fra\)"):
        run_action("package_cmaf", source, tmp_path, audio_languages=["deu"])
    with pytest.raises(InvalidParameters, match="codecs"):
        get_action("package_cmaf").validate({"codecs": ["vp8"]})
    # A named preset applies what packaging takes (speed, crf, rate control, tune).
    params = get_action("package_cmaf").validate({"preset": "web"})
    assert params["crf"] == 23 and params["rate_control"] == "capped_crf"
    assert not list(tmp_path.glob("*.m4s"))


def clear_key_of(folder: Path) -> str:
    licence = json.loads((folder / "talk_clearkey.json").read_text())["keys"][0]

    def unb64(text: str) -> bytes:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    return f"{unb64(licence['kid']).hex()}:{unb64(licence['k']).hex()}"


@pytest.mark.slow
@requires_tool("chromium")
def test_encrypted_package_plays_with_its_keys_and_not_without(source: Path,
                                                               tmp_path: Path) -> None:
    result = run_action("package_cmaf", source, tmp_path, renditions=["240p", "144p"],
                        segment_seconds=1, hls_encryption="aes-128", key_rotation_segments=2,
                        dash_encryption="clearkey", audio_bitrates=["64k"],
                        audio_languages=["eng"])
    master, mpd = result.data["master"], result.data["manifest"]
    schema = mpd_schema()
    assert schema.validate(etree.parse(str(tmp_path / mpd))), schema.error_log
    hls = play_in_chromium(tmp_path, f"hls={master}&audio=1")
    assert hls["errors"] == [] and hls["done_by"] == "ok", hls
    assert hls["frames"] > 0 and sorted(hls["buffered"]) == [0, 1]
    dash = play_in_chromium(tmp_path, f"dash={mpd}&audio=1&clearkey={clear_key_of(tmp_path)}")
    assert dash["errors"] == [] and dash["done_by"] == "ok", dash
    assert dash["frames"] > 0
    # Without the keys: hls.js cannot fetch them, dash.js has no licence.
    keyless = tmp_path / "keyless"
    shutil.copytree(tmp_path, keyless, ignore=shutil.ignore_patterns("*.key", "keyless"))
    hls = play_in_chromium(keyless, f"hls={master}&audio=1")
    assert hls["done_by"] != "ok" and hls["played"] < 0.5, hls
    dash = play_in_chromium(keyless, f"dash={mpd}&audio=1")
    assert dash["done_by"] != "ok" and dash["played"] < 0.5, dash


@pytest.mark.slow
@requires_tool("chromium")
@pytest.mark.parametrize("codec", ["h264", "av1"])
def test_clear_package_plays_in_both_players(source: Path, tmp_path: Path,
                                             codec: str) -> None:
    result = run_action("package_cmaf", source, tmp_path, renditions=["240p", "144p"],
                        codecs=[codec], segment_seconds=1, audio_bitrates=["64k"],
                        audio_languages=["eng"])
    for kind, manifest in (("hls", result.data["master"]), ("dash", result.data["manifest"])):
        verdict: dict[str, Any] = play_in_chromium(tmp_path, f"{kind}={manifest}&audio=1")
        assert verdict["errors"] == [] and verdict["done_by"] == "ok", (kind, verdict)
        assert sorted(verdict["buffered"]) == [0, 1] and verdict["frames"] > 0


@pytest.mark.slow
@requires_tool("chromium")
def test_a_ladder_of_three_codecs_plays(source: Path, tmp_path: Path) -> None:
    """hls.js keeps the variants this Chromium decodes (H.264 and AV1; HEVC only where
    the platform has a decoder) and switches between codecs; dash.js picks one set."""
    result = run_action("package_cmaf", source, tmp_path, renditions=["144p"],
                        codecs=["h264", "hevc", "av1"], segment_seconds=1,
                        audio_bitrates=["64k"], audio_languages=["eng"])
    hls = play_in_chromium(tmp_path, f"hls={result.data['master']}&audio=1")
    assert hls["errors"] == [] and hls["done_by"] == "ok", hls
    assert hls["variants"] >= 2 and len(hls["buffered"]) == hls["variants"]
    dash = play_in_chromium(tmp_path, f"dash={result.data['manifest']}&audio=1")
    assert dash["errors"] == [] and dash["done_by"] == "ok", dash


def test_a_workflow_with_presets_runs_through_the_engine(mq: MediaqEnv, source: Path) -> None:
    """Steps name presets in the workflow's YAML; a worker runs them; what each step
    decided (encoder, settings) is in its output_data, every file lands in place."""
    mq.apply_workflow(diagnostic_workflow(
        "WF-CMAF",
        {"action": "transcode_video", "step_name": "web",
         "parameters": {"preset": "web", "resolution": "240p"}},
        {"action": "package_cmaf", "step_name": "cmaf",
         "parameters": {"preset": "web", "renditions": ["144p"], "segment_seconds": 1,
                        "hls_encryption": "aes-128", "key_rotation_segments": 2,
                        "audio_bitrates": ["64k"]}},
        resource_category="cpu"))
    local = mq.inputs / source.name
    shutil.copy(source, local)
    code = mq.submit("WF-CMAF", local)
    mq.run_burst(timeout=300)
    job = mq.job(code)
    assert job["status"] == "completed", job["error_message"]
    steps = {row["step_name"]: row["output_data"] for row in mq.query(
        """SELECT ws.step_name, se.output_data FROM step_executions se
             JOIN workflow_steps ws ON ws.id = se.step_id WHERE se.job_id = %s""",
        (job["id"],))}
    assert steps["web"]["encoding"]["rate_control"] == "capped_crf"
    assert steps["web"]["hardware_decision"]["encoder"] == "libx264"
    assert steps["cmaf"]["hardware_decision"]["h264"]["tried"]
    folder = mq.outputs / code
    master = folder / steps["cmaf"]["master"]
    assert master.exists() and (folder / steps["cmaf"]["manifest"]).exists()
    media = folder / uris(master)[0]
    assert all((folder / name).exists() for name in uris(media))
    assert len(list(folder.glob("*.key"))) == 2


def frame_hashes(*args: str | Path) -> list[str]:
    """Debian ffmpeg's MD5 of each decoded video frame (none when it cannot decode)."""
    run = subprocess.run(["ffmpeg", "-v", "quiet", *map(str, args), "-map", "0:v:0",
                          "-f", "framemd5", "-"], capture_output=True, text=True, timeout=120)
    return [line.rsplit(",", 1)[1].strip() for line in run.stdout.splitlines()
            if line.startswith("0,")]


def test_hls_and_dash_protection_decrypt_to_the_same_frames(source: Path,
                                                            tmp_path: Path) -> None:
    """Debian's ffmpeg as the judge: the AES-128 HLS rendition (its keys fetched by the
    playlist) and the CENC DASH segments (with the ClearKey key) decode to the very same
    frames, those of the one encode; without the key, or with a wrong one, not one of
    them."""
    run_action("package_cmaf", source, tmp_path, renditions=["144p"], segment_seconds=1,
               hls_encryption="aes-128", key_rotation_segments=2, dash_encryption="clearkey",
               audio=False)
    hls = frame_hashes("-allowed_extensions", "ALL", "-i",
                       tmp_path / "talk_cmaf_h264_144p.m3u8")
    assert len(hls) == 75
    key = clear_key_of(tmp_path).split(":")[1]
    init = (tmp_path / "talk_cmaf_h264_144p_cenc_init.mp4").read_bytes()
    dash: list[str] = []
    # One segment at a time: Debian's ffmpeg 5.1 loses track of CENC sample info
    # across concatenated fragments (FFmpeg 8 and Chromium do not).
    for segment in sorted(tmp_path.glob("talk_cmaf_h264_144p_cenc_0*.m4s")):
        single = tmp_path / "single.mp4"
        single.write_bytes(init + segment.read_bytes())
        frames = frame_hashes("-decryption_key", key, "-i", single)
        dash += frames
        # The decoder may still make pictures of scrambled slices: never these ones.
        for wrong in (["-i", single], ["-decryption_key", "00" * 16, "-i", single]):
            assert not set(frame_hashes(*wrong)) & set(frames)
    assert dash == hls


@pytest.mark.parametrize("dash_encryption", ["none", "clearkey"])
def test_audio_that_starts_late_keeps_its_offset(tmp_path: Path, dash_encryption: str) -> None:
    """Lip sync: the source's audio starts 1 s after its video; every audio track, the
    CENC copies too, starts 1 s later (first tfdt, MPD timeline, ffprobe of HLS)."""
    source = tmp_path / "late.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-itsoffset", "1.0",
           "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "3",
           "-map", "0", "-map", "1", "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", "-c:a", "aac", source)
    out = tmp_path / "out"
    run_action("package_cmaf", source, out, renditions=["144p"], segment_seconds=1,
               audio_bitrates=["64k", "32k"], dash_encryption=dash_encryption)
    hls = {kind: float(ffprobe(out / f"late_cmaf_{label}.m3u8")["streams"][0]["start_time"])
           for kind, label in (("video", "h264_144p"), ("audio", "audio_und_64k"))}
    src = {s["codec_type"]: float(s["start_time"]) for s in ffprobe(source)["streams"]}
    # As ffprobe sees it in the source (its AAC priming included), within a frame.
    assert hls["audio"] - hls["video"] == pytest.approx(src["audio"] - src["video"], abs=0.03)
    text = (out / "late.mpd").read_text()
    starts = {m.group(1): int(m.group(3)) / int(m.group(2)) for m in re.finditer(
        r'<Representation id="(\w+)".*?timescale="(\d+)".*?<S t="(\d+)"', text, re.S)}
    assert len(starts) == 3, text
    # The audio's first tfdt counts the AAC priming (1024 samples, 21 ms) before it.
    for label, start in starts.items():
        expected = src["audio"] - src["video"] if label.startswith("audio") else 0.0
        assert start == pytest.approx(expected, abs=0.05), (label, starts)
