"""Watch folders: when a file is ready, and how a watcher hears about it.

A file is ready once nothing has touched it for the folder's settle time: its
mtime and ctime are both older than that (a copy that writes in chunks keeps
mtime fresh; one that sets the old mtime at the end moves ctime). The rule needs
no memory, so it holds across restarts and for every worker watching the same
shared folder. The version submitted is (path, size, mtime); ``watch_files``
makes sure each version gets one job, whoever sees it first.

inotify only wakes the watcher early; the periodic listing is what counts, so a
network filesystem (no events for other machines' writes) works the same, just
on the listing's rhythm.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from mediaq.errors import InputRefused
from mediaq.storage.uri import S3Uri, is_s3

log = structlog.get_logger("mediaq.triggers")


@dataclass(frozen=True)
class WatchFolder:
    id: int
    path: Path
    workflow_code: str
    patterns: tuple[str, ...]
    settle_seconds: int
    recursive: bool
    prefix: S3Uri | None = None  # a bucket prefix (objects.py) instead of a local folder
    unusable: str | None = None  # why the stored path cannot be watched (edited in SQL)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> WatchFolder:
        text = row["path"]
        prefix, unusable = None, None
        if is_s3(text):
            try:
                prefix = S3Uri.parse(text, prefix=True)
            except InputRefused as exc:  # one bad row must not stop the other folders
                unusable = exc.message
        return cls(id=row["id"], path=Path(text), workflow_code=row["workflow_code"],
                   patterns=tuple(row["patterns"] or ()), settle_seconds=row["settle_seconds"],
                   recursive=row["recursive"], prefix=prefix, unusable=unusable)

    @property
    def location(self) -> str:
        return str(self.prefix) if self.prefix is not None else str(self.path)


class FolderEvents:
    """inotify watches on the watch folders; which folders saw activity."""

    def __init__(self) -> None:
        self._inotify: Any = None
        # A descriptor per watched directory (one per inode: two watch folders on the
        # same directory share it).
        self._folders_of: dict[int, set[int]] = {}  # descriptor → watch folder ids
        self._paths: dict[int, Path] = {}  # descriptor → directory
        self._watched: dict[int, list[int]] = {}  # watch folder id → its descriptors
        try:
            from inotify_simple import INotify, flags
        except ImportError:  # not Linux: listings only
            return
        try:
            self._inotify = INotify()
        except OSError as exc:  # no inotify instances left: listings only
            log.warning("triggers:no_inotify", error=exc.strerror)
            return
        self._mask = (flags.CLOSE_WRITE | flags.MOVED_TO | flags.CREATE | flags.ATTRIB
                      | flags.MODIFY)
        self._isdir = flags.ISDIR
        self._ignored = flags.IGNORED
        self._create = flags.CREATE | flags.MOVED_TO

    @property
    def available(self) -> bool:
        return self._inotify is not None

    def sync(self, folders: list[WatchFolder]) -> None:
        """Watch new folders, stop watching removed ones."""
        if self._inotify is None:
            return
        # A bucket prefix sends no events: its listings are all there is.
        wanted = {folder.id: folder for folder in folders
                  if folder.prefix is None and folder.unusable is None}
        for folder_id in set(self._watched) - set(wanted):
            for descriptor in self._watched.pop(folder_id):
                sharing = self._folders_of.get(descriptor, set())
                sharing.discard(folder_id)
                if sharing:
                    continue
                self._folders_of.pop(descriptor, None)
                self._paths.pop(descriptor, None)
                with contextlib.suppress(OSError):  # the folder went, and its watch with it
                    self._inotify.rm_watch(descriptor)
        for folder in wanted.values():
            if folder.id not in self._watched:
                self._watched[folder.id] = []
                self._add_tree(folder.id, folder.path, folder.recursive)

    def _add_tree(self, folder_id: int, root: Path, recursive: bool) -> None:
        for path in [root, *(_subfolders(root) if recursive else [])]:
            try:
                descriptor = self._inotify.add_watch(str(path), self._mask)
            except OSError:
                continue  # missing or unreadable: the listing reports it
            self._folders_of.setdefault(descriptor, set()).add(folder_id)
            self._paths[descriptor] = path
            self._watched[folder_id].append(descriptor)

    def wait(self, timeout_s: float, recursive_ids: set[int]) -> set[int]:
        """Block up to ``timeout_s``; the ids of folders that saw activity."""
        if self._inotify is None:
            return set()
        active: set[int] = set()
        for event in self._inotify.read(timeout=max(0, int(timeout_s * 1000))):
            folder_ids = self._folders_of.get(event.wd, set())
            active |= folder_ids
            if event.mask & self._ignored:  # the directory went away: re-add at next sync
                self._forget(event.wd)
                continue
            is_new_dir = event.mask & self._isdir and event.mask & self._create
            if not is_new_dir or not event.name:
                continue
            for folder_id in folder_ids & recursive_ids:  # watch folders inside it too
                self._add_tree(folder_id, self._paths[event.wd] / event.name, True)
        return active

    def _forget(self, descriptor: int) -> None:
        self._paths.pop(descriptor, None)
        for folder_id in self._folders_of.pop(descriptor, set()):
            remaining = [d for d in self._watched.get(folder_id, []) if d != descriptor]
            if remaining:
                self._watched[folder_id] = remaining
            else:
                self._watched.pop(folder_id, None)

    def close(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None


def _subfolders(root: Path) -> list[Path]:
    found: list[Path] = []
    for folder, dirs, _files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(Path(folder) / d for d in dirs)
    return found
