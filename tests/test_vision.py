"""detect_faces and tag_media on real photographs from scikit-image's wheel, and on videos
made from them by Debian's ffmpeg (issue 24). No network: the models ship in wheels."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from mediaq import catalog
from mediaq.actions import get_action
from tests.helpers import MediaqEnv, action_context, requires_tool, run_action
from tests.media_judge import ffmpeg

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (test photos)")
PHOTOS = Path(skimage_data.__file__).parent


def photo(name: str) -> Path:
    return PHOTOS / name


def test_a_face_is_found_in_the_astronaut_and_none_in_a_blank_frame(tmp_path: Path) -> None:
    result = run_action("detect_faces", photo("astronaut.png"), tmp_path)
    assert result.data["faces_count"] == 1
    x, y, w, h = result.data["largest_face"]["box"]
    # Eileen Collins' face: around (220, 120) in the 512x512 picture.
    assert 150 < x + w / 2 < 290 and 60 < y + h / 2 < 200, (x, y, w, h)
    report = json.loads(result.outputs[0].staging_path.read_text())
    assert report["frames"][0]["count"] == 1
    for empty in ("coffee.png", "chelsea.png"):  # a cup, a cat: no human face
        assert run_action("detect_faces", photo(empty), tmp_path)\
            .data["faces_count"] == 0, empty


def face_then_black(folder: Path) -> Path:
    """2 s of the astronaut, then 2 s of black (5 fps)."""
    video = folder / "face.mp4"
    ffmpeg("-loop", "1", "-framerate", "5", "-t", "2", "-i", photo("astronaut.png"),
           "-f", "lavfi", "-i", "color=c=black:size=512x512:rate=5:duration=2",
           "-filter_complex", "[0]format=yuv420p[a];[1]format=yuv420p[b];[a][b]concat=n=2",
           "-c:v", "libx264", "-preset", "ultrafast", video)
    return video


@requires_tool("ffmpeg")
def test_faces_in_video_frames_with_times(tmp_path: Path) -> None:
    video = face_then_black(tmp_path)
    result = run_action("detect_faces", video, tmp_path, interval=0.5)
    data = result.data
    assert data["frames_analysed"] == 8
    # Every sample of the astronaut's two seconds, none of the black ones.
    assert len(data["face_times"]) == 4 and all(t < 2.0 for t in data["face_times"])
    assert data["faces_count"] == 1 and data["largest_face"]["time"] < 2.0


@pytest.mark.parametrize(("name", "sensible"), [
    ("coffee.png", {"espresso", "cup", "coffee mug"}),
    ("chelsea.png", {"tabby", "tiger cat", "Egyptian cat"}),
    ("motorcycle_left.png", {"moped", "motor scooter"}),
])
def test_tags_of_real_photos(tmp_path: Path, name: str, sensible: set[str]) -> None:
    result = run_action("tag_media", photo(name), tmp_path, moderation=True)
    labels = [t["label"] for t in result.data["tags"]]
    assert labels and labels[0] in sensible, labels
    assert all(0 < t["score"] <= 1 for t in result.data["tags"])
    assert result.data["nsfw_score"] < 0.2 and "nsfw" not in labels


@requires_tool("ffmpeg")
def test_a_video_is_tagged_per_scene(tmp_path: Path) -> None:
    video = tmp_path / "two.mp4"
    ffmpeg("-loop", "1", "-framerate", "5", "-t", "2", "-i", photo("coffee.png"),
           "-loop", "1", "-framerate", "5", "-t", "2", "-i", photo("chelsea.png"),
           "-filter_complex",
           "[0]scale=450:300,setsar=1,format=yuv420p[a];[1]scale=450:300,setsar=1,"
           "format=yuv420p[b];[a][b]concat=n=2",
           "-c:v", "libx264", "-preset", "ultrafast", video)
    data = run_action("tag_media", video, tmp_path).data
    assert [s["scene"] for s in data["scenes"]] == [0, 1]
    assert data["scenes"][0]["tags"][0]["label"] in {"espresso", "cup", "coffee mug"}
    labels = {t["label"] for t in data["tags"]}
    assert labels & {"tabby", "tiger cat", "Egyptian cat"}


def test_tags_and_faces_reach_the_catalog(mq: MediaqEnv) -> None:
    source = mq.inputs / "astronaut.png"
    source.write_bytes(photo("astronaut.png").read_bytes())
    mq.apply_workflow({
        "workflow_code": "WF-TAGS", "workflow_name": "tags", "workflow_type": "image",
        "steps": [{"step_number": 1, "step_name": "faces", "action": "detect_faces"},
                  {"step_number": 2, "step_name": "tags", "action": "tag_media"}]})
    code = mq.submit("WF-TAGS", source)
    mq.run_burst()
    job = mq.job(code)
    assert job["status"] == "completed", job["error_message"]
    with psycopg.connect(mq.url, row_factory=dict_row,
                         options="-c search_path=mediaq,public") as conn:
        catalog.record_job(conn, job["id"])
        conn.commit()
    asset = mq.one("SELECT * FROM asset_library WHERE path = %s", (str(source),))
    assert asset["faces_count"] == 1 and asset["orientation"] == "square"
    assert asset["tags"]
    tags = mq.query("SELECT tag, score, source FROM asset_tags WHERE asset_id = %s",
                    (asset["id"],))
    assert all(t["source"] == "efficientnet-lite0-imagenet1k" for t in tags)


@requires_tool("ffmpeg")
def test_highlights_pick_the_faces_from_a_faces_step_or_by_themselves(tmp_path: Path) -> None:
    video = face_then_black(tmp_path)
    faces = run_action("detect_faces", video, tmp_path / "f", interval=0.5)
    previous = [{"role": "report", **faces.outputs[0].meta}]
    only_faces = {"faces": True, "count": 1, "segment_seconds": 2, "crossfade": 0,
                  "weights": {"faces": 1, "motion": 0, "loudness": 0, "scene_change": 0}}
    for number, earlier in enumerate((previous, [])):
        ctx = action_context("generate_highlights", video, tmp_path / f"h{number}",
                             only_faces, previous_outputs=earlier)
        kept = get_action("generate_highlights").fn(ctx).data["segments"]
        assert [(s["start"], s["end"]) for s in kept] == [(0.0, 2.0)], earlier
        assert kept[0]["signals"]["faces"] == 1.0
