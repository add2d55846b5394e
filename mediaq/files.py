"""Which files in a folder count, and counting what a scan submitted of them.

Shared by watch folders, the ``scan`` action and ``mediaq scan``; nothing here
touches the database (submitting is the caller's ``submit_batch``).

Skipped without a job: symbolic links (they could point anywhere), hidden files
and folders, names copy tools use while a file is still arriving (``.part``,
``~``, …), empty files, and names that are not UTF-8 (the database stores text).
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("mediaq.files")

# Suffixes of files still being written: browsers, rsync/WinSCP/FileZilla, qBittorrent,
# editors, and the usual temporary names.
IN_PROGRESS_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".download",
                        ".filepart", ".!qb", ".!ut", ".swp", ".lock", ".inprogress")
VIDEO_PATTERNS = ("*.mp4", "*.mov", "*.m4v", "*.mkv", "*.avi", "*.webm", "*.mxf", "*.ts",
                  "*.mpg", "*.mpeg", "*.wmv", "*.flv")
BATCH = 200  # files per submission (one transaction): progress moves, a failure loses little


@dataclass(frozen=True)
class FoundFile:
    path: Path
    rel_path: str  # relative to the folder walked, with "/" separators
    size: int
    mtime_ns: int
    changed_at: float  # the later of mtime and ctime: a copy that sets mtime moves ctime


def is_in_progress_name(name: str) -> bool:
    lowered = name.lower()
    return name.startswith(".") or name.endswith("~") or lowered.endswith(IN_PROGRESS_SUFFIXES)


def matches(name: str, patterns: Sequence[str]) -> bool:
    """Case-insensitive glob match against any pattern; no patterns match everything."""
    lowered = name.lower()
    return not patterns or any(fnmatch.fnmatchcase(lowered, p.lower()) for p in patterns)


def parse_patterns(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"*.mp4,*.mov"`` (or a list of such) → ("*.mp4", "*.mov")."""
    if not text:
        return ()
    items = [text] if isinstance(text, str) else list(text)
    return tuple(p.strip() for item in items for p in item.split(",") if p.strip())


def walk_files(root: Path, patterns: Sequence[str], *, recursive: bool) -> Iterator[FoundFile]:
    """Regular, non-empty, matching files under ``root`` (an unreadable folder is skipped)."""
    folders = [root]
    while folders:
        folder = folders.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            log.warning("triggers:unreadable_folder", folder=str(folder), error=exc.strerror)
            continue
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith(".") or not _is_text(entry.name):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # gone since the listing
            if stat.S_ISDIR(info.st_mode):
                if recursive:
                    folders.append(Path(entry.path))
                continue
            if (not stat.S_ISREG(info.st_mode) or info.st_size == 0
                    or is_in_progress_name(entry.name) or not matches(entry.name, patterns)):
                continue
            path = Path(entry.path)
            yield FoundFile(path=path, rel_path=path.relative_to(root).as_posix(),
                            size=info.st_size, mtime_ns=info.st_mtime_ns,
                            changed_at=max(info.st_mtime, info.st_ctime))


def _is_text(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.fsdecode's surrogates: bytes that are not UTF-8
        log.warning("triggers:skipped_name", name=name.encode("utf-8", "replace").decode(),
                    reason="not UTF-8")
        return False
    return True


# ----------------------------------------------------------------------- scans


@dataclass
class ScanSummary:
    directory: str
    found: int = 0
    submitted: int = 0
    skipped_existing: int = 0
    job_codes: list[str] = field(default_factory=list)

    def as_data(self, *, codes_shown: int = 100) -> dict[str, Any]:
        return {"directory": self.directory, "found": self.found, "submitted": self.submitted,
                "skipped_existing": self.skipped_existing,
                "job_codes": self.job_codes[:codes_shown]}


def submit_in_batches(files: list[Path], summary: ScanSummary,
                      submit_batch: Callable[[list[Path]], list[str | None]],
                      on_batch: Callable[[int], None] | None = None) -> ScanSummary:
    """Feed ``files`` to ``submit_batch`` BATCH at a time, counting what happened."""
    summary.found = len(files)
    for start in range(0, len(files), BATCH):
        codes = submit_batch(files[start:start + BATCH])
        new = [code for code in codes if code is not None]
        summary.job_codes.extend(new)
        summary.submitted += len(new)
        summary.skipped_existing += len(codes) - len(new)
        if on_batch is not None:
            on_batch(start + len(codes))
    return summary
