"""The media library's speeds (issue 24): tagging and face detection in frames per second
on one core, a digest's time against its source's duration, and catalog queries at
100,000 assets.

    .venv/bin/python -m benchmarks.library
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS, create_database, server
from mediaq import catalog, db, migrate

ASSETS = int(os.environ.get("BENCH_ASSETS", "100000"))
DIGEST_SECONDS = int(os.environ.get("BENCH_DIGEST_SECONDS", "60"))


def one_core() -> None:
    """Pin this process to one core, as a worker slot is one core."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def frames_per_second(call: Any, rounds: int) -> float:
    call()  # warm: model built, caches filled
    started = time.perf_counter()
    for _ in range(rounds):
        call()
    return rounds / (time.perf_counter() - started)


def vision() -> dict[str, float]:
    import skimage.data

    from mediaq.actions.vision import models
    from mediaq.actions.vision.sampling import load_picture

    photo = Path(skimage.data.__file__).parent / "astronaut.png"
    picture = load_picture(photo, 448)
    frame_720p = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(photo)
                            .convert("RGB").resize((1280, 720)))
    tagger = models.tagger("cpu")
    moderator = models.moderator("cpu")
    return {
        "tag_fps_one_core": frames_per_second(lambda: tagger.classify(picture, 5), 40),
        "nsfw_fps_one_core": frames_per_second(lambda: moderator.nsfw(picture), 20),
        "faces_fps_one_core_720p": frames_per_second(
            lambda: models.detect_faces(frame_720p, 0.6), 20),
        "faces_fps_one_core_512px": frames_per_second(
            lambda: models.detect_faces(np.asarray(picture), 0.6), 20),
    }


def digest(work: Path) -> dict[str, float]:
    from tests.helpers import run_action

    source = work / "digest_src.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
         f"testsrc2=size=1280x720:rate=30:duration={DIGEST_SECONDS}",
         "-f", "lavfi", "-i", f"sine=f=440:d={DIGEST_SECONDS}",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
         str(source)], check=True)
    started = time.perf_counter()
    result = run_action("generate_digest", source, work / "out", target_length=20)
    spent = time.perf_counter() - started
    return {"source_seconds": float(DIGEST_SECONDS), "digest_seconds": result.data["duration"],
            "wall_seconds": round(spent, 2), "time_over_source": round(spent / DIGEST_SECONDS, 3)}


FILL = """
INSERT INTO mediaq.assets (path, kind, duration, width, height, video_codec, origin)
SELECT '/library/' || i || '.mp4', 'video', (i %% 600)::float8,
       CASE WHEN i %% 3 = 0 THEN 1080 ELSE 1920 END,
       CASE WHEN i %% 3 = 0 THEN 1920 ELSE 1080 END, 'h264', 'scan'
  FROM generate_series(1, %(n)s) AS i;
INSERT INTO mediaq.asset_tags (asset_id, tag, score, source)
SELECT id, (ARRAY['beach', 'city', 'dog', 'cat', 'car'])[1 + id %% 5], 0.5, 'bench'
  FROM mediaq.assets
;
ANALYZE mediaq.assets;
ANALYZE mediaq.asset_tags;
"""


def catalog_queries(admin: str) -> dict[str, float]:
    url = create_database(admin)
    migrate.upgrade(url)
    with db.connect(url) as conn:
        for statement in FILL.split(";"):
            if statement.strip():
                conn.execute(statement, {"n": ASSETS})
        conn.commit()
        timings: dict[str, float] = {}
        asks = {
            "portrait_30_120": catalog.Filters(orientation="portrait", min_duration=30,
                                               max_duration=120, limit=100),
            "landscape_30plus_tag_beach": catalog.Filters(orientation="landscape",
                                                          min_duration=30, tag="beach",
                                                          limit=100),
        }
        for name, filters in asks.items():
            runs = []
            for _ in range(7):
                started = time.perf_counter()
                catalog.search(conn, filters)
                runs.append((time.perf_counter() - started) * 1000)
            timings[f"{name}_ms"] = round(statistics.median(runs), 2)
        started = time.perf_counter()
        drawn = catalog.draw_random(conn, catalog.Filters(orientation="portrait",
                                                          min_duration=30, max_duration=120),
                                    count=10, seed=1)
        timings["draw_random_10_ms"] = round((time.perf_counter() - started) * 1000, 2)
        assert len(drawn) == 10
        sql = ("SELECT count(*) FROM mediaq.assets WHERE orientation = 'portrait' "
               "AND duration BETWEEN 30 AND 120")
        started = time.perf_counter()
        count = conn.execute(sql).fetchone()
        timings["sql_count_portrait_30_120_ms"] = round((time.perf_counter() - started) * 1000,
                                                        2)
        timings["matching"] = float(next(iter(count.values())) if count else 0)
    return {"assets": float(ASSETS), **timings}


def main() -> None:
    one_core()
    work = Path(tempfile.mkdtemp(prefix="mediaq-bench-library-"))
    figures: dict[str, Any] = {"load_before": os.getloadavg()[0]}
    figures["vision"] = vision()
    print(json.dumps(figures["vision"]), flush=True)
    figures["digest"] = digest(work)
    print(json.dumps(figures["digest"]), flush=True)
    with server("library") as (admin, _root):
        figures["catalog"] = catalog_queries(admin)
    figures["load_after"] = os.getloadavg()[0]
    print(json.dumps(figures, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "library.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
