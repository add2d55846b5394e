"""A worker's view of object storage: inputs through the cache, outputs published in two
moves (upload under the attempt's own key before the fenced commit; copy to the final
key after it, ``mediaq.worker.publications``), and the sweep of what dead attempts left
behind.

Final keys are ``<output_root>/<job_code>/<name>``; an attempt's are
``<output_root>/.staging/<job_code>.a<attempt>.s<step>[.i<item>]/<name>``, so nothing a
worker uploads before its commit is ever at a final key, and a worker that lost its lease
(its commit is refused) leaves only objects the sweep removes (a committed attempt's
staged objects stay until they are published).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from mediaq.errors import InputRefused
from mediaq.outputs import sha256_of
from mediaq.storage import s3 as s3ops
from mediaq.storage.cache import InputCache, Progress
from mediaq.storage.uri import PathMap, S3Uri, is_s3

log = structlog.get_logger("mediaq.storage")

STAGING = ".staging"
_ATTEMPT = re.compile(r"(?P<code>.+)\.a(?P<attempt>\d+)\.s\d+(\.i\d+)?")


@dataclass(frozen=True)
class StagedObject:
    staged: S3Uri  # under the attempt's own prefix
    final: S3Uri


@dataclass(frozen=True)
class SweepReport:
    objects_removed: int
    uploads_aborted: int


class ObjectStorage:
    """One per worker process; thread-safe (the client and the cache are)."""

    def __init__(self, client_settings: s3ops.ClientSettings, cache: InputCache,
                 output_root: str | None, path_map: PathMap,
                 local_outputs: Path | None = None) -> None:
        self.client_settings = client_settings
        self.cache = cache
        self.output_root = S3Uri.parse(output_root, prefix=True) if output_root else None
        self.path_map = path_map
        # The local output folder: with an s3:// root, the commit leaves a copy of each
        # output there (<local_outputs>/<job_code>/<name>) for later steps on this host.
        self.local_outputs = local_outputs
        # Local copies already checked against their record: (location, sha256) ->
        # (size, mtime_ns) seen then, so each later step does not hash them again.
        self._checked: dict[tuple[str, str], tuple[int, int]] = {}

    @property
    def s3(self) -> Any:
        return s3ops.client(self.client_settings)

    # -- inputs -------------------------------------------------------------------------

    def fetch(self, uri: S3Uri, on_progress: Progress | None = None,
              held: list[str] | None = None) -> Path:
        return self.cache.fetch(self.s3, uri, self.client_settings, on_progress, held)

    def localize(self, location: str, held: list[str] | None = None) -> Path:
        """A path this host can open for a recorded location: an s3:// object through
        the cache, a canonical path through the path map."""
        if is_s3(location):
            return self.fetch(S3Uri.parse(location), held=held)
        return Path(self.path_map.to_local(location))

    def local_copy(self, location: str, output_data: dict[str, Any] | None = None) -> Path:
        """A path this host can open for a recorded output: an ``s3://`` object is read
        from this host's copy in the local output folder when its size and SHA-256 still
        match the record (the step ran here), else fetched through the cache; a local
        path goes through the path map."""
        if not is_s3(location):
            return Path(self.path_map.to_local(location))
        record = next((o for o in (output_data or {}).get("outputs", [])
                       if o.get("path") == location), None)
        job_code, name = location.rsplit("/", 2)[-2:]
        if self.local_outputs is not None and record is not None \
                and self._matches(self.local_outputs / job_code / name, location, record):
            return self.local_outputs / job_code / name
        return self.localize(location)

    def _matches(self, here: Path, location: str, record: dict[str, Any]) -> bool:
        try:
            stat = here.stat()
        except OSError:
            return False
        key = (location, str(record.get("sha256")))
        seen = (stat.st_size, stat.st_mtime_ns)
        if self._checked.get(key) == seen:
            return True
        if stat.st_size != record.get("size_bytes") or sha256_of(here) != key[1]:
            return False
        if len(self._checked) > 10_000:  # a long-lived worker: forget old jobs' copies
            self._checked.clear()
        self._checked[key] = seen
        return True

    def with_local_paths(self, outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Earlier outputs as an action sees them: ``path`` as recorded (an ``s3://``
        location stays one), ``local_path`` where this host already has it (a local
        output through the path map; an object whose copy here was checked). Nothing is
        fetched: an action asks for the others through ``ActionContext.local_path``."""
        if self.output_root is None and not self.path_map.pairs:
            return outputs
        readable = []
        for output in outputs:
            here = self.known_copy(output)
            readable.append({**output, "local_path": str(here)} if here is not None
                            else output)
        return readable

    def known_copy(self, output: dict[str, Any]) -> Path | None:
        """A path here for a recorded output without fetching or hashing anything: a
        local output through the path map, an object's copy in the local output folder
        already checked against the same record (unchanged since); else None."""
        location = str(output["path"])
        if not is_s3(location):
            return Path(self.path_map.to_local(location))
        if self.local_outputs is None:
            return None
        job_code, name = location.rsplit("/", 2)[-2:]
        here = self.local_outputs / job_code / name
        try:
            stat = here.stat()
        except OSError:
            return None
        key = (location, str(output.get("sha256")))
        return here if self._checked.get(key) == (stat.st_size, stat.st_mtime_ns) else None

    def trust_local_copy(self, output: dict[str, Any]) -> None:
        """This host's copy of an output it has just committed (the file it hashed for
        the record, put in the local output folder): later steps here read it without
        hashing it again."""
        location = str(output["path"])
        if not is_s3(location) or self.local_outputs is None:
            return
        job_code, name = location.rsplit("/", 2)[-2:]
        try:
            stat = (self.local_outputs / job_code / name).stat()
        except OSError:
            return  # not placed here: read from the store when asked for
        if stat.st_size != output.get("size_bytes"):
            return
        if len(self._checked) > 10_000:
            self._checked.clear()
        self._checked[(location, str(output.get("sha256")))] = (stat.st_size, stat.st_mtime_ns)

    # -- outputs ------------------------------------------------------------------------

    def final_uri(self, job_code: str, name: str) -> S3Uri:
        assert self.output_root is not None
        return self.output_root.child(job_code, name)

    def attempt_prefix(self, stage_dir: Path) -> S3Uri:
        """The attempt's own prefix, named as its local staging folder is."""
        assert self.output_root is not None
        return S3Uri(self.output_root.bucket,
                     f"{self.output_root.key}{STAGING}/{stage_dir.name}/")

    def stage(self, files: Sequence[Path], stage_dir: Path, job_code: str,
              on_progress: Callable[[float], None] | None = None) -> list[StagedObject]:
        """Upload ``files`` under the attempt's own prefix (never a final key)."""
        prefix = self.attempt_prefix(stage_dir)
        total = sum(f.stat().st_size for f in files) or 1
        sent = 0

        def on_bytes(count: int) -> None:
            nonlocal sent
            sent += count
            if on_progress is not None:
                on_progress(min(sent / total, 1.0))

        staged = []
        for path in files:
            target = prefix.child(path.name)
            s3ops.upload(self.s3, path, target, self.client_settings, on_bytes)
            staged.append(StagedObject(target, self.final_uri(job_code, path.name)))
        return staged

    def publish(self, staged: str, final: str, size: int, sha256: str) -> bool:
        """Copy a committed step's staged object to its final key (server-side), after
        the commit that recorded it (``mediaq.worker.publications``); True when the
        final key holds it. A final object of the recorded size (and SHA-256, where the
        store keeps one) with its staged object gone is taken as published; the staged
        object is copied otherwise (copying it again gives the same object). False when
        neither is there."""
        source, target = S3Uri.parse(staged), S3Uri.parse(final)
        if self._size(source) == size:
            s3ops.copy(self.s3, source, target, self.client_settings)
            return True
        if self._size(target) == size:  # an earlier publisher copied it, then tidied up
            checksum = s3ops.sha256_checksum(self.s3, target)
            return checksum is None or checksum == sha256
        log.warning("storage:staged_missing", staged=staged, final=final)
        return False

    def _size(self, uri: S3Uri) -> int | None:
        try:
            return s3ops.head(self.s3, uri).size
        except InputRefused:  # no such object
            return None

    def discard(self, stage_dir: Path) -> None:
        """Remove an attempt's staged objects (after its commit, or when it failed);
        what a killed worker never removes, the sweep does."""
        if self.output_root is None:
            return
        try:
            s3ops.delete_prefix(self.s3, self.attempt_prefix(stage_dir))
        except Exception as exc:  # the sweep removes them later
            log.warning("storage:discard_failed", prefix=stage_dir.name, error=str(exc))

    # -- the sweep ----------------------------------------------------------------------

    def sweep(self, live_attempts: Callable[[list[str]], set[tuple[str, int]]]) -> SweepReport:
        """Remove staged objects, and abort multipart uploads, of attempts that are not
        running now (``live_attempts(codes)``: the (job_code, attempt) pairs that are).
        Listing comes before asking: an attempt that starts after the question uploads
        under a prefix the listing did not see."""
        if self.output_root is None:
            return SweepReport(0, 0)
        staging = self.output_root.child(STAGING + "/")
        folders = s3ops.list_prefixes(self.s3, staging)
        uploads = s3ops.multipart_uploads(self.s3, staging)
        attempts: dict[str, tuple[str, int]] = {}
        names = set(folders) | {key[len(staging.key):].partition("/")[0]
                                for key, _ in uploads}
        for name in names:
            match = _ATTEMPT.fullmatch(name)
            if match:
                attempts[name] = (match["code"], int(match["attempt"]))
        if not attempts:
            return SweepReport(0, 0)
        live = live_attempts(sorted({code for code, _ in attempts.values()}))
        dead = {name for name, attempt in attempts.items() if attempt not in live}
        aborted = 0
        for key, upload_id in uploads:
            if key[len(staging.key):].partition("/")[0] in dead:
                s3ops.abort_upload(self.s3, staging.bucket, key, upload_id)
                aborted += 1
        removed = sum(s3ops.delete_prefix(self.s3, staging.child(name + "/"))
                      for name in dead if name in folders)
        return SweepReport(removed, aborted)
