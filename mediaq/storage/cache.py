"""A worker host's cache of input objects: whole files, content-addressed, size-capped.

An entry is addressed by what the store says its content is (ETag and size), so the
same bytes under two names are fetched once, and a changed object (a new ETag) is never
served stale. Entries live at ``<cache_dir>/<digest>/.data`` with a hard link per name
asked for (``<digest>/<name>``: an action sees the object's own name). Using an entry
touches it; adding one evicts the least recently used until the cap holds. Processes on
one host share the folder: a per-entry ``flock`` makes the second one wait for the
first's download instead of fetching the same bytes again. The wait ends when the holder
shows no progress for the store's stall time: a frozen process (SIGSTOP, a hung mount)
keeps its lock, and its neighbours then fill or read the entry without it (each write is
an ``os.replace``, so an entry is whole either way).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from mediaq.errors import TransientError
from mediaq.storage import s3 as s3ops
from mediaq.storage.uri import S3Uri

log = structlog.get_logger("mediaq.storage.cache")

Progress = Callable[[float, str], None]
_DATA = ".data"
_SHA256 = ".data.sha256"  # the entry's content hash, once someone asked for it


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    bytes_downloaded: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


@dataclass
class InputCache:
    root: Path
    max_bytes: int
    stats: CacheStats = field(default_factory=CacheStats)
    _pinned: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fetch(self, s3: Any, uri: S3Uri, settings: s3ops.ClientSettings,
              on_progress: Progress | None = None, held: list[str] | None = None) -> Path:
        """A local path holding the object's current content (downloaded if this host
        has not got it), named as the object is. ``held``: the entry stays pinned (never
        evicted by this process) until ``release(held)``."""
        info = s3ops.head(s3, uri)
        digest = hashlib.sha256(f"{info.etag}:{info.size}".encode()).hexdigest()[:40]
        entry = self.root / digest
        with self._pin(digest), self._entry_lock(digest, settings.timeout_seconds):
            data = entry / _DATA
            if data.is_file() and data.stat().st_size == info.size:
                with self._lock:
                    self.stats.hits += 1
                os.utime(data)  # most recently used
            else:
                with self._lock:
                    self.stats.misses += 1
                self._download(s3, uri, info, entry, settings, on_progress)
            named = self._named(entry, uri.name or "object")
        if held is not None:
            with self._lock:
                self._pinned[digest] = self._pinned.get(digest, 0) + 1
            held.append(digest)
        return named

    def sha256(self, s3: Any, uri: S3Uri, settings: s3ops.ClientSettings) -> str:
        """The SHA-256 (hex) of the object's current content, streamed from this host's
        copy (fetched once, and kept for the worker that runs the job); remembered in
        the entry, so the same content is hashed once per host."""
        for _ in range(2):  # an entry evicted between the fetch and the lock: once more
            entry = self.fetch(s3, uri, settings).parent
            with self._pin(entry.name), self._entry_lock(entry.name, settings.timeout_seconds):
                stored = entry / _SHA256
                with contextlib.suppress(OSError):
                    known = stored.read_text().strip()
                    if len(known) == 64:
                        return known
                digest = hashlib.sha256()
                try:
                    with (entry / _DATA).open("rb") as fh:
                        for chunk in iter(lambda: fh.read(1 << 20), b""):
                            digest.update(chunk)
                except FileNotFoundError:
                    continue
                tmp = entry / f".sha256.{os.getpid()}.{threading.get_ident()}"
                tmp.write_text(digest.hexdigest())
                os.replace(tmp, stored)
                return digest.hexdigest()
        raise TransientError(f"{uri}: the cached copy was evicted while it was hashed")

    def release(self, held: list[str]) -> None:
        with self._lock:
            for digest in held:
                self._pinned[digest] -= 1
        held.clear()

    def _download(self, s3: Any, uri: S3Uri, info: s3ops.ObjectInfo, entry: Path,
                  settings: s3ops.ClientSettings, on_progress: Progress | None) -> None:
        self.evict(keep_free=info.size)
        entry.mkdir(parents=True, exist_ok=True)
        partial = entry / f".partial.{os.getpid()}.{threading.get_ident()}"
        received = 0

        def on_bytes(count: int) -> None:
            nonlocal received
            received += count
            if on_progress is not None and info.size:
                on_progress(min(received / info.size, 1.0), "downloading")

        try:
            s3ops.download(s3, uri, partial, settings, on_bytes, info)
            self._verify(uri, partial, info)
            os.replace(partial, entry / _DATA)
        finally:
            partial.unlink(missing_ok=True)
        with self._lock:
            self.stats.bytes_downloaded += info.size
        log.info("cache:downloaded", uri=str(uri), size=info.size)

    @staticmethod
    def _verify(uri: S3Uri, path: Path, info: s3ops.ObjectInfo) -> None:
        """The bytes on disk are the object's: its size, and its MD5 where the ETag is
        one (a single-part upload's; a multipart ETag depends on the part size used)."""
        size = path.stat().st_size
        if size != info.size:
            raise TransientError(f"{uri}: downloaded {size} bytes, the store says "
                                 f"{info.size}")
        if len(info.etag) == 32 and "-" not in info.etag:
            md5 = hashlib.md5(usedforsecurity=False)
            with path.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    md5.update(chunk)
            if md5.hexdigest() != info.etag:
                raise TransientError(f"{uri}: the downloaded bytes do not match its ETag")

    @staticmethod
    def _named(entry: Path, name: str) -> Path:
        named = entry / name
        if not named.exists():
            tmp = entry / f".{name}.{os.getpid()}.{threading.get_ident()}"
            os.link(entry / _DATA, tmp)
            os.replace(tmp, named)
        return named

    def evict(self, keep_free: int = 0) -> int:
        """Remove least recently used entries until the cache plus ``keep_free`` bytes
        fits the cap; entries this process is using stay. How many were removed."""
        entries = []
        total = 0
        for entry in self.root.iterdir() if self.root.is_dir() else []:
            data = entry / _DATA
            try:
                stat = data.stat()
            except OSError:
                continue
            entries.append((stat.st_mtime, stat.st_size, entry))
            total += stat.st_size
        removed = 0
        for _, size, entry in sorted(entries, key=lambda e: e[0]):
            if total + keep_free <= self.max_bytes:
                break
            with self._lock:
                if self._pinned.get(entry.name):
                    continue
            shutil.rmtree(entry, ignore_errors=True)
            total -= size
            removed += 1
        return removed

    @contextmanager
    def _pin(self, digest: str) -> Iterator[None]:
        with self._lock:
            self._pinned[digest] = self._pinned.get(digest, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._pinned[digest] -= 1

    @contextmanager
    def _entry_lock(self, digest: str, stall_seconds: float) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / f".{digest}.lock").open("a") as fh:
            locked = _lock_unless_stalled(fh, self.root / digest, stall_seconds)
            try:
                yield
            finally:
                if locked:
                    fcntl.flock(fh, fcntl.LOCK_UN)


def _lock_unless_stalled(fh: Any, entry: Path, stall_seconds: float) -> bool:
    """Take the entry's lock (blocks only on a download or hash of the same bytes);
    False, with the lock not taken, once its holder has made no progress in the entry's
    folder for ``stall_seconds``."""
    wait, progress, since = 0.02, _progress(entry), time.monotonic()
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        now = _progress(entry)
        if now != progress:
            progress, since = now, time.monotonic()
        elif time.monotonic() - since > stall_seconds:
            log.warning("cache:lock_holder_stalled", entry=entry.name,
                        seconds=round(stall_seconds, 1))
            return False
        time.sleep(wait)
        wait = min(wait * 2, 0.5)


def _progress(entry: Path) -> frozenset[tuple[str, int, int]]:
    """What a holder changes as it works: the entry's files, their sizes and times."""
    seen = set()
    with contextlib.suppress(OSError):
        for path in entry.iterdir():
            with contextlib.suppress(OSError):
                stat = path.stat()
                seen.add((path.name, stat.st_size, stat.st_mtime_ns))
    return frozenset(seen)
