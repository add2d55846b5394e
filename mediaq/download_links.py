"""Signed, expiring download links to a job's outputs, served by `mediaq web`.

A link is ``/api/media/downloads/{key}/{path}?expires={unix}&sig={hmac}``: ``path`` is
the output's path under the output root, and ``sig`` an HMAC-SHA256 over the job id,
that path and the expiry under a secret kept in ``download_keys`` (one per job and
token; the token-less one signs the links of webhooks). Nothing in a link is secret but
the signature, and no signature can be made without the database's secret; deleting the
job removes the secret, revoking the token disables it, so every link either signed
stops working. A path is signed only under ``<output root>/<job code>/``, and checked
again there, symlinks resolved, when a link is used.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import mimetypes
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mediaq import db
from mediaq.storage.setup import Presign
from mediaq.storage.uri import is_s3

PREFIX = "/api/media/downloads"
# Types Python's table lacks or gets wrong for media outputs.
for _type, _ext in (("application/vnd.apple.mpegurl", ".m3u8"), ("application/dash+xml", ".mpd"),
                    ("video/mp2t", ".ts"), ("video/iso.segment", ".m4s"),
                    ("image/webp", ".webp"), ("image/avif", ".avif"), ("image/heic", ".heic"),
                    ("audio/flac", ".flac"), ("audio/ogg", ".opus"), ("audio/mp4", ".m4a"),
                    ("text/vtt", ".vtt"), ("video/webm", ".webm"), ("video/x-matroska", ".mkv")):
    mimetypes.add_type(_type, _ext)


def content_type(path: Path | str) -> str:
    return mimetypes.guess_type(str(path))[0] or "application/octet-stream"


def _signature(secret: bytes, job_id: int, relative: str, expires: int) -> str:
    message = f"{job_id}\n{relative}\n{expires}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True)
class Signer:
    """Makes the links of one job for one holder (a token, or None for webhooks)."""

    key_id: int
    secret: bytes
    job_id: int
    job_code: str
    output_root: Path
    base_url: str
    ttl_seconds: int
    # Outputs in object storage get presigned URLs instead (mediaq.storage.setup):
    # they expire with the link, but revoking a token cannot recall one already given.
    presign: Presign | None = None

    @classmethod
    def for_job(cls, conn: db.Connection, job: dict[str, Any], token_id: int | None,
                output_root: Path, base_url: str, ttl_seconds: int,
                presign: Presign | None = None) -> Signer:
        params = {"job_id": job["id"], "token_id": token_id, "secret": secrets.token_bytes(32)}
        # A concurrent first use inserted the key after this statement's snapshot: the
        # statement returns nothing, and the next one reads that key.
        row = (db.fetch_one(conn, "download_key_get", params)
               or db.fetch_one(conn, "download_key_get", params))
        assert row is not None
        return cls(int(row["id"]), bytes(row["secret"]), int(job["id"]), str(job["job_code"]),
                   output_root.resolve(), base_url.rstrip("/"), ttl_seconds, presign)

    def url(self, path: str | Path, now: float | None = None) -> str | None:
        """The signed URL of an output ``path``, or None when it is not under this job's
        output folder (moved to a library, say)."""
        if is_s3(str(path)):
            return (self.presign(str(path), self.job_code, self.ttl_seconds)
                    if self.presign is not None else None)
        relative = relative_output(Path(path), self.output_root, self.job_code)
        if relative is None:
            return None
        expires = int(now if now is not None else time.time()) + self.ttl_seconds
        sig = _signature(self.secret, self.job_id, relative, expires)
        return (f"{self.base_url}{PREFIX}/{self.key_id}/{quote(relative)}"
                f"?expires={expires}&sig={sig}")

    def outputs(self, outputs: Any) -> list[dict[str, Any]]:
        """A job's ``output_metadata.outputs`` with ``url``, ``name`` and ``contentType``."""
        if not isinstance(outputs, list):
            return []
        shown = []
        for item in outputs:
            if isinstance(item, dict) and isinstance(item.get("path"), str):
                item = {**item, "name": Path(item["path"]).name,
                        "contentType": content_type(item["path"]),
                        "url": self.url(item["path"])}
            shown.append(item)
        return shown


def relative_output(path: Path, output_root: Path, job_code: str) -> str | None:
    """``path`` relative to the output root when it lies in the job's own folder."""
    try:
        resolved = path.resolve()
    except (OSError, ValueError):
        return None
    root = output_root.resolve()
    if not resolved.is_relative_to(root / job_code):
        return None
    return resolved.relative_to(root).as_posix()


class LinkRefused(Exception):
    """A link that does not (or no longer) open anything; ``status`` 403 or 404."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def resolve(conn: db.Connection, key_id: int, relative: str, expires: int, sig: str,
            output_root: Path, now: float | None = None) -> Path:
    """The file a link opens, or LinkRefused: 404 for a key that is gone (job deleted)
    or a path that is not an output; 403 for a bad signature, an expired link or a
    revoked token. The signature is checked before anything about the file is read."""
    row = db.fetch_one(conn, "download_key_check", {"key_id": key_id})
    if row is None:
        raise LinkRefused(404, "no such download (the job was deleted, or never existed)")
    expected = _signature(bytes(row["secret"]), int(row["job_id"]), relative, expires)
    if not hmac.compare_digest(expected, sig):
        raise LinkRefused(403, "this download link's signature does not match")
    if expires < (now if now is not None else time.time()):
        raise LinkRefused(403, "this download link has expired")
    if not row["live"]:
        raise LinkRefused(403, "the token this link was made for was revoked")
    inside = relative_output(output_root / relative, output_root, str(row["job_code"]))
    target = output_root.resolve() / inside if inside else None
    if target is None or inside != relative or not target.is_file():
        raise LinkRefused(404, f"{relative}: no such output")
    return target


def with_output_urls(conn: db.Connection, payload: dict[str, Any], output_root: Path,
                     base_url: str, ttl_seconds: int,
                     presign: Presign | None = None) -> dict[str, Any]:
    """A webhook payload whose ``job.output_metadata.outputs`` carry signed URLs (made
    when the notification is sent, so a retry hours later still sends live links)."""
    job = payload.get("job")
    if not isinstance(job, dict) or not isinstance(job.get("output_metadata"), dict):
        return payload
    meta = job["output_metadata"]
    if not meta.get("outputs") or not isinstance(job.get("id"), int):
        return payload
    if db.fetch_one(conn, "download_job_exists", {"job_id": job["id"]}) is None:
        return payload
    signer = Signer.for_job(conn, job, None, output_root, base_url, ttl_seconds, presign)
    return {**payload, "job": {**job, "output_metadata": {
        **meta, "outputs": signer.outputs(meta["outputs"])}}}
