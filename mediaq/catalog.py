"""The media library catalog: every file mediaq has seen or made, as rows of ``assets``.

Two ways in: :func:`record_job` (call it once a job has completed; it reads the job's
input and its completed steps' ``output_data`` and registers the input and each
output, outputs derived from the input) and :func:`scan_folder` (register what a
folder holds). Facts come from a header probe of each file (PyAV for audio/video,
Pillow for images) merged with what the steps measured (scenes, faces, tags,
loudness, pages). Cataloguing never fails a job: a file that cannot be probed is
still registered, with its kind from its extension and no facts.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import structlog
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from mediaq import db
from mediaq.errors import MediaqError
from mediaq.files import walk_files
from mediaq.storage.uri import is_s3

log = structlog.get_logger("mediaq.catalog")

VIDEO = frozenset({"mp4", "mov", "mkv", "webm", "avi", "m4v", "ts", "mts", "m2ts", "mpg",
                   "mpeg", "wmv", "flv", "3gp", "ogv"})
AUDIO = frozenset({"mp3", "wav", "flac", "aac", "m4a", "ogg", "oga", "opus", "wma", "aif",
                   "aiff"})
IMAGE = frozenset({"jpg", "jpeg", "png", "webp", "gif", "tif", "tiff", "bmp", "heic",
                   "heif", "avif"})
DOCUMENT = frozenset({"pdf", "docx", "doc", "odt", "rtf", "txt", "md", "pptx", "xlsx"})
KINDS = ("video", "audio", "image", "document", "other")
ORIENTATIONS = ("landscape", "portrait", "square")

# Step data keys copied onto the asset the step read (its source): the step measured
# them on that file. Key in output_data -> column.
_SOURCE_FACTS = {"scene_count": "scene_count", "faces_count": "faces_count",
                 "page_count": "page_count", "input_lufs": "loudness_lufs",
                 "integrated_lufs": "loudness_lufs"}


def kind_of(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    for kind, suffixes in (("video", VIDEO), ("audio", AUDIO), ("image", IMAGE),
                           ("document", DOCUMENT)):
        if suffix in suffixes:
            return kind
    return "other"


@dataclass
class AssetFacts:
    """One row's worth of facts; None = not known (keeps what the row had)."""

    path: str
    kind: str
    size_bytes: int | None = None
    content_hash: str | None = None
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    container: str | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    hdr: bool | None = None
    loudness_lufs: float | None = None
    page_count: int | None = None
    faces_count: int | None = None
    scene_count: int | None = None
    thumbnail_path: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    tags: list[tuple[str, float, str]] = field(default_factory=list)

    def row(self, *, origin: str, derived_from: int | None) -> dict[str, Any]:
        values = {k: v for k, v in self.__dict__.items() if k not in ("tags", "facts")}
        return {**values, "origin": origin, "derived_from": derived_from,
                "facts": Jsonb(self.facts)}


def probe_facts(path: Path) -> AssetFacts:
    """What the file's headers say (no full decode); only the kind if it cannot be read."""
    found = AssetFacts(path=str(path), kind=kind_of(path))
    try:
        found.size_bytes = path.stat().st_size
    except OSError:
        return found
    try:
        if found.kind in ("video", "audio"):
            _probe_av(path, found)
        elif found.kind == "image":
            _probe_image(path, found)
    except (MediaqError, OSError, ValueError):
        pass  # registered all the same, with its kind and size: the library lists it
    return found


def _probe_av(path: Path, found: AssetFacts) -> None:
    from mediaq.actions.avio import probe  # PyAV only for the commands that probe

    info = probe(path)
    found.duration = info.duration
    found.container = info.container
    if info.video is not None:
        found.width, found.height = info.video.display_width, info.video.display_height
        found.video_codec, found.hdr = info.video.codec, info.video.hdr
    elif found.kind == "video":
        found.kind = "audio"  # a video container holding sound only
    if info.audio is not None:
        found.audio_codec = info.audio.codec


def _probe_image(path: Path, found: AssetFacts) -> None:
    from PIL import Image

    with Image.open(path) as image:
        # Sized as shown: an EXIF-rotated portrait photo is portrait.
        orientation = image.getexif().get(0x0112, 1)
        width, height = image.size
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        found.width, found.height = width, height
        found.container = (image.format or "").lower() or None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def register(conn: db.Connection, found: AssetFacts, *, origin: str,
             derived_from: int | None = None) -> int:
    """Insert or update one asset (and its tags); its id."""
    row = db.fetch_one(conn, "asset_upsert", found.row(origin=origin,
                                                       derived_from=derived_from))
    assert row is not None
    for tag, score, source in found.tags:
        db.execute(conn, "asset_tag_upsert", {"asset_id": row["id"], "tag": tag,
                                              "score": min(max(score, 0.0), 1.0),
                                              "source": source})
    return int(row["id"])


def record_job(conn: db.Connection, job_id: int) -> list[int]:
    """Catalogue a completed job: its input, each output (derived from the input) and
    what the steps measured on the input. The ids of the assets touched.

    Call it in the transaction that marks the job completed, or after it; calling it
    twice updates the same rows.
    """
    rows = db.fetch_all(conn, "asset_job_facts", {"job_id": job_id})
    if not rows or not rows[0]["input_file_path"]:
        return []
    source_text = str(rows[0]["input_file_path"])
    source = Path(source_text)
    steps = [r for r in rows if r["output_data"] is not None]
    touched: list[int] = []
    # An s3:// object is catalogued by its location (Path would fold its "//").
    input_facts = probe_facts(source) if _local_file(source_text) else AssetFacts(
        path=source_text if is_s3(source_text) else str(source), kind=kind_of(source))
    outputs: list[tuple[int | None, dict[str, Any]]] = []
    for step in steps:
        data = step["output_data"]
        merge_measurements(input_facts, data, source=step["action"] or "step")
        outputs.extend((step["step_number"], out) for out in data.get("outputs", []))
    if source.is_dir():
        input_id = None  # a scan's folder is not an asset; what it found gets jobs of its own
    else:
        input_facts.thumbnail_path = next(
            (o["path"] for _, o in outputs if o.get("role") == "thumbnail"), None)
        input_id = register(conn, input_facts, origin="input")
        _link(conn, input_id, job_id, "input", None)
        touched.append(input_id)
    for step_number, out in outputs:
        text = str(out["path"])
        path = Path(text)
        found = probe_facts(path) if _local_file(text) else AssetFacts(
            path=text if is_s3(text) else str(path), kind=kind_of(path))
        found.content_hash = out.get("sha256") or found.content_hash
        found.duration = found.duration if found.duration is not None else out.get("duration")
        found.facts = {"role": out.get("role"), "step": step_number}
        if out.get("start") is not None:  # a clip: where it came from in its source
            found.facts.update(start=out.get("start"), end=out.get("end"))
        asset_id = register(conn, found, origin="output", derived_from=input_id)
        _link(conn, asset_id, job_id, "output", step_number)
        touched.append(asset_id)
    return touched


def _local_file(text: str) -> bool:
    return not is_s3(text) and Path(text).is_file()


def record_job_quietly(pool: ConnectionPool[db.Connection], job_id: int) -> None:
    """:func:`record_job` in its own transaction, after the job's completion has been
    committed; a failure is logged, never raised: the catalog must not fail a job.

    The one line the worker calls once a job has completed."""
    try:
        with db.transaction(pool) as conn:
            record_job(conn, job_id)
    except (psycopg.Error, OSError, MediaqError) as exc:
        log.warning("catalog:record_failed", job_id=job_id, error=str(exc).splitlines()[0])


def merge_measurements(found: AssetFacts, data: dict[str, Any], *, source: str) -> None:
    """Copy what a step measured on its source onto ``found`` (counts, loudness, tags)."""
    for key, column in _SOURCE_FACTS.items():
        if isinstance(data.get(key), int | float) and not isinstance(data.get(key), bool):
            setattr(found, column, data[key])
    for tag in data.get("tags", []) or []:
        if isinstance(tag, dict) and isinstance(tag.get("label"), str):
            found.tags.append((tag["label"], float(tag.get("score", 1.0)),
                               str(tag.get("model", source))))
    if isinstance(data.get("largest_face"), dict):
        found.facts["largest_face"] = data["largest_face"]
    if isinstance(data.get("scenes"), list):
        found.facts["scenes"] = [[s.get("start"), s.get("end")] for s in data["scenes"]
                                 if isinstance(s, dict)][:500]


def _link(conn: db.Connection, asset_id: int, job_id: int, role: str,
          step: int | None) -> None:
    db.execute(conn, "asset_job_link", {"asset_id": asset_id, "job_id": job_id,
                                        "role": role, "step": step})


def scan_folder(conn: db.Connection, folder: Path, *, content_hash: bool = False,
                kinds: Iterable[str] = ("video", "audio", "image", "document")) -> int:
    """Register every media file under ``folder``; how many."""
    wanted = set(kinds)
    count = 0
    for found_file in walk_files(folder, (), recursive=True):
        path = found_file.path
        if kind_of(path) not in wanted:
            continue
        found = probe_facts(path.resolve())
        if content_hash:
            found.content_hash = sha256_file(path)
        register(conn, found, origin="scan")
        count += 1
    return count


@dataclass(frozen=True)
class Filters:
    kind: str | None = None
    orientation: str | None = None
    min_duration: float | None = None
    max_duration: float | None = None
    tag: str | None = None
    min_score: float = 0.0
    path_prefix: str | None = None
    limit: int = 100

    def params(self) -> dict[str, Any]:
        return dict(self.__dict__)


def search(conn: db.Connection, filters: Filters) -> list[db.Row]:
    """Assets of the library view matching ``filters``, newest first."""
    return db.fetch_all(conn, "assets_search", filters.params())


def get(conn: db.Connection, asset_id: int) -> db.Row | None:
    row = db.fetch_one(conn, "asset_get", {"id": asset_id})
    if row is not None:
        row["tag_scores"] = db.fetch_all(conn, "asset_tags_of", {"id": asset_id})
    return row


def summary(conn: db.Connection) -> list[db.Row]:
    return db.fetch_all(conn, "assets_summary")


def draw_random(conn: db.Connection, filters: Filters, *, count: int, seed: int) -> list[str]:
    """``count`` video paths matching ``filters``, drawn with ``seed``: the same seed
    over the same library draws the same paths in the same order.

    This is how compile_random gets its inputs from the catalog: actions never read the
    database, so the draw happens here (``mediaq assets random``) and travels to the
    step as its ``candidates`` parameter; the step checks each again by probing it.
    """
    rows = db.fetch_all(conn, "assets_matching_ids", filters.params())
    rng = random.Random(seed)
    return [row["path"] for row in rng.sample(rows, min(count, len(rows)))]
