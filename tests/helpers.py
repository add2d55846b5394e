"""Driving mediaq as a user does: the CLI, worker processes, SQL."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import yaml
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from mediaq import db, workflows
from mediaq.actions import ActionContext, ActionResult, get_action
from mediaq.submit import submit
from mediaq.worker.claimer import ClaimedJob, Claimer
from mediaq.worker.job_handle import JobHandle
from mediaq.worker.resources import Capacity

MEDIAQ = [sys.executable, "-m", "mediaq.cli"]

# The programs the tests use as independent judges or sources of media (never the
# engine's own path), with the Debian package of each; `make test-deps` installs
# exactly these packages.
TOOL_PACKAGES = {
    "ffmpeg": "ffmpeg",
    "ffprobe": "ffmpeg",
    "espeak-ng": "espeak-ng",
    "chromium": "chromium",
    "identify": "imagemagick",
    "convert": "imagemagick",
    "vips": "libvips-tools",
    "exiftool": "libimage-exiftool-perl",
    "soffice": "libreoffice-writer-nogui",
    "promtool": "prometheus",
    "amtool": "prometheus-alertmanager",
    # Debian's PostgreSQL server (tests/fleet runs its initdb/pg_ctl from
    # /usr/lib/postgresql/NN/bin; pg_ctlcluster is the one of its programs on PATH).
    "pg_ctlcluster": "postgresql",
}
# Every missing-tool skip reason has this shape, so that the terminal summary can
# find them among the other skips (and across pytest-xdist workers, where only the
# reports' text reaches the controller).
_MISSING_TOOL = re.compile(r"missing tools? ([\w.+-]+(?:, [\w.+-]+)*) \(Debian")


def missing_tool_reason(*tools: str) -> str:
    """The skip reason for ``tools`` being absent: names them and the one fix."""
    packages = sorted({TOOL_PACKAGES[tool] for tool in tools})
    tool_s = "tools" if len(tools) > 1 else "tool"
    package_s = "packages" if len(packages) > 1 else "package"
    return (f"missing {tool_s} {', '.join(tools)} (Debian {package_s} {', '.join(packages)}): "
            "run 'make test-deps'")


def requires_tool(*tools: str) -> pytest.MarkDecorator:
    """Skip unless every program in ``tools`` is on PATH (e.g. ``requires_tool("ffprobe")``)."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    return pytest.mark.skipif(bool(missing), reason=missing_tool_reason(*missing or tools))


def skip_without_tool(*tools: str) -> None:
    """``requires_tool`` inside a test or fixture: skip now unless ``tools`` are on PATH."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(missing_tool_reason(*missing))


def missing_tool_summary(skip_messages: Iterable[str]) -> str | None:
    """One line for the skips caused by missing tools among ``skip_messages``, or None."""
    count, tools = 0, set[str]()
    for message in skip_messages:
        found = _MISSING_TOOL.search(message)
        if found:
            count += 1
            tools.update(found.group(1).split(", "))
    if not count:
        return None
    tests = "test" if count == 1 else "tests"
    return (f"{count} {tests} skipped for missing tools ({', '.join(sorted(tools))}): "
            "run 'make test-deps'")


def with_database(url: str, name: str) -> str:
    """The same server URL, pointing at database ``name``."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@dataclass
class MediaqEnv:
    root: Path
    url: str
    env: dict[str, str]
    inputs: Path
    outputs: Path
    workers: list[subprocess.Popen[str]] = field(default_factory=list)

    @classmethod
    def create(cls, root: Path, url: str, **settings: str) -> MediaqEnv:
        home, inputs, outputs = root / "home", root / "inputs", root / "outputs"
        for folder in (home, inputs, outputs):
            folder.mkdir(parents=True, exist_ok=True)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MEDIAQ_")},
            "MEDIAQ_HOME": str(home),
            "MEDIAQ_DATABASE_URL": url,
            "MEDIAQ_INPUT_ROOTS": str(inputs),
            "MEDIAQ_OUTPUT_ROOT": str(outputs),
            "MEDIAQ_LEASE_SECONDS": "3",
            "MEDIAQ_POLL_SECONDS": "0.5",
            "MEDIAQ_RETRY_BASE_SECONDS": "0.2",
            "MEDIAQ_RETRY_MAX_SECONDS": "1",
            "MEDIAQ_SHUTDOWN_GRACE_SECONDS": "5",
            # Off unless a test turns it on (tests/test_breakers.py): tests that fail an
            # action on purpose many times must not wait out a breaker's cool-down.
            "MEDIAQ_ACTION_BREAKER_THRESHOLD": "0",
            "MEDIAQ_LOG_FORMAT": "json",
            **{f"MEDIAQ_{k.upper()}": v for k, v in settings.items()},
        }
        return cls(root=root, url=url, env=env, inputs=inputs, outputs=outputs)

    # -- CLI ---------------------------------------------------------------------------

    def cli(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*MEDIAQ, *args], env=self.env, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"mediaq {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def submit(self, workflow: str, path: Path | str, *args: str) -> str:
        """Submit through the CLI; the job code is the last word of the output."""
        return self.cli("submit", workflow, str(path), *args).stdout.split()[-1]

    # -- workers -----------------------------------------------------------------------

    def start_worker(self, *args: str, **extra_env: str) -> subprocess.Popen[str]:
        """A worker process; its log goes to a file (see ``worker_log``), never a pipe
        nobody reads, which would block the worker once the pipe is full."""
        return self.start("worker", *args, **extra_env)

    def start(self, command: str, *args: str, **extra_env: str) -> subprocess.Popen[str]:
        """A long-running ``mediaq COMMAND`` (worker, notifier, triggers), stopped with
        the workers."""
        env = {**self.env, **{f"MEDIAQ_{k.upper()}": v for k, v in extra_env.items()}}
        log_path = self.root / f"worker-{len(self.workers)}.log"
        with log_path.open("w") as log_file:
            proc = subprocess.Popen([*MEDIAQ, command, *args], env=env, text=True,
                                    stdout=log_file, stderr=subprocess.STDOUT)
        self.workers.append(proc)
        return proc

    def start_web(self) -> tuple[subprocess.Popen[str], str]:
        """``mediaq web`` on a free port of 127.0.0.1, once it answers ``/healthz``: the
        process and its base URL."""
        import requests  # only the tests that serve HTTP pay for it

        port = free_port()
        proc = self.start("web", "--port", str(port))
        base = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            assert proc.poll() is None, self.worker_log(proc)
            try:
                return requests.get(base + "/healthz", timeout=5).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(healthy, timeout=90, interval=0.2, message="mediaq web to answer /healthz")
        return proc, base

    def worker_log(self, proc: subprocess.Popen[str]) -> str:
        return (self.root / f"worker-{self.workers.index(proc)}.log").read_text()

    def run_burst(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.cli("worker", "--burst", *args, timeout=timeout)

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGCONT)
                    proc.terminate()
                    proc.wait(15)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    proc.kill()
        self.workers.clear()

    # -- SQL ---------------------------------------------------------------------------

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        with psycopg.connect(self.url, autocommit=True, row_factory=dict_row,
                             options="-c search_path=mediaq,public") as conn:
            yield conn

    def query(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        with self.connect() as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def one(self, sql: str, params: Any = None) -> dict[str, Any]:
        rows = self.query(sql, params)
        assert len(rows) == 1, rows
        return rows[0]

    def job(self, code: str) -> dict[str, Any]:
        return self.one("SELECT * FROM workflow_jobs WHERE job_code = %s", (code,))

    def apply_workflow(self, doc: dict[str, Any]) -> None:
        with psycopg.connect(self.url, row_factory=dict_row,
                             options="-c search_path=mediaq,public") as conn:
            workflows.apply(conn, workflows.normalise(doc))
            conn.commit()

    def seed(self) -> None:
        self.cli("workflows", "seed")

    def write_yaml(self, name: str, doc: dict[str, Any]) -> Path:
        path = self.root / name
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        return path

    def input_file(self, name: str, data: bytes = b"x") -> Path:
        path = self.inputs / name
        path.write_bytes(data)
        return path


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.05,
             message: str = "condition", otherwise: Callable[[], Any] | None = None) -> Any:
    """Poll until ``predicate()`` is truthy; its value, or AssertionError after ``timeout``
    (with what ``otherwise()`` says about the state, when given)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            state = f": {otherwise()}" if otherwise is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {message}{state}")
        time.sleep(interval)


def action_context(name: str, source: Path, staging_dir: Path,
                   params: dict[str, Any] | None = None, **extra: Any) -> ActionContext:
    """A context for one step of action ``name``, its params validated and defaulted as
    the engine does."""
    return ActionContext(job_code="TEST-1", step_number=1, step_name=name, input_path=source,
                         source_path=source, params=get_action(name).validate(params or {}),
                         staging_dir=staging_dir, **extra)


def run_action(name: str, source: Path, staging_dir: Path, **params: Any) -> ActionResult:
    """Run action ``name`` in process on ``source``, writing into ``staging_dir``."""
    return get_action(name).fn(action_context(name, source, staging_dir, params))


def diagnostic_workflow(code: str, *steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A workflow of diagnostic steps (noop, sleep, fail) for engine tests."""
    numbered = [
        {"step_number": i, "step_name": s.get("step_name", f"{s['action']} {i}"), **s}
        for i, s in enumerate(steps, start=1)
    ]
    return {"workflow_code": code, "workflow_name": code, "workflow_type": "test",
            "retry_count": 3, "steps": numbered, **fields}


def claim_in_process(pool: ConnectionPool[db.Connection], code: str, source: Path,
                     *steps: dict[str, Any]) -> tuple[JobHandle, ClaimedJob]:
    """A job of a workflow ``code`` made of ``steps`` on ``source``, submitted and claimed
    by an in-process worker as `mediaq worker` does: its handle and the claimed row."""
    with db.transaction(pool) as conn:
        workflows.apply(conn, workflows.normalise(diagnostic_workflow(code, *steps)))
        submit(conn, code, source)
    worker_id = f"{code.lower()}-worker"
    claimer = Claimer(pool, worker_id=worker_id, host="test-host",
                      capacity=Capacity(categories=("cpu",), limits={"cpu": 1},
                                        vram_budget_mb=0),
                      queues=None, lease_seconds=300)
    claimer.register("test")
    claimed = claimer.claim("cpu")
    assert claimed is not None
    return claimed.handle(pool, worker_id), claimed
