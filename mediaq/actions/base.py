"""What an action sees and returns.

Actions are plain functions ``fn(ctx: ActionContext) -> ActionResult``. They never
touch the database: the engine hands them paths and parameters and records what
they return (the one thing they may ask of the queue, submitting jobs for files
they found, goes through ``ctx.submit_files``). They write files only under
``ctx.output_path(...)`` (a staging directory); the engine renames them into place
once the step is committed (``move_to_library`` alone writes into the library roots).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mediaq.errors import Cancelled, InputRefused, PermanentError, StepTimedOut


@dataclass
class OutputFile:
    """A file an action produced in its staging directory."""

    staging_path: Path
    # primary: becomes the next step's source_path; rendition: a finished deliverable
    # that does not (transcodes read the same source); thumbnail | sidecar | report.
    role: str = "primary"
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ActionResult:
    """What a step produced: files and a JSON-able summary for ``output_data``."""

    outputs: list[OutputFile] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


ProgressFn = Callable[[float, str | None], None]
# The worker's way to a path this host can open for an earlier output (a record from
# ``previous_outputs`` or ``needs_outputs``): an object in a store is fetched then, and
# only then, through the host's cache.
OutputResolver = Callable[[dict[str, Any]], Path]


class SubmitFiles(Protocol):
    def __call__(self, workflow_code: str, paths: list[Path], *, skip_existing: bool,
                 priority: int | None) -> list[str | None]:
        """Submit one job of ``workflow_code`` per path, in one transaction; the new
        job codes in order, None for a path that already had a job (``skip_existing``)."""
        ...


class ActionContext:
    """Everything one step attempt needs, and its two ways to talk back:
    ``progress()`` and ``check()`` (call it between frames or chunks)."""

    def __init__(
        self,
        *,
        job_code: str,
        step_number: int,
        step_name: str,
        input_path: Path,
        source_path: Path | Callable[[], Path],
        params: dict[str, Any],
        staging_dir: Path,
        attempt: int = 0,
        deadline: float | None = None,
        cancel_event: threading.Event | None = None,
        on_progress: ProgressFn | None = None,
        on_log: Callable[[str], None] | None = None,
        previous_outputs: list[dict[str, Any]] | None = None,
        workflow_code: str = "",
        submit_files: SubmitFiles | None = None,
        input_roots: tuple[Path, ...] = (),
        library_roots: tuple[Path, ...] = (),
        needs_outputs: dict[str, Any] | None = None,
        item_index: int | None = None,
        resolve_output: OutputResolver | None = None,
        source_location: str | None = None,
    ) -> None:
        self.job_code = job_code
        self.step_number = step_number
        self.step_name = step_name
        self.input_path = input_path
        # The source (an earlier step's primary output, else the job's input) as a path
        # here: a callable is asked the first time an action reads ``source_path``, so a
        # step that never opens it never fetches it.
        self._source: Path | Callable[[], Path] = source_path
        # Where the source is recorded (the output's ``path``: an s3:// object stays one).
        self.source_location = (source_location if source_location is not None
                                else str(source_path) if isinstance(source_path, Path) else "")
        self._resolve_output = resolve_output
        self._resolve_lock = threading.Lock()
        self.params = params
        self.attempt = attempt  # earlier executions of this step for this job
        self.staging_dir = staging_dir
        self.deadline = deadline
        self.cancel_event = cancel_event or threading.Event()
        # Outputs of the job's earlier steps, as recorded (path, role, size_bytes, sha256,
        # …); ``path`` may be an s3:// object: open one through ``local_path(output)``.
        self.previous_outputs = list(previous_outputs or [])
        self.workflow_code = workflow_code
        # The output_data of the steps this one needs, by the step name's slug
        # (``Extract Metadata``: ``extract_metadata``); a fanned-out step's is the list of
        # its items' outputs, in item order (None for an item that failed). A step that
        # failed (on_failure: continue) or was skipped is absent.
        self.needs_outputs = dict(needs_outputs or {})
        self.item_index = item_index  # which item of a fanned-out step (for_each), if any
        # The folders an action may read (input roots) and write outside its staging
        # folder (library roots); none unless the worker says so.
        self.input_roots = tuple(input_roots)
        self.library_roots = tuple(library_roots)
        self._submit_files = submit_files
        self._on_progress = on_progress
        self._on_log = on_log

    @property
    def source_path(self) -> Path:
        """The file this step reads (fetched on first use where it lives in a store)."""
        source = self._source
        if isinstance(source, Path):
            return source
        with self._resolve_lock:
            if not isinstance(self._source, Path):
                self._source = self._source()
            return self._source

    @source_path.setter
    def source_path(self, path: Path) -> None:
        self._source = path
        self.source_location = str(path)

    @property
    def source_if_resolved(self) -> Path | None:
        """The source's path if it is known without fetching anything, else None."""
        return self._source if isinstance(self._source, Path) else None

    def local_path(self, output: dict[str, Any]) -> Path:
        """A path this host can open for ``output`` (an entry of ``previous_outputs`` or
        of a needed step's ``outputs``): an ``s3://`` object is fetched through the
        host's cache when this is called (reused when this host made it), a local output
        is its own path (through the host's path map). Call it only for outputs the
        action reads: each one called for may be a download."""
        if self._resolve_output is not None:
            return self._resolve_output(output)
        return Path(output.get("local_path") or output["path"])

    def output_path(self, filename: str) -> Path:
        """A staging path for an output called ``filename`` in the job's output folder."""
        name = Path(filename).name  # never let an action escape its folder
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        return self.staging_dir / name

    def check(self) -> None:
        """Raise if the job was cancelled, paused, lost or ran out of time."""
        if self.cancel_event.is_set():
            reason = getattr(self.cancel_event, "reason", None)
            raise reason if isinstance(reason, BaseException) else Cancelled()
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise StepTimedOut(f"step '{self.step_name}' ran past its timeout")

    def progress(self, fraction: float, stage: str | None = None) -> None:
        """Report this step's progress, 0.0 to 1.0 (cheap to call often)."""
        self.check()
        if self._on_progress is not None:
            self._on_progress(min(max(fraction, 0.0), 1.0), stage)

    def log(self, message: str) -> None:
        """Append a line to the job's log."""
        if self._on_log is not None:
            self._on_log(message)

    def submit_files(self, workflow_code: str, paths: list[Path], *, skip_existing: bool,
                     priority: int | None = None) -> list[str | None]:
        """Jobs for files this step found (see :class:`SubmitFiles`)."""
        if self._submit_files is None:
            raise PermanentError("this step cannot submit jobs here (no queue to submit to)")
        return self._submit_files(workflow_code, paths, skip_existing=skip_existing,
                                  priority=priority)

    def sleep(self, seconds: float) -> None:
        """Sleep, waking at once on cancel."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.check()
            self.cancel_event.wait(min(left, 0.05))
        self.check()


def check_source_file(path: Path) -> None:
    """Refuse a missing, non-regular or empty source with one clear line."""
    if not path.exists():
        raise InputRefused(f"{path.name}: input file {path} does not exist")
    if not path.is_file():
        raise InputRefused(f"{path.name}: input {path} is not a regular file")
    if path.stat().st_size == 0:
        raise PermanentError(f"{path.name}: file is empty (0 bytes)")
