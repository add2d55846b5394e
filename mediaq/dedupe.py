"""Content de-duplication: an identical submission inside a workflow's window gets
the job the first one created.

Identical means the same input content (BLAKE3 of the file, streamed), the same
workflow version and the same job parameters. The key is taken with an INSERT on a
primary key, so twenty concurrent submissions create exactly one job.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import psycopg
from blake3 import blake3

from mediaq.errors import SubmissionRefused
from mediaq.queries import queries

CHUNK = 1 << 20


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
