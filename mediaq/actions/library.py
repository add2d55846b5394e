"""Library actions: ``scan`` a folder for new media, ``move_to_library`` when done.

``scan`` walks a folder and submits a job of a workflow for every matching file that
has none yet (through ``ctx.submit_files``: the engine owns the queue).
``move_to_library`` files a job's outputs (or its input) into a library under a
naming template, never over an existing file unless the step says so.
"""

from __future__ import annotations

import os
import shutil
import string
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mediaq.actions import action
from mediaq.actions.base import ActionContext, ActionResult
from mediaq.errors import InputRefused, PermanentError, SubmissionRefused
from mediaq.files import VIDEO_PATTERNS, ScanSummary, submit_in_batches, walk_files

DEFAULT_TEMPLATE = "{workflow}/{date:%Y/%m}/{stem}_{rendition}.{ext}"
TEMPLATE_FIELDS = ("workflow", "job", "date", "stem", "name", "rendition", "role", "ext",
                   "step")


# ----------------------------------------------------------------------------- scan


@action("scan", {
    "properties": {
        "workflow": {"type": "string", "minLength": 1,
                     "description": "the workflow each new file is submitted to"},
        "path": {"type": "string", "description": "the folder (default: the job's input)"},
        "directoryType": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]+$",
                          "description": "a sub-folder of the job's input folder to scan"},
        "patterns": {"type": "array", "items": {"type": "string"},
                     "default": list(VIDEO_PATTERNS)},
        "recursive": {"type": "boolean", "default": True},
        "skipExisting": {"type": "boolean", "default": True},
        "priority": {"type": ["integer", "null"], "minimum": 1, "maximum": 10,
                     "default": None},
    },
    "required": ["workflow"],
}, input_kind="directory")
def scan(ctx: ActionContext) -> ActionResult:
    """Submit a job of a workflow for every new media file in a folder."""
    folder = _scan_folder(ctx)
    ctx.progress(0.0, "listing files")
    files = [found.path for found in walk_files(folder, ctx.params["patterns"],
                                                recursive=ctx.params["recursive"])]
    summary = ScanSummary(directory=str(folder))

    def submit_batch(batch: list[Path]) -> list[str | None]:
        try:
            return ctx.submit_files(ctx.params["workflow"], batch,
                                    skip_existing=ctx.params["skipExisting"],
                                    priority=ctx.params["priority"])
        except SubmissionRefused as exc:
            raise PermanentError(f"scan: {exc.message}") from None

    def on_batch(done: int) -> None:
        ctx.progress(done / max(len(files), 1), f"{done}/{len(files)} files")

    submit_in_batches(files, summary, submit_batch, on_batch)
    ctx.log(f"scan of {folder}: {summary.found} file(s), {summary.submitted} submitted, "
            f"{summary.skipped_existing} had a job already")
    return ActionResult(data=summary.as_data())


def _scan_folder(ctx: ActionContext) -> Path:
    """The folder to scan, which must lie inside the worker's input roots."""
    base = Path(ctx.params["path"]) if ctx.params.get("path") else ctx.input_path
    if ctx.params.get("directoryType"):
        base = base / ctx.params["directoryType"]
    folder = base.resolve()
    roots = ctx.input_roots
    if not roots:
        raise InputRefused(f"{base}: this worker has no input roots to scan")
    if not any(folder.is_relative_to(root.resolve()) for root in roots):
        raise InputRefused(f"{base}: outside the input roots "
                           f"({', '.join(str(r) for r in roots)})")
    if not folder.is_dir():
        raise InputRefused(f"{base}: not a directory")
    return folder


# ------------------------------------------------------------------ move_to_library


@dataclass(frozen=True)
class Filing:
    """One file to put into the library and the template fields that name it."""

    source: Path
    fields: dict[str, Any]
    size_bytes: int | None = None


@action("move_to_library", {
    "properties": {
        "library": {"type": "string", "minLength": 1,
                    "description": "the library folder (default: the first library root)"},
        "template": {"type": "string", "minLength": 1, "default": DEFAULT_TEMPLATE},
        "source": {"enum": ["outputs", "input"], "default": "outputs"},
        "roles": {"type": "array", "items": {"type": "string"}, "default": [],
                  "description": "output roles to file (empty: all but intermediates)"},
        "mode": {"enum": ["move", "copy"], "default": "move"},
        "on_conflict": {"enum": ["fail", "skip", "rename", "overwrite"], "default": "fail"},
    },
})
def move_to_library(ctx: ActionContext) -> ActionResult:
    """File the job's outputs (or its input) into a library layout."""
    library = _library_folder(ctx)
    filings = list(_filings(ctx))
    if not filings:
        raise PermanentError("move_to_library: the job has no files to move "
                             f"(source: {ctx.params['source']}, roles: {ctx.params['roles']})")
    placed: list[dict[str, Any]] = []
    for index, filing in enumerate(filings, start=1):
        ctx.progress((index - 1) / len(filings), f"filing {filing.source.name}")
        target = library / render_template(ctx.params["template"], filing.fields)
        placed.append(_file_one(filing, target, library, ctx.params))
    ctx.log(f"{len(placed)} file(s) {'moved' if ctx.params['mode'] == 'move' else 'copied'} "
            f"into {library}")
    return ActionResult(data={"library": str(library), "files": placed})


def _library_folder(ctx: ActionContext) -> Path:
    roots = ctx.library_roots
    if not roots:
        raise PermanentError("move_to_library: this worker has no library roots")
    chosen = Path(ctx.params.get("library") or roots[0])
    if not chosen.is_absolute():
        raise PermanentError(f"move_to_library: library {chosen} must be an absolute path")
    folder = chosen.resolve()
    if not any(folder.is_relative_to(root.resolve()) for root in roots):
        raise PermanentError(f"move_to_library: {chosen} is outside the library roots "
                             f"({', '.join(str(r) for r in roots)})")
    return folder


def _filings(ctx: ActionContext) -> Iterable[Filing]:
    common = {"workflow": ctx.workflow_code or "workflow", "job": ctx.job_code,
              "date": datetime.now().astimezone(), "stem": ctx.input_path.stem}
    if ctx.params["source"] == "input":
        yield Filing(ctx.input_path, {**common, "name": ctx.input_path.stem,
                                      "rendition": "source", "role": "source",
                                      "ext": _ext(ctx.input_path), "step": 0})
        return
    roles = set(ctx.params["roles"])
    for output in ctx.previous_outputs:
        if roles and output.get("role") not in roles:
            continue
        if not roles and output.get("role") == "intermediate":
            continue  # lossless working pixels for later steps, not a deliverable
        path = ctx.local_path(output)  # an s3:// output: fetched here as it is filed
        yield Filing(path, {**common, "name": path.stem, "role": output.get("role", "primary"),
                            "rendition": output.get("rendition") or _rendition(path, ctx.job_code),
                            "ext": _ext(path), "step": output.get("step", 0)},
                     size_bytes=output.get("size_bytes"))


def _ext(path: Path) -> str:
    return path.suffix.lstrip(".").lower()


def _rendition(path: Path, job_code: str) -> str:
    """An output's own name without the job code it starts with (``thumb_001``)."""
    return path.stem.removeprefix(job_code).lstrip("_-.") or path.stem


class _PlainFields(string.Formatter):
    """``str.format`` for templates from workflow files: plain names only, so a
    template cannot reach attributes (``{date.__class__}``) or items."""

    def get_field(self, field_name: str, args: Sequence[Any],
                  kwargs: Mapping[str, Any]) -> Any:
        if field_name not in TEMPLATE_FIELDS:
            raise PermanentError(f"move_to_library: template field {{{field_name}}} is not "
                                 f"one of {', '.join(TEMPLATE_FIELDS)}")
        return kwargs[field_name], field_name


def render_template(template: str, fields: dict[str, Any]) -> Path:
    """The library-relative path ``template`` names; never absolute, never ``..``."""
    try:
        text = _PlainFields().format(template, **fields)
    except (ValueError, IndexError) as exc:
        raise PermanentError(f"move_to_library: bad template {template!r} ({exc})") from None
    relative = Path(text)
    if relative.is_absolute() or ".." in relative.parts or not relative.name:
        raise PermanentError(f"move_to_library: template gives {text!r}, "
                             "which is not a path inside the library")
    return relative


def _file_one(filing: Filing, target: Path, library: Path,
              params: dict[str, Any]) -> dict[str, Any]:
    move = params["mode"] == "move"
    if not target.resolve().is_relative_to(library):
        raise PermanentError(f"move_to_library: {target} leaves the library (a symlink?)")
    if not filing.source.exists():
        if move and _already_there(filing, target):  # a retry after the move went through
            return {"source": str(filing.source), "path": str(target), "status": "moved"}
        raise PermanentError(f"move_to_library: {filing.source} does not exist")
    conflict = params["on_conflict"]
    target.parent.mkdir(parents=True, exist_ok=True)
    if conflict == "skip" and target.exists():
        return {"source": str(filing.source), "path": str(target), "status": "skipped"}
    final = place(filing.source, target, move=move, overwrite=conflict == "overwrite",
                  rename=conflict == "rename")
    return {"source": str(filing.source), "path": str(final),
            "status": "moved" if move else "copied"}


def _already_there(filing: Filing, target: Path) -> bool:
    return target.is_file() and (filing.size_bytes is None
                                 or target.stat().st_size == filing.size_bytes)


def place(source: Path, target: Path, *, move: bool, overwrite: bool, rename: bool) -> Path:
    """Put ``source`` at ``target`` atomically: readers see the whole file or none.

    A copy (or a move across filesystems) is written beside the target first. Without
    ``overwrite`` an existing target is never replaced: the file is hard-linked in,
    which fails if the name is taken (``rename`` then tries ``stem_1``, ``stem_2``…).
    """
    staged = source
    if not move or not _same_filesystem(source, target.parent):
        staged = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.mediaq-tmp"
        shutil.copy2(source, staged)
        with staged.open("rb") as fh:
            os.fsync(fh.fileno())
    try:
        if overwrite:
            os.replace(staged, target)
            final = target
        else:
            final = _link_new_name(staged, target, rename=rename)
    finally:
        if staged != source:
            staged.unlink(missing_ok=True)
    if move:
        source.unlink(missing_ok=True)
    return final


def _link_new_name(staged: Path, target: Path, *, rename: bool) -> Path:
    for candidate in _candidates(target, rename):
        try:
            os.link(staged, candidate)
            return candidate
        except FileExistsError:
            continue
        except OSError:  # a filesystem without hard links: check, then rename
            if candidate.exists():
                continue
            os.rename(staged, candidate)
            return candidate
    raise PermanentError(f"move_to_library: {target} exists already "
                         "(on_conflict: fail; use skip, rename or overwrite)")


def _candidates(target: Path, rename: bool) -> Iterable[Path]:
    yield target
    if rename:
        for number in range(1, 10_000):
            yield target.with_name(f"{target.stem}_{number}{target.suffix}")


def _same_filesystem(source: Path, folder: Path) -> bool:
    try:
        return source.stat().st_dev == folder.stat().st_dev
    except OSError:
        return False
