"""Batch submission (mediaq.submit.submit_batch): one INSERT for many jobs, the same
jobs as submit() would make, refused as submit() refuses, committed by the caller."""

from __future__ import annotations

import pytest

from mediaq.errors import SubmissionRefused
from mediaq.submit import submit_batch
from tests.helpers import MediaqEnv, diagnostic_workflow


def test_batch_makes_ordered_jobs_with_sizes_and_queue_rows(mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow("T-BATCH", {"action": "noop"}))
    a, b = mq.input_file("a.bin", b"abc"), mq.input_file("b.bin", b"hello")
    with mq.connect() as conn:
        conn.autocommit = False
        codes = submit_batch(conn, "T-BATCH", [a, b, a], priority=7, submitted_by="bench")
        conn.commit()
    rows = mq.query("""SELECT job_code, input_file_path, input_bytes, priority, status,
                              submitted_by FROM workflow_jobs ORDER BY id""")
    assert [r["job_code"] for r in rows] == codes
    assert [r["input_file_path"] for r in rows] == [str(a), str(b), str(a)]
    assert [r["input_bytes"] for r in rows] == [3, 5, 3]
    assert {(r["priority"], r["status"], r["submitted_by"]) for r in rows} == {
        (7, "pending", "bench")}
    assert mq.one("SELECT count(*) AS n FROM media_queue")["n"] == 3
    mq.run_burst()
    assert {r["status"] for r in mq.query("SELECT status FROM workflow_jobs")} == {"completed"}


def test_batch_is_refused_like_submit_and_left_to_the_callers_transaction(
        mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow("T-BATCH", {"action": "noop"}))
    path = mq.input_file("a.bin")
    with mq.connect() as conn:
        conn.autocommit = False
        with pytest.raises(SubmissionRefused, match="does not exist"):
            submit_batch(conn, "T-NOPE", [path])
        with pytest.raises(SubmissionRefused, match="outside"):
            submit_batch(conn, "T-BATCH", [path], priority=11)
        assert len(submit_batch(conn, "T-BATCH", [path, path])) == 2
        conn.rollback()
        conn.execute("UPDATE workflow_definitions SET is_active = FALSE"
                     " WHERE workflow_code = 'T-BATCH'")
        with pytest.raises(SubmissionRefused, match="disabled"):
            submit_batch(conn, "T-BATCH", [path])
        conn.rollback()
    assert mq.one("SELECT count(*) AS n FROM workflow_jobs")["n"] == 0


def test_cli_submits_many_paths_all_or_none(mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow("T-BATCH", {"action": "noop"}))
    a, b, c = (mq.input_file(name, b"x" * n) for n, name in enumerate(("a", "b", "c"), 1))
    listing = mq.input_file("list.txt", f"{b}\n\n{c}\n".encode())
    refused = mq.cli("submit", "T-BATCH", str(a), str(mq.inputs / "missing.bin"),
                     check=False)
    assert refused.returncode != 0 and "missing.bin" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert mq.one("SELECT count(*) AS n FROM workflow_jobs")["n"] == 0
    printed = mq.cli("submit", "T-BATCH", str(a), "--from-list", str(listing),
                     "--priority", "8").stdout.split()
    codes = printed[1::2]
    rows = mq.query("SELECT job_code, input_file_path, input_bytes, priority"
                    " FROM workflow_jobs ORDER BY id")
    assert [(r["job_code"], r["input_file_path"], r["input_bytes"], r["priority"])
            for r in rows] == [(codes[0], str(a), 1, 8), (codes[1], str(b), 2, 8),
                               (codes[2], str(c), 3, 8)]
    keyed = mq.cli("submit", "T-BATCH", str(a), str(b), "--key", "k1", check=False)
    assert keyed.returncode != 0 and "--key" in keyed.stderr
