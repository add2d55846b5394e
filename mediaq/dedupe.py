"""Content de-duplication: an identical submission inside a workflow's window gets
the job the first one created.

Identical means the same input content, the same workflow version and the same job
parameters. A local file's content is its BLAKE3 (streamed); an ``s3://`` object's is
its SHA-256 ("sha256:<hex>"): the one the store keeps when it was uploaded with a
whole-object SHA-256 checksum, else streamed from this host's input cache (fetched once;
the worker that runs the job finds it there). Never the ETag: a multipart upload's ETag
depends on its part size, so the same bytes can have several. The key is taken with an
INSERT on a primary key, so twenty concurrent submissions create exactly one job.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import psycopg
from blake3 import blake3

from mediaq.config import StorageSettings, load_settings
from mediaq.errors import PermanentError, SubmissionRefused, TransientError
from mediaq.queries import queries
from mediaq.storage import s3 as s3ops
from mediaq.storage.cache import InputCache
from mediaq.storage.setup import client_settings
from mediaq.storage.uri import check_s3_input, is_s3

CHUNK = 1 << 20


def input_hash(input_path: str | Path, storage: StorageSettings | None = None) -> str:
    """The content digest of a submitted input: :func:`object_hash` for an ``s3://``
    object (``storage``: the process's settings when not given), else
    :func:`content_hash`."""
    if is_s3(input_path):
        return object_hash(str(input_path), storage or load_settings().storage)
    return content_hash(Path(input_path))


def object_hash(location: str, storage: StorageSettings) -> str:
    """``sha256:<hex>`` of an object's content; SubmissionRefused with one line when it
    cannot be read, or lies outside the bucket-prefix input roots (nothing a worker would
    refuse is fetched to be hashed)."""
    try:
        uri = check_s3_input(location, storage.bucket_input_roots)
        settings = client_settings(storage)
        s3 = s3ops.client(settings)
        digest = s3ops.sha256_checksum(s3, uri)
        if digest is None:
            cache = InputCache(storage.effective_cache_dir, storage.cache_max_mb * 1024 * 1024)
            digest = cache.sha256(s3, uri, settings)
    except (PermanentError, TransientError) as exc:
        raise SubmissionRefused(f"{exc.message} (while hashing it to de-duplicate)") from None
    return f"sha256:{digest}"


def content_hash(path: Path) -> str:
    """BLAKE3 of the file's bytes, hex."""
    digest = blake3()
    try:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                digest.update(chunk)
    except OSError as exc:
        raise SubmissionRefused(f"{path}: cannot be read to de-duplicate it "
                                f"({exc.strerror})") from None
    return digest.hexdigest()


def dedupe_key(workflow_code: str, version: int, digest: str, params: dict[str, Any]) -> str:
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    params_digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return f"{workflow_code}:v{version}:{digest}:{params_digest}"


def claim_or_find(cur: psycopg.Cursor[dict[str, Any]], key: str,
                  window_s: int) -> dict[str, Any] | None:
    """None when this submission holds ``key`` now; else the job that holds it."""
    if cur.execute(queries["dedupe_claim"], {"key": key, "window_s": window_s}).fetchone():
        return None
    return cur.execute(queries["dedupe_holder"], {"key": key}).fetchone()
