"""Hostile input (issue 8, item 8): thousands of mutated MP4, MKV, JPEG, PNG, WebP and
PDF files through the validate and transcode/convert actions.

Every file must end failed with a one-line reason from a known set, or completed
with output that decodes; nothing may crash the process that runs the action.
The bulk runs the actions in child runner processes (a segfault shows as a missing
answer, counted as a crash); a subset goes through a real ``mediaq worker``.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.chaos import hostile_media as hm
from tests.chaos.conftest import scaled
from tests.helpers import MediaqEnv, diagnostic_workflow, wait_for

pytestmark = pytest.mark.chaos


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return hm.make_seeds(tmp_path_factory.mktemp("seeds"))


def test_fuzzed_files_fail_cleanly_or_decode(tmp_path: Path, seeds: dict[str, bytes],
                                             figure: Any) -> None:
    files = scaled(5_100, 300)
    tasks = hm.build_tasks(seeds, files, tmp_path / "files")
    started = time.monotonic()
    results, crashes = hm.run_all(tasks, tmp_path)
    seconds = time.monotonic() - started

    by_id = {t["id"]: t for t in tasks}
    outcomes = collections.Counter((r["action"], r["status"]) for r in results)
    shapes: collections.Counter[str] = collections.Counter()
    unknown, unclassified, undecodable = [], [], []
    for r in results:
        name = Path(by_id[r["id"]]["path"]).name
        if r["status"] == "failed":
            shapes[hm.reason_shape(r["message"], name)] += 1
            if not hm.is_known_reason(r["message"]):
                unknown.append((r["id"], r["message"]))
        elif r["status"] == "unclassified":
            unclassified.append((r["id"], by_id[r["id"]]["mutation"], r["message"], r["trace"]))
        elif r["bad_outputs"]:
            undecodable.append((r["id"], r["bad_outputs"]))

    kinds = collections.Counter(hm.KINDS[n % len(hm.KINDS)] for n in range(files))
    figure(f"{files} mutated files ({dict(kinds)}), {len(tasks)} action runs "
           f"in {seconds:.1f} s; crashes {len(crashes)}, unclassified {len(unclassified)}, "
           f"unknown reasons {len(unknown)}, undecodable outputs {len(undecodable)}")
    figure("outcomes: " + ", ".join(f"{a} {s} {n}" for (a, s), n in sorted(outcomes.items())))
    figure(f"{len(shapes)} distinct reasons: "
           + "; ".join(f"{n}x {s}" for s, n in shapes.most_common()))
    assert not crashes, crashes[:5]
    assert not unclassified, unclassified[:3]
    assert not unknown, unknown[:10]
    assert not undecodable, undecodable[:5]
    assert len(results) == len(tasks)
    assert outcomes.keys() >= {(a, "failed") for k in hm.KINDS for a, _ in hm.PLAN[k]}


def _fuzz_workflows(mq: MediaqEnv) -> None:
    for kind, plan in hm.PLAN.items():
        mq.apply_workflow(diagnostic_workflow(
            f"FUZZ-{kind.upper()}",
            *[{"action": action, "parameters": params} for action, params in plan],
            retry_count=0))


def test_a_worker_survives_fuzzed_files(mq: MediaqEnv, seeds: dict[str, bytes],
                                        figure: Any) -> None:
    files = scaled(600, 48)
    _fuzz_workflows(mq)
    codes: dict[str, str] = {}
    with psycopg.connect(mq.url, autocommit=True) as conn:
        for n in range(files):
            kind = hm.KINDS[n % len(hm.KINDS)]
            data, _ = hm.mutate(seeds[kind], seed=100_000 + n)
            path = mq.input_file(f"w{n:05d}.{kind}", data)
            row = conn.execute("SELECT job_code FROM mediaq.submit_job(%s, %s)",
                               (f"FUZZ-{kind.upper()}", str(path))).fetchone()
            assert row is not None
            codes[row[0]] = path.name
    worker = mq.start_worker("--jobs", "2")
    started = time.monotonic()
    wait_for(lambda: mq.one("SELECT count(*) AS n FROM workflow_jobs WHERE status IN "
                            "('completed', 'failed')")["n"] == files or worker.poll() is not None,
             timeout=scaled(900, 180), interval=0.5, message="every fuzzed job to finish")
    seconds = time.monotonic() - started
    alive = worker.poll() is None
    jobs = mq.query("SELECT job_code, status, error_message, output_metadata FROM workflow_jobs")
    statuses = collections.Counter(j["status"] for j in jobs)
    bad = [(j["job_code"], j["status"], j["error_message"]) for j in jobs
           if not (j["status"] == "completed" or (
               j["status"] == "failed" and j["error_message"]
               and hm.is_known_reason(j["error_message"])))]
    undecodable = []
    for job in jobs:
        if job["status"] == "completed":
            for output in (job["output_metadata"] or {}).get("outputs", []):
                why = hm.check_output(Path(output["path"]))
                if why is not None:
                    undecodable.append((job["job_code"], output["path"], why))
    log = mq.worker_log(worker)
    figure(f"{files} fuzzed jobs through one `mediaq worker` in {seconds:.1f} s: "
           f"{dict(statuses)}; worker alive {alive}; unclassified/unknown {len(bad)}; "
           f"undecodable outputs {len(undecodable)}; tracebacks in log "
           f"{log.count('Traceback')}")
    assert alive, log[-3000:]
    assert statuses["completed"] + statuses["failed"] == files
    assert not bad, bad[:10]
    assert not undecodable, undecodable[:5]
    assert "Traceback" not in log, log[-3000:]
