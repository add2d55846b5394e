"""Outputs are published after their step's COMMIT, never before it (issues 19, 20): a
worker killed between the two (``MEDIAQ_TEST_FAILPOINT=after_commit``, a SIGKILL right
after the COMMIT) leaves a committed step whose files are not in place yet, and the next
comer (a later task of the job, or any worker's maintenance loop) publishes them exactly
once; no final path ever holds a file of an attempt that did not commit. Real
PostgreSQL, real worker processes, a real S3-protocol server (moto) for object storage.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mediaq import db, prune
from mediaq.config import load_settings
from mediaq.storage.setup import object_storage
from mediaq.worker import publications
from mediaq.worker.maintenance.object_sweeper import sweep_once
from tests.helpers import MediaqEnv, diagnostic_workflow, wait_for
from tests.publication_watch import PublicationWatch
from tests.s3_server import CREDENTIALS, MOTO_SERVER, HoldingProxy, moto_server
from tests.test_object_storage import (
    Store,
    assert_written_only_by_the_committer,
    check_outputs,
    store_for,
)


def publications_of(mq: MediaqEnv, code: str) -> list[dict[str, Any]]:
    return mq.query("SELECT p.*, se.status AS step_status FROM publications p"
                    " JOIN workflow_jobs j ON j.id = p.job_id"
                    " JOIN step_executions se ON se.id = p.execution_id"
                    " WHERE j.job_code = %s ORDER BY p.id", (code,))


def killed_after_commit(mq: MediaqEnv, code: str, failpoint: str) -> None:
    """A worker that runs ``code`` and dies (SIGKILL) right after a step's COMMIT."""
    victim = mq.start_worker("--id", "victim", test_failpoint=failpoint)
    victim.wait(120)
    log = mq.worker_log(victim)
    assert victim.returncode == -9 and "test:failpoint" in log, log[-3000:]


def recorded_outputs(mq: MediaqEnv, code: str) -> dict[str, str]:
    """Each output path the job's committed steps recorded, with its SHA-256."""
    rows = mq.query("SELECT se.output_data FROM step_executions se JOIN workflow_jobs j"
                    " ON j.id = se.job_id WHERE j.job_code = %s AND se.status = 'completed'",
                    (code,))
    return {o["path"]: o["sha256"] for r in rows for o in r["output_data"]["outputs"]}


# -- local outputs ---------------------------------------------------------------------------


def test_outputs_of_a_worker_killed_after_its_commit_are_published_once_by_the_next_task(
        mq: MediaqEnv) -> None:
    """Step 1 commits, its worker dies before moving the file: the database has the step,
    the final path has nothing (never a file the database does not know). The job's
    next task, on another worker, publishes it first (finalize_job then checks its
    checksum); each final path gets one file, the committed attempt's bytes."""
    mq.apply_workflow(diagnostic_workflow(
        "T-PUB", {"action": "sleep", "parameters": {"seconds": 0, "output_bytes": 40_000}},
        {"action": "finalize_job", "parameters": {"verify_checksums": True}}))
    source = mq.inputs / "in.bin"
    source.write_bytes(b"input")
    code = mq.submit("T-PUB", source)
    with PublicationWatch(mq.outputs, interval=0.005) as watch:
        killed_after_commit(mq, code, "after_commit:1")
        (pending,) = publications_of(mq, code)
        assert pending["step_status"] == "completed" and pending["published_at"] is None
        final, staged = Path(pending["final"]), Path(pending["staged"])
        assert not final.exists() and staged.is_file()
        assert staged.is_relative_to(mq.outputs / ".staging")
        assert hashlib.sha256(staged.read_bytes()).hexdigest() == pending["sha256"]
        survivor = mq.start_worker("--id", "survivor")
        wait_for(lambda: mq.job(code)["status"] in ("completed", "failed"), timeout=120,
                 message="the survivor to finish the job")
    job = mq.job(code)
    assert job["status"] == "completed", job["error_message"]
    assert "publication:finished_leftovers" in mq.worker_log(survivor)
    assert all(p["published_at"] is not None for p in publications_of(mq, code))
    recorded = recorded_outputs(mq, code)
    assert str(final) in recorded and final.is_file()
    # One file per final path, ever, holding the bytes of the step that committed it.
    assert watch.published_twice() == []
    for path, digests in watch.contents.items():
        assert digests == {recorded[path]}, path
    assert set(watch.inodes) == set(recorded)


def test_the_last_steps_outputs_are_published_before_the_job_completes(
        mq: MediaqEnv) -> None:
    """The job's last step commits and its worker dies before moving the file: the job
    is not completed yet (it completes once its outputs are in place), its staged file
    survives the staging sweep; the task's rescuer publishes it, once, then completes
    the job."""
    mq.apply_workflow(diagnostic_workflow(
        "T-LAST", {"action": "sleep", "parameters": {"seconds": 0, "output_bytes": 3000}}))
    source = mq.inputs / "last.bin"
    source.write_bytes(b"input")
    code = mq.submit("T-LAST", source)
    with PublicationWatch(mq.outputs, interval=0.005) as watch:
        killed_after_commit(mq, code, "after_commit")
        assert mq.job(code)["status"] == "processing"
        (pending,) = publications_of(mq, code)
        final, staged = Path(pending["final"]), Path(pending["staged"])
        assert pending["published_at"] is None and not final.exists() and staged.is_file()
        with db.connect(mq.url, autocommit=True) as conn:
            assert prune.sweep_staging(conn, mq.outputs / ".staging",
                                       min_age=timedelta(0)) == []
        assert staged.is_file()
        rescuer = mq.start_worker("--id", "rescuer")
        wait_for(lambda: mq.job(code)["status"] == "completed", timeout=60,
                 message="the rescuer to publish the output and complete the job")
        # Published before the job completed, by the one that completed it.
        assert publications_of(mq, code)[0]["published_at"] is not None
        assert hashlib.sha256(final.read_bytes()).hexdigest() == pending["sha256"]
    assert "publication:finished_leftovers" in mq.worker_log(rescuer)
    assert [len(inodes) for inodes in watch.inodes.values()] == [1]
    assert mq.job(code)["output_file_path"] == str(final)


def test_a_publication_another_live_publisher_holds_is_left_to_it(mq: MediaqEnv) -> None:
    """One publisher at a time: a publication a live worker holds (it may be copying a
    large object now) is not taken by another worker's maintenance pass; once that
    worker's session is gone its claim ends and the next pass publishes it, once."""
    mq.apply_workflow(diagnostic_workflow(
        "T-HELD", {"action": "sleep", "parameters": {"seconds": 0, "output_bytes": 2000}}))
    source = mq.inputs / "held.bin"
    source.write_bytes(b"input")
    code = mq.submit("T-HELD", source)
    killed_after_commit(mq, code, "after_commit")
    (pending,) = publications_of(mq, code)
    assert pending["claimed_by"] == "victim"  # the committing worker held it
    final = Path(pending["final"])
    objects = object_storage(load_settings(mq.env).storage)
    pool = db.make_pool(mq.url, size=2)
    try:
        with psycopg.connect(mq.url, autocommit=True) as holder:
            # A live publisher (its session holds its liveness lock) claims it.
            holder.execute("INSERT INTO mediaq.workers (worker_id, host, liveness_key)"
                           " VALUES ('holder', 'elsewhere', hashtext('holder'))")
            holder.execute("SELECT pg_advisory_lock(28017, hashtext('holder'))")
            holder.execute("UPDATE mediaq.publications SET claimed_by = 'holder',"
                           " claimed_until = now() + interval '1 hour' WHERE id = %s",
                           (pending["id"],))
            assert publications.publish_leftovers(pool, objects, "sweeper") == (0, 0)
            assert not final.exists()
        # The holder's session ended: its claim with it.
        assert publications.publish_leftovers(pool, objects, "sweeper") == (1, 0)
        assert publications.publish_leftovers(pool, objects, "sweeper") == (0, 0)
    finally:
        pool.close()
    assert hashlib.sha256(final.read_bytes()).hexdigest() == pending["sha256"]
    (done,) = publications_of(mq, code)
    assert done["published_at"] is not None and done["claimed_by"] == "sweeper"


# -- object storage --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    if not MOTO_SERVER.exists():
        pytest.skip("needs moto_server")
    with moto_server() as url:
        yield url


@pytest.fixture
def store(mq: MediaqEnv, endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Store:
    for name, value in CREDENTIALS.items():  # this process's client (sweep, publisher)
        monkeypatch.setenv(name, value)
    return store_for(mq, endpoint)


def test_an_s3_output_is_copied_after_the_commit_not_inside_it(store: Store) -> None:
    """A 12 MB output (a multipart copy) whose copy to the final key the store holds:
    while it is held, the step and its publication are committed and the job row can be
    locked (the copy is no part of the commit, so no idle-in-transaction timeout can cut
    it, and no rescuer waits on it). The store then drops the
    copy: the job completes with the output left to publish; the sweep keeps the
    committed attempt's staged object; another worker's maintenance loop copies it,
    once; then the sweep takes the staged object."""
    mq = store.mq
    size = 12 * 1024 * 1024
    mq.apply_workflow(diagnostic_workflow(
        "T-S3PUB", {"action": "sleep", "parameters": {"seconds": 0, "output_bytes": size}}))
    code = mq.submit("T-S3PUB", store.put("big.bin", b"input"))
    final_prefix = f"/{store.outputs}/jobs/{code}/"
    proxy = HoldingProxy(store.endpoint, hold=lambda method, path: method in ("PUT", "POST")
                         and path.startswith(final_prefix))
    proxy.start()
    try:
        worker = mq.start_worker("--id", "committer", s3_endpoint_url=proxy.endpoint)
        assert proxy.held.wait(120), "the worker never copied to the final key"
        (pending,) = publications_of(mq, code)
        assert pending["step_status"] == "completed" and pending["published_at"] is None
        assert pending["size_bytes"] == size
        assert store.final_keys() == []
        staged_key = pending["staged"].removeprefix(f"s3://{store.outputs}/")
        assert store.staged_keys() == [staged_key]
        with psycopg.connect(mq.url) as conn:  # the job row is free: no commit holds it
            conn.execute("SET lock_timeout = '10s'")  # past a heartbeat's short write
            conn.execute("SELECT 1 FROM mediaq.workflow_jobs WHERE job_code = %s"
                         " FOR UPDATE", (code,))
        proxy.release.set()  # the held copy gets no answer, its retries neither
        wait_for(lambda: mq.job(code)["status"] == "completed", timeout=180,
                 message="the job to complete with its output left to publish")
        assert "publication:failed" in mq.worker_log(worker)
    finally:
        proxy.stop()
    assert store.final_keys() == []
    assert publications_of(mq, code)[0]["published_at"] is None
    # The sweep of dead attempts' objects keeps a committed attempt's, unpublished.
    objects = object_storage(load_settings(mq.env).storage)
    report = sweep_once(mq.url, objects)
    assert (report.objects_removed, store.staged_keys()) == (0, [staged_key])
    mq.start_worker("--id", "tidier")  # its maintenance loop finishes the leftover
    wait_for(lambda: publications_of(mq, code)[0]["published_at"] is not None, timeout=60,
             message="another worker's maintenance loop to publish the output")
    job = mq.job(code)
    assert pending["final"] == job["output_file_path"]
    check_outputs(store, job)
    assert_written_only_by_the_committer(store, job)
    versions = store.s3.list_object_versions(
        Bucket=store.outputs, Prefix=pending["final"].removeprefix(f"s3://{store.outputs}/"))
    assert len(versions.get("Versions", [])) == 1
    wait_for(lambda: store.staged_keys() == [], timeout=60,
             message="the sweep of the published attempt's staged object")


def test_s3_outputs_are_catalogued_as_s3_assets(store: Store) -> None:
    """The media library records outputs in object storage (and s3:// inputs) by their
    s3:// location (the assets' path check allowed only local paths)."""
    mq = store.mq
    mq.apply_workflow(diagnostic_workflow(
        "T-S3CAT", {"action": "sleep", "parameters": {"seconds": 0, "output_bytes": 500}}))
    source = store.put("cat.bin", b"catalogue me")
    code = mq.submit("T-S3CAT", source)
    burst = mq.run_burst(timeout=120)
    assert "catalog:record_failed" not in burst.stdout + burst.stderr
    job = mq.job(code)
    assert job["status"] == "completed"
    assets = {r["path"]: r for r in mq.query(
        "SELECT a.path, a.origin, a.content_hash FROM assets a JOIN asset_jobs aj"
        " ON aj.asset_id = a.id JOIN workflow_jobs j ON j.id = aj.job_id"
        " WHERE j.job_code = %s", (code,))}
    (output,) = job["output_metadata"]["outputs"]
    assert assets[output["path"]]["origin"] == "output"
    assert assets[output["path"]]["content_hash"] == output["sha256"]
    assert assets[source]["origin"] == "input"
    assert sorted(assets) == sorted([source, output["path"]])  # never folded to "s3:/"
