"""The media library catalog: scans and completed jobs fill ``assets``; SQL, the CLI and
the API answer filters on orientation, duration and tags (issue 24)."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import requests
from psycopg.rows import dict_row

from mediaq import catalog, db
from mediaq.web.auth import create_token
from tests.helpers import MediaqEnv, requires_tool
from tests.media_judge import ffmpeg

pytestmark = requires_tool("ffmpeg")


def make_video(path: Path, seconds: float, width: int, height: int) -> Path:
    """A small H.264 clip at 5 fps (cheap even at 45 s)."""
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate=5", "-t", str(seconds),
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", path)
    return path


def library(mq: MediaqEnv) -> dict[str, Path]:
    folder = mq.inputs / "library"
    (folder / "sub").mkdir(parents=True)
    files = {
        "tall_long": make_video(folder / "tall_long.mp4", 40, 72, 128),
        "tall_short": make_video(folder / "sub" / "tall_short.mp4", 10, 72, 128),
        "wide_long": make_video(folder / "wide_long.mp4", 45, 128, 72),
    }
    ffmpeg("-f", "lavfi", "-i", "color=c=red:size=64x64", "-frames:v", "1",
           folder / "square.png")
    files["square"] = folder / "square.png"
    (folder / ".hidden.mp4").write_bytes(b"not listed")
    return files


def conn_to(mq: MediaqEnv) -> psycopg.Connection[dict[str, object]]:
    return psycopg.connect(mq.url, row_factory=dict_row, options="-c search_path=mediaq,public")


def test_scan_fills_the_catalog_and_sql_answers_orientation_and_duration(
        mq: MediaqEnv) -> None:
    files = library(mq)
    out = mq.cli("assets", "scan", str(mq.inputs / "library")).stdout
    assert "4 asset(s) registered" in out

    rows = mq.query("SELECT path FROM assets WHERE orientation = 'portrait' "
                    "AND duration BETWEEN 30 AND 120")
    assert [r["path"] for r in rows] == [str(files["tall_long"])]
    square = mq.one("SELECT * FROM asset_library WHERE path = %s", (str(files["square"]),))
    assert (square["kind"], square["width"], square["orientation"]) == ("image", 64, "square")
    wide = mq.one("SELECT * FROM assets WHERE path = %s", (str(files["wide_long"]),))
    assert (wide["kind"], wide["video_codec"], wide["width"], wide["height"]) == \
        ("video", "h264", 128, 72)
    assert abs(wide["duration"] - 45) < 0.5

    # A second scan updates the same rows.
    mq.cli("assets", "scan", str(mq.inputs / "library"), "--hash")
    assert mq.one("SELECT count(*) AS n, count(content_hash) AS hashed FROM assets") == \
        {"n": 4, "hashed": 4}

    listed = json.loads(mq.cli("assets", "list", "--orientation", "landscape",
                               "--min-duration", "30", "--json").stdout)
    assert [r["path"] for r in listed] == [str(files["wide_long"])]
    assert "wide_long.mp4" in mq.cli("assets").stdout  # bare: the list, newest first
    shown = json.loads(mq.cli("assets", "show", str(listed[0]["id"]), "--json").stdout)
    assert shown["orientation"] == "landscape" and shown["tag_scores"] == []
    assert mq.cli("assets", "show", "999999", check=False).returncode == 1


def test_tags_filter_and_a_seeded_random_draw(mq: MediaqEnv) -> None:
    with conn_to(mq) as conn:
        for number in range(12):
            found = catalog.AssetFacts(path=f"/lib/v{number}.mp4", kind="video",
                                       width=1280 if number % 2 else 720,
                                       height=720 if number % 2 else 1280,
                                       duration=10.0 * number)
            if number % 3 == 0:
                found.tags.append(("beach", 0.8, "test"))
            catalog.register(conn, found, origin="scan")
        conn.commit()
    listed = json.loads(mq.cli("assets", "list", "--orientation", "landscape",
                               "--min-duration", "30", "--tag", "beach", "--json").stdout)
    assert sorted(r["path"] for r in listed) == ["/lib/v3.mp4", "/lib/v9.mp4"]
    assert listed[0]["tags"] == ["beach"]

    args = ("assets", "random", "--count", "3", "--seed", "7", "--orientation", "portrait",
            "--min-duration", "20")
    first = mq.cli(*args).stdout.split()
    assert first == mq.cli(*args).stdout.split()  # the same seed draws the same inputs
    assert len(first) == 3 and len(set(first)) == 3
    matching = {f"/lib/v{n}.mp4" for n in range(2, 12, 2)}  # portrait, 20 s and more
    assert set(first) <= matching
    assert mq.cli(*args[:-1], "999", check=False).returncode == 1  # nothing matches


def test_a_completed_job_catalogues_its_input_and_outputs(mq: MediaqEnv) -> None:
    source = make_video(mq.inputs / "clip.mp4", 3, 128, 72)
    mq.apply_workflow({
        "workflow_code": "WF-CAT", "workflow_name": "catalog", "workflow_type": "video",
        "steps": [{"step_number": 1, "step_name": "thumbs", "action": "generate_thumbnails",
                   "parameters": {"count": 2}},
                  {"step_number": 2, "step_name": "scenes", "action": "detect_scenes"}]})
    code = mq.submit("WF-CAT", source)
    mq.run_burst()
    job = mq.job(code)
    assert job["status"] == "completed", job["error_message"]
    # What the worker calls once the job is committed: its own transaction, never raising.
    pool = db.make_pool(mq.url, size=1)
    try:
        catalog.record_job_quietly(pool, job["id"])
        catalog.record_job_quietly(pool, 10**9)  # no such job: nothing, quietly
    finally:
        pool.close()
    with conn_to(mq) as conn:
        touched = catalog.record_job(conn, job["id"])  # again: the same rows
        conn.commit()
    assert mq.one("SELECT count(*) AS n FROM assets")["n"] == len(touched)
    source_row = mq.one("SELECT * FROM asset_library WHERE path = %s", (str(source),))
    assert source_row["origin"] == "input" and source_row["scene_count"] == 1
    assert source_row["used_by_jobs"] == 1
    assert source_row["thumbnail_path"].endswith((".jpg", ".webp", ".png"))
    outputs = mq.query("SELECT * FROM asset_library WHERE derived_from = %s ORDER BY path",
                       (source_row["id"],))
    assert len(outputs) == len(touched) - 1 >= 3  # two thumbnails and the scene report(s)
    assert all(o["made_by_jobs"] == [code] and o["content_hash"] for o in outputs)
    thumbs = [o for o in outputs if o["kind"] == "image"]
    assert len(thumbs) == 2 and all(o["width"] for o in thumbs)


def test_the_api_lists_and_shows_assets(mq: MediaqEnv) -> None:
    files = library(mq)
    mq.cli("assets", "scan", str(mq.inputs / "library"))
    with conn_to(mq) as conn:
        token = create_token(conn, "viewer", "t-viewer")[0]
        conn.commit()
    _, base = mq.start_web()
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(base + "/api/media/assets", timeout=10).status_code == 401
    got = requests.get(base + "/api/media/assets", headers=headers, timeout=10,
                       params={"orientation": "portrait", "minDuration": 30})
    assert got.status_code == 200, got.text
    data = got.json()["data"]
    assert [a["path"] for a in data] == [str(files["tall_long"])]
    one = requests.get(f"{base}/api/media/assets/{data[0]['id']}", headers=headers, timeout=10)
    assert one.json()["asset"]["orientation"] == "portrait"
    assert requests.get(f"{base}/api/media/assets/999999", headers=headers,
                        timeout=10).status_code == 404
