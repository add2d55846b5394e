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
import posixpath
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from mediaq import db
from mediaq.storage.setup import Presign
from mediaq.storage.uri import S3Uri, is_s3

PREFIX = "/api/media/downloads"
FOLDER = "folder:"  # what a folder link signs, before the job code (no path starts so)
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
    # The s3:// output root ("s3://bucket/prefix/"): an HLS playlist there is served by
    # the API, rewritten so that each URI in it is a link of its own (rewrite_hls).
    remote_root: str | None = None

    @classmethod
    def for_job(cls, conn: db.Connection, job: dict[str, Any], token_id: int | None,
                output_root: Path, base_url: str, ttl_seconds: int,
                presign: Presign | None = None, remote_root: str | None = None) -> Signer:
        params = {"job_id": job["id"], "token_id": token_id, "secret": secrets.token_bytes(32)}
        # A concurrent first use inserted the key after this statement's snapshot: the
        # statement returns nothing, and the next one reads that key.
        row = (db.fetch_one(conn, "download_key_get", params)
               or db.fetch_one(conn, "download_key_get", params))
        assert row is not None
        return cls(int(row["id"]), bytes(row["secret"]), int(job["id"]), str(job["job_code"]),
                   output_root.resolve(), base_url.rstrip("/"), ttl_seconds, presign,
                   remote_root)

    def url(self, path: str | Path, now: float | None = None) -> str | None:
        """The signed URL of an output ``path``, or None when it is not under this job's
        output folder (moved to a library, say)."""
        if is_s3(str(path)):
            relative = self.remote_relative(str(path))
            if relative is not None and is_manifest(relative):
                return self.link(relative, now)  # served rewritten by the API
            return (self.presign(str(path), self.job_code, self.ttl_seconds)
                    if self.presign is not None else None)
        relative = relative_output(Path(path), self.output_root, self.job_code)
        if relative is None:
            return None
        return self.link(relative, now)

    def remote_relative(self, location: str) -> str | None:
        """An object's key under the s3:// output root when it is in this job's folder."""
        if self.remote_root is None or not location.startswith(self.remote_root):
            return None
        relative = location[len(self.remote_root):]
        parts = relative.split("/")
        if parts[0] != self.job_code or any(p in ("", ".", "..") for p in parts[1:]):
            return None
        return relative

    def object_url(self, relative: str, now: float | None = None) -> str | None:
        """The URL of an object ``relative`` to the s3:// output root, for a rewritten
        playlist: a playlist gets the API's own link, anything else a presigned URL."""
        if self.remote_root is None:
            return None
        return self.url(self.remote_root + relative, now)

    def link(self, relative: str, now: float | None = None) -> str:
        """The API's signed link for ``relative`` (under the output root)."""
        expires = int(now if now is not None else time.time()) + self.ttl_seconds
        sig = _signature(self.secret, self.job_id, relative, expires)
        return (f"{self.base_url}{PREFIX}/{self.key_id}/{quote(relative)}"
                f"?expires={expires}&sig={sig}")

    def folder_link(self, folder: str, now: float | None = None) -> str:
        """A base URL under which every file of the job's output folder opens (a DASH
        MPD's BaseURL: its segment templates name files no single link can sign). The
        signature, over the job's folder, sits in the path, so that a name resolved
        against it keeps it."""
        expires = int(now if now is not None else time.time()) + self.ttl_seconds
        sig = _signature(self.secret, self.job_id, FOLDER + self.job_code, expires)
        return (f"{self.base_url}{PREFIX}/{self.key_id}/{FOLDER.rstrip(':')}/{expires}/{sig}/"
                f"{quote(folder.strip('/'))}/")

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


def is_hls_playlist(name: str) -> bool:
    return name.lower().endswith(".m3u8")


def is_manifest(name: str) -> bool:
    """An HLS playlist or a DASH MPD: served by the API, rewritten, from object storage."""
    return name.lower().endswith((".m3u8", ".mpd"))


_MPD_OPEN = re.compile(r"<MPD\b[^>]*>")


def rewrite_mpd(text: str, base_url: str) -> str:
    """A DASH MPD whose relative names (SegmentTemplate's initialization and media) resolve
    against ``base_url`` (Signer.folder_link), inserted as the MPD's first BaseURL."""
    opening = _MPD_OPEN.search(text)
    if opening is None:
        raise ValueError("not a DASH MPD: no <MPD> element")
    escaped = base_url.replace("&", "&amp;").replace("<", "&lt;")
    return (text[:opening.end()] + f"\n  <BaseURL>{escaped}</BaseURL>"
            + text[opening.end():])


_URI_ATTRIBUTE = re.compile(r'URI="([^"]*)"')


def rewrite_hls(text: str, playlist: str, url_of: Any) -> str:
    """An HLS playlist (``playlist``: its path relative to the output root) with every
    URI in it (segment and variant lines, ``URI="..."`` attributes of EXT-X-MAP,
    EXT-X-MEDIA, EXT-X-KEY ...) replaced by ``url_of(relative path)``: a presigned URL for
    a segment, the API's link for a nested playlist. Players then fetch each file by an
    absolute URL and never resolve a relative name against a presigned URL's path (which
    carries no signature). A URI that leaves the job's folder, or that ``url_of``
    refuses, becomes an unreachable ``#`` line rather than a request for anything else."""
    folder = posixpath.dirname(playlist)
    job = playlist.split("/", 1)[0]

    def swap(uri: str) -> str:
        if urlsplit(uri).scheme:  # already absolute: leave it as the packager wrote it
            return uri
        target = posixpath.normpath(posixpath.join(folder, uri.split("?", 1)[0]))
        if not target.startswith(job + "/"):
            return "#"
        return str(url_of(target) or "#")

    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            lines.append(line)
        elif stripped.startswith("#"):
            lines.append(_URI_ATTRIBUTE.sub(lambda m: f'URI="{swap(m.group(1))}"', line))
        else:
            lines.append(swap(stripped))
    return "\n".join(lines) + "\n"


def remote_root_of(output_root: str | None) -> str | None:
    """The s3:// output root as links compare locations with it (``s3://bucket/prefix/``)."""
    return str(S3Uri.parse(output_root, prefix=True)) if output_root else None


def remote_location(remote_root: str, relative: str) -> S3Uri:
    """The object a link's path names under the s3:// output root."""
    return S3Uri.parse(remote_root + relative)


class LinkRefused(Exception):
    """A link that does not (or no longer) open anything; ``status`` 403 or 404."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check(conn: db.Connection, key_id: int, relative: str, expires: int, sig: str,
          now: float | None = None) -> db.Row:
    """The key row of a link whose signature, expiry and token hold; LinkRefused (404
    for a key that is gone, 403 otherwise) before anything about the file is read."""
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
    return row


def check_folder(conn: db.Connection, key_id: int, expires: int, sig: str,
                 relative: str, now: float | None = None) -> db.Row:
    """A folder link's key row when its signature (over the job's folder) holds and
    ``relative`` lies in that job's folder; LinkRefused otherwise."""
    job_code = relative.split("/", 1)[0]
    row = check(conn, key_id, FOLDER + job_code, expires, sig, now)
    if str(row["job_code"]) != job_code:  # pragma: no cover - the signature covers it
        raise LinkRefused(404, f"{relative}: no such output")
    return row


def resolve(conn: db.Connection, key_id: int, relative: str, expires: int, sig: str,
            output_root: Path, now: float | None = None) -> Path:
    """The file a link opens, or LinkRefused: 404 for a key that is gone (job deleted)
    or a path that is not an output; 403 for a bad signature, an expired link or a
    revoked token. The signature is checked before anything about the file is read."""
    row = check(conn, key_id, relative, expires, sig, now)
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
