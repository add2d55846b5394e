"""Watch folders on bucket prefixes: which objects are ready.

An object store tells a watcher nothing, and an object's LastModified is when its
upload began, so readiness is observed: an object is ready once two listings at least
the folder's settle time apart saw the same size and ETag (a key overwritten in the
meantime starts over). What each key looked like, and since when, is remembered per
process; a watcher that restarts only waits one settle time more. Every host that
watches the prefix may submit the object: the database's unique key on (watch folder,
key, ETag) gives each version one job, and a key re-uploaded with other content (a new
ETag) gets a new one.

The same rules as a local folder's decide what counts: the patterns match the object's
name; hidden names (any part of the key), in-progress names, empty objects and
"folder" markers (keys ending in "/") are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mediaq.files import is_in_progress_name, matches
from mediaq.storage import s3 as s3ops
from mediaq.storage.uri import S3Uri


@dataclass(frozen=True)
class ObjectVersion:
    rel_path: str  # the key below the watched prefix
    size: int
    etag: str
    modified_ns: int


def list_watched(s3: Any, prefix: S3Uri, patterns: Sequence[str], *,
                 recursive: bool) -> list[ObjectVersion]:
    """The objects under ``prefix`` a watch folder considers (paginated listing)."""
    found = []
    for entry in s3ops.list_objects(s3, prefix, recursive=recursive):
        rel_path = entry.key[len(prefix.key):]
        parts = rel_path.split("/")
        if (not rel_path or rel_path.endswith("/") or entry.size == 0
                or any(part.startswith(".") for part in parts)
                or is_in_progress_name(parts[-1]) or not matches(parts[-1], patterns)):
            continue
        found.append(ObjectVersion(rel_path, entry.size, entry.etag, entry.modified_ns))
    return found


@dataclass
class SettleTracker:
    """Per watch folder: each key's (size, ETag) and when this process first saw it so."""

    seen: dict[int, dict[str, tuple[int, str, float]]] = field(default_factory=dict)

    def ready(self, folder_id: int, listed: Iterable[ObjectVersion], settle_seconds: float,
              now: float) -> tuple[list[ObjectVersion], float | None]:
        """The objects that have settled by ``now`` (monotonic seconds), and when the
        next unsettled one will have (None: none waits)."""
        before = self.seen.get(folder_id, {})
        after: dict[str, tuple[int, str, float]] = {}
        ready: list[ObjectVersion] = []
        soonest: float | None = None
        for obj in listed:
            size, etag, since = before.get(obj.rel_path, (obj.size, obj.etag, now))
            if (size, etag) != (obj.size, obj.etag):
                since = now  # changed since the last listing: the wait starts again
            after[obj.rel_path] = (obj.size, obj.etag, since)
            settles_at = since + settle_seconds
            # Two listings apart: a zero settle time needs no second look.
            if settles_at <= now and (since < now or settle_seconds == 0):
                ready.append(obj)
            else:
                soonest = settles_at if soonest is None else min(soonest, settles_at)
        self.seen[folder_id] = after  # keys gone from the prefix are forgotten
        return ready, soonest

    def forget(self, keep: set[int]) -> None:
        for folder_id in set(self.seen) - keep:
            del self.seen[folder_id]
