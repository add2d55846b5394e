"""Where inputs may come from and where outputs go, and the atomic move into place."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

from mediaq.errors import InputRefused


def check_input(path_text: str | None, roots: tuple[Path, ...], kind: str = "file") -> Path:
    """The resolved input path (a regular file, or a folder when ``kind`` is
    "directory"), or InputRefused naming the file and the reason."""
    if not path_text:
        raise InputRefused("no input file given")
    if "\x00" in path_text:
        raise InputRefused("input path contains a NUL byte")
    if "://" in path_text:
        raise InputRefused(f"{path_text}: only local files are accepted")
    path = Path(path_text).expanduser()
    if not path.is_absolute():
        raise InputRefused(f"{path_text}: input paths must be absolute")
    resolved = path.resolve()
    if not any(resolved.is_relative_to(root.resolve()) for root in roots):
        allowed = ", ".join(str(r) for r in roots)
        raise InputRefused(f"{path_text}: outside the input roots ({allowed})")
    if not resolved.exists():
        raise InputRefused(f"{path_text}: file does not exist")
    if kind == "directory" and not resolved.is_dir():
        raise InputRefused(f"{path_text}: not a directory")
    if kind != "directory" and not resolved.is_file():
        raise InputRefused(f"{path_text}: not a regular file")
    if not os.access(resolved, os.R_OK):
        raise InputRefused(f"{path_text}: not readable")
    return resolved


def job_output_dir(output_root: Path, job_code: str) -> Path:
    return output_root / job_code


def staging_dir(staging_root: Path, job_code: str, attempt: int, step_number: int,
                item_index: int | None = None) -> Path:
    """A folder private to one step attempt (of one item of a fanned-out step); nothing in
    it is ever a finished output."""
    item = f".i{item_index}" if item_index is not None else ""
    return staging_root / f"{job_code}.a{attempt}.s{step_number}{item}"


_STEP_SUFFIX = re.compile(r"\d+(\.i\d+)?")


def discard_earlier_attempts(staging_root: Path, job_code: str, attempt: int) -> None:
    """Remove the staging folders that earlier attempts of a job left behind (a worker
    killed or cut off mid-step never cleans up after itself)."""
    prefix = f"{job_code}.a"
    if not staging_root.is_dir():
        return
    for folder in staging_root.iterdir():
        number, _, step = folder.name.removeprefix(prefix).partition(".s")
        if (folder.name.startswith(prefix) and number.isdigit()
                and _STEP_SUFFIX.fullmatch(step)
                and int(number) < attempt):
            discard(folder)


def publish(staged: Path, final_dir: Path) -> Path:
    """Rename a staged file into the job's output folder (atomic on one filesystem)."""
    return publish_as(staged, final_dir / staged.name)


def publish_as(staged: Path, final: Path) -> Path:
    """Rename a staged file to ``final`` (atomic on one filesystem)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(staged, final)
    except OSError:  # another filesystem: copy beside the target, then rename
        tmp = final.parent / f".{final.name}.{os.getpid()}.tmp"
        shutil.copy2(staged, tmp)
        os.replace(tmp, final)
        staged.unlink(missing_ok=True)
    return final


def holds(path: Path, size: int, sha256: str) -> bool:
    """Whether ``path`` is a file of these bytes (size first: most mismatches are cheap)."""
    try:
        if not path.is_file() or path.stat().st_size != size:
            return False
        return sha256_of(path) == sha256
    except OSError:
        return False


def discard(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
