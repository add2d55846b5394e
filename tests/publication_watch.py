"""A watch on the final output paths of an output root while a test runs: every file
that appears there, each inode seen at each path and the SHA-256 of its bytes then.
Shared by tests/test_publications.py and tests/fleet/test_fleet_postgres.py."""

from __future__ import annotations

import hashlib
import os
import threading
from contextlib import suppress
from pathlib import Path


class PublicationWatch:
    """Watches every final output path under ``root`` (a thread polling every
    ``interval`` seconds): a path whose file is replaced (a new inode: a rename over it)
    was published twice."""

    def __init__(self, root: Path, interval: float = 0.01) -> None:
        self.root = root
        self.interval = interval
        self.inodes: dict[str, set[int]] = {}
        self.contents: dict[str, set[str]] = {}  # the bytes of each publication seen
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _look(self) -> None:
        with os.scandir(self.root) as folders:
            for folder in folders:
                if folder.name.startswith(".") or not folder.is_dir():
                    continue
                with os.scandir(folder.path) as files:
                    for entry in files:
                        with suppress(FileNotFoundError):
                            inode = entry.stat(follow_symlinks=False).st_ino
                            seen = self.inodes.setdefault(entry.path, set())
                            if inode not in seen:
                                seen.add(inode)
                                digest = hashlib.sha256(Path(entry.path).read_bytes())
                                self.contents.setdefault(entry.path, set()).add(
                                    digest.hexdigest())

    def _run(self) -> None:
        while not self.stop.is_set():
            self._look()
            self.stop.wait(self.interval)

    def __enter__(self) -> PublicationWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        self._look()

    def published_twice(self) -> list[str]:
        return sorted(path for path, seen in self.inodes.items() if len(seen) > 1)

    def different_bytes(self) -> list[str]:
        """Paths published more than once with different bytes (two attempts' outputs)."""
        return sorted(path for path, seen in self.contents.items() if len(seen) > 1)
