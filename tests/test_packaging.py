"""mediaq installed from its wheel works anywhere: the sdist is complete (the wheel is
built from it), the wheel carries every file read at run time, and a fresh virtual
environment outside the checkout creates the schema, seeds the workflows and runs a job.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = sorted(p.name for p in (ROOT / "mediaq" / "migrations" / "versions").glob("*.py"))
REVISION_SQL = sorted(p.name for p in (ROOT / "mediaq" / "migrations" / "sql").glob("*.sql"))
QUERY_SQL = sorted(p.name for p in (ROOT / "mediaq" / "sql").glob("*.sql"))
SEEDS = sorted(p.name for p in (ROOT / "mediaq" / "seed_workflows").glob("*.yaml"))


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A folder outside the checkout (and readable by the embedded server's user)."""
    folder = Path(tempfile.mkdtemp(prefix="mediaq-packaging-"))
    os.chmod(folder, 0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without PYTHONPATH or mediaq settings: nothing of the checkout."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("MEDIAQ_")}
    return {**env, **extra}


def run(args: list[str | Path], cwd: Path, env: dict[str, str],
        timings: dict[str, float], label: str) -> str:
    started = time.monotonic()
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)
    timings[label] = round(time.monotonic() - started, 1)
    assert done.returncode == 0, f"{label} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def assert_complete(names: set[str], prefix: str = "") -> None:
    """Every run-time file of mediaq under ``prefix`` in an archive's names."""
    wanted = ({f"mediaq/sql/{n}" for n in QUERY_SQL}
              | {f"mediaq/migrations/versions/{n}" for n in MIGRATIONS}
              | {f"mediaq/migrations/sql/{n}" for n in REVISION_SQL}
              | {f"mediaq/seed_workflows/{n}" for n in SEEDS}
              | {"mediaq/sql/schema.sql", "mediaq/migrations/env.py", "mediaq/__main__.py",
                 "mediaq/actions/presets/encoding.yaml"})
    missing = {prefix + n for n in wanted} - names
    assert not missing, sorted(missing)


def test_the_wheel_built_from_the_sdist_installs_and_runs_a_job(scratch: Path) -> None:
    timings: dict[str, float] = {}
    env = clean_env()
    venv, dist = scratch / "venv", scratch / "dist"
    python, mediaq = venv / "bin" / "python", venv / "bin" / "mediaq"
    run([sys.executable, "-m", "venv", venv], scratch, env, timings, "venv")
    run([python, "-m", "pip", "install", "--quiet", "build"], scratch, env, timings,
        "install build")
    # `python -m build` makes the sdist, then the wheel from the sdist alone
    run([python, "-m", "build", "--outdir", dist, ROOT], scratch, env, timings, "build")

    (sdist,), (wheel,) = dist.glob("*.tar.gz"), dist.glob("*.whl")
    with tarfile.open(sdist) as archive:
        top = archive.getnames()[0].split("/")[0]
        assert_complete(set(archive.getnames()), prefix=f"{top}/")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert_complete(names)
    assert not {n for n in names if n.startswith(("sql/", "migrations/"))}

    run([python, "-m", "pip", "install", "--quiet", wheel], scratch, env, timings,
        "install wheel")
    where = run([python, "-c", "import mediaq; print(mediaq.__file__)"], scratch, env,
                timings, "import")
    assert where.strip().startswith(str(venv)), where

    home = scratch / "home"
    env = clean_env(MEDIAQ_HOME=str(home))
    try:
        run([mediaq, "db", "upgrade"], scratch, env, timings, "db upgrade")
        run([mediaq, "workflows", "seed"], scratch, env, timings, "workflows seed")
        (home / "inputs").mkdir(parents=True, exist_ok=True)
        photo = home / "inputs" / "photo.jpg"
        Image.new("RGB", (640, 480), (40, 120, 200)).save(photo, quality=90)
        submitted = run([mediaq, "submit", "WF-IMAGE-PROCESS", photo], scratch, env, timings,
                        "submit")
        code = submitted.split()[-1]
        run([mediaq, "worker", "--burst"], scratch, env, timings, "worker --burst")
        jobs = json.loads(run([mediaq, "jobs", "--json"], scratch, env, timings, "jobs"))
        assert [(j["job_code"], j["status"]) for j in jobs] == [(code, "completed")], jobs
        usage = run([python, "-m", "mediaq", "--help"], scratch, env, timings, "-m mediaq")
        assert "Usage:" in usage and "worker" in usage
    finally:
        subprocess.run([mediaq, "db", "stop"], cwd=scratch, env=env, capture_output=True,
                       timeout=120)
        print("packaging timings (s):", timings)
