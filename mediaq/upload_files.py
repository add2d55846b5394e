"""Uploaded files: what they are (sniffed from their bytes), where they land (under an
input root), and the job a finished upload becomes.

Bytes arrive in a part file under ``<input root>/.uploads/`` (one filesystem with the
landing place, so landing is a rename); a finished upload lands in
``<input root>/uploads/<upload id>/<file name>``. The HTTP side (tus and multipart) is
``mediaq.web.uploads``; this module never holds a file in memory.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import mimetypes
import os
import re
import secrets
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb

from mediaq import db
from mediaq.errors import Refused
from mediaq.submit import submit

SNIFF_BYTES = 4096


class UploadRefused(Refused):
    """An upload that cannot be taken (bad metadata, unknown workflow)."""


class NotMedia(UploadRefused):
    """The bytes are not a kind of file any workflow reads (answered 415)."""


# (offset, magic, type): the first match wins, so longer and more specific come first.
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"GIF87a", "image/gif"), (0, b"GIF89a", "image/gif"),
    (0, b"II*\x00", "image/tiff"), (0, b"MM\x00*", "image/tiff"),
    (0, b"%PDF-", "application/pdf"),
    (0, b"\x1aE\xdf\xa3", "video/x-matroska"),
    (0, b"ID3", "audio/mpeg"),
    (0, b"fLaC", "audio/flac"),
    (0, b"OggS", "audio/ogg"),
    (0, b"8BPS", "image/vnd.adobe.photoshop"),
    (0, b"\x00\x00\x01\xba", "video/mpeg"), (0, b"\x00\x00\x01\xb3", "video/mpeg"),
    (0, b"{\\rtf", "application/rtf"),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/x-ole-storage"),
    (0, b"PK\x03\x04", "application/zip"),
)
_RIFF = {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}
_FTYP = {b"heic": "image/heic", b"heix": "image/heic", b"mif1": "image/heif",
         b"msf1": "image/heif", b"avif": "image/avif", b"qt  ": "video/quicktime",
         b"M4A ": "audio/mp4", b"crx ": "image/x-canon-cr3"}
_OFFICE = {".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
           ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
           ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
           ".odt": "application/vnd.oasis.opendocument.text", ".epub": "application/epub+zip"}


def sniff(head: bytes, filename: str = "") -> str | None:
    """The media type of a file that starts with ``head``, from its bytes (the name only
    tells zip-based office documents apart); None: nothing a workflow reads."""
    if head[4:8] == b"ftyp":
        return _FTYP.get(head[8:12], "video/mp4")
    if head[:4] == b"RIFF" and head[8:12] in _RIFF:
        return _RIFF[head[8:12]]
    for offset, magic, kind in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            if kind == "application/zip":
                return _OFFICE.get(Path(filename).suffix.lower(), kind)
            return kind
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "video/mp2t"
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return "audio/aac"
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "audio/mpeg"
    return _text_kind(head)


def _text_kind(head: bytes) -> str | None:
    if not head or b"\x00" in head:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut at the end is fine
        if exc.start < len(head) - 4:
            return None
        text = head[: exc.start].decode("utf-8")
    if "<svg" in text[:1024]:
        return "image/svg+xml"
    if text.startswith("WEBVTT"):
        return "text/vtt"
    return "text/plain"


def sniff_file(path: Path, filename: str = "") -> str | None:
    with path.open("rb") as handle:
        return sniff(handle.read(SNIFF_BYTES), filename)


_UNSAFE = re.compile(r"[^\w.+@-]+")


def safe_filename(name: str | None, kind: str | None = None) -> str:
    """A file name that is one plain path component: no folders, no control or shell
    characters, no leading dot; the sniffed type's extension when it has none."""
    base = unicodedata.normalize("NFC", (name or "").replace("\\", "/").rsplit("/", 1)[-1])
    cleaned = _UNSAFE.sub("_", base).strip("._")[:150] or "upload"
    if kind and not Path(cleaned).suffix:
        cleaned += mimetypes.guess_extension(kind) or ""
    return cleaned


# -- what a client says about its upload ----------------------------------------------


@dataclass(frozen=True)
class Intent:
    """The tus metadata (or multipart fields): the file's name, and the job to make."""

    filename: str = "upload"
    workflow: str | None = None
    priority: int | None = None
    params: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"filename": self.filename, "workflow": self.workflow,
                "priority": self.priority, "params": self.params}


def parse_tus_metadata(header: str | None) -> dict[str, str]:
    """``Upload-Metadata: filename ZmlsZS5qcGc=,workflow V0YtSU1BR0U=`` → a dict."""
    found: dict[str, str] = {}
    for item in (header or "").split(","):
        key, _, value = item.strip().partition(" ")
        if not key:
            continue
        try:
            found[key] = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise UploadRefused(f"Upload-Metadata: {key[:40]!r} is not base64 of "
                                "UTF-8 text") from None
    return found


def tus_metadata_header(stored: dict[str, Any]) -> str:
    """The upload's metadata as an ``Upload-Metadata`` value (tus: HEAD echoes it)."""
    items = []
    for key in ("filename", "workflow", "priority", "params"):
        value = stored.get(key)
        if value in (None, {}, ""):
            continue
        text = json.dumps(value) if isinstance(value, dict) else str(value)
        items.append(f"{key} {base64.b64encode(text.encode()).decode()}")
    return ",".join(items)


def intent(fields: dict[str, str]) -> Intent:
    """The upload's intent from its metadata: ``filename`` (or ``name``), ``workflow``,
    ``priority`` (1..10), ``params`` (a JSON object of step number → parameters)."""
    workflow = (fields.get("workflow") or "").strip() or None
    priority = None
    if fields.get("priority"):
        text = fields["priority"].strip()
        if not text.isdigit() or not 1 <= int(text) <= 10:
            raise UploadRefused(f"priority must be a whole number from 1 to 10, not {text!r}")
        priority = int(text)
    params: Any = {}
    if fields.get("params"):
        try:
            params = json.loads(fields["params"])
        except ValueError:
            raise UploadRefused("params must be a JSON object") from None
        if not isinstance(params, dict) or not all(isinstance(v, dict)
                                                   for v in params.values()):
            raise UploadRefused("params must be a JSON object of step → parameters")
    if workflow and len(workflow) > 200:
        raise UploadRefused("workflow: too long")
    name = fields.get("filename") or fields.get("name") or ""
    return Intent(safe_filename(name), workflow, priority, params)


def check_workflow(conn: db.Connection, workflow: str | None) -> None:
    if workflow and db.fetch_one(conn, "workflow_submittable",
                                 {"workflow_code": workflow}) is None:
        raise UploadRefused(f"workflow {workflow} does not exist")


# -- the files --------------------------------------------------------------------------


def new_upload_id() -> str:
    return secrets.token_urlsafe(18)


def part_path(input_root: Path, upload_id: str) -> Path:
    folder = input_root / ".uploads"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{upload_id}.part"


def landing_path(input_root: Path, upload_id: str, filename: str) -> Path:
    return input_root / "uploads" / upload_id / filename


def create(pool: Any, *, token_id: int | None, want: Intent, length: int, root: Path,
           ttl_s: float, received: int = 0, upload_id: str | None = None) -> db.Row:
    """A new upload's row (and its empty part file, unless ``received`` bytes are
    already in it: a multipart post)."""
    upload_id = upload_id or new_upload_id()
    part = part_path(root, upload_id)
    with db.transaction(pool) as conn:
        check_workflow(conn, want.workflow)
        if not received:
            part.touch()
        row = db.fetch_one(conn, "upload_create", {
            "id": upload_id, "token_id": token_id, "length": length, "received": received,
            "filename": want.filename, "metadata": Jsonb(want.as_json()),
            "part_path": str(part), "ttl_s": ttl_s})
    assert row is not None
    return row


def remove(path: str | Path | None) -> None:
    if path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@dataclass(frozen=True)
class Landed:
    path: Path
    content_type: str
    job: dict[str, Any] | None


def land(pool: Any, upload: dict[str, Any], input_root: Path, submitted_by: str) -> Landed:
    """Sniff a finished upload, move it under the input root and, when its metadata
    names a workflow, submit it (one transaction with the upload's row). NotMedia:
    the part file and the row are removed. A refused submission leaves the file landed
    and the row complete with the error, and raises."""
    part = Path(upload["part_path"])
    meta = upload["metadata"] or {}
    kind = sniff_file(part, upload["filename"])
    if kind is None:
        remove(part)
        with db.transaction(pool) as conn:
            db.execute(conn, "upload_delete_any", {"id": upload["id"]})
        raise NotMedia(f"{upload['filename']}: not a media file or document (its first "
                       "bytes match no known format)")
    name = safe_filename(upload["filename"], kind)
    target = landing_path(input_root, upload["id"], name)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, target)
    done = {"id": upload["id"], "landed_path": str(target), "content_type": kind}
    try:
        with db.transaction(pool) as conn:
            job = None
            if meta.get("workflow"):
                job = submit(conn, meta["workflow"], target, priority=meta.get("priority"),
                             params=meta.get("params") or {}, submitted_by=submitted_by,
                             metadata={"upload": {"id": upload["id"], "filename": name,
                                                  "contentType": kind,
                                                  "bytes": upload["length"]}})
            db.execute(conn, "upload_complete",
                       {**done, "job_id": job["id"] if job else None, "error": None})
    except Exception as exc:
        with db.transaction(pool) as conn:
            db.execute(conn, "upload_complete", {**done, "job_id": None,
                                                 "error": str(exc)[:500]})
        raise
    return Landed(target, kind, job)


def expire(pool: Any) -> int:
    """Remove unfinished uploads past their expiry, with their bytes."""
    with db.transaction(pool) as conn:
        rows = db.fetch_all(conn, "uploads_expire")
    for row in rows:
        remove(row["part_path"])
    return len(rows)
