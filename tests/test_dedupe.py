"""Content de-duplication: identical submissions inside a workflow's window share a job."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from blake3 import blake3
from psycopg.rows import dict_row

from mediaq.errors import SubmissionRefused
from mediaq.submit import submit
from tests.helpers import MediaqEnv, diagnostic_workflow


def _dedupe_workflow(mq: MediaqEnv, code: str = "T-DEDUPE", window_s: int | None = 3600) -> None:
    mq.apply_workflow(diagnostic_workflow(code, {"action": "noop"},
                                          dedupe_window_seconds=window_s))


def _submit(mq: MediaqEnv, path: Path, workflow: str = "T-DEDUPE",
            **kwargs: Any) -> dict[str, Any]:
    with psycopg.connect(mq.url, row_factory=dict_row,
                         options="-c search_path=mediaq,public") as conn:
        job = submit(conn, workflow, path, **kwargs)
        conn.commit()
    return job


def test_twenty_concurrent_identical_submissions_make_one_job(mq: MediaqEnv) -> None:
    _dedupe_workflow(mq)
    source = mq.input_file("clip.bin", b"the same bytes" * 10_000)
    codes: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(20)

    def one() -> None:
        try:
            start.wait()
            codes.append(_submit(mq, source)["job_code"])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(codes) == 20 and len(set(codes)) == 1
    job = mq.one("SELECT job_code, content_hash FROM workflow_jobs")
    assert job["job_code"] == codes[0]
    assert job["content_hash"] == blake3(source.read_bytes()).hexdigest()


def test_what_makes_a_submission_different(mq: MediaqEnv) -> None:
    _dedupe_workflow(mq)
    first = mq.input_file("a.bin", b"content A")
    twin = mq.input_file("a-copy.bin", b"content A")  # same bytes, another name
    other = mq.input_file("b.bin", b"content B")
    job = _submit(mq, first)
    assert _submit(mq, twin)["job_code"] == job["job_code"]
    assert _submit(mq, other)["job_code"] != job["job_code"]
    with_params = _submit(mq, first, params={"noop 1": {"x": 1}})
    assert with_params["job_code"] != job["job_code"]
    assert _submit(mq, first, params={"noop 1": {"x": 1}})["job_code"] == with_params["job_code"]
    # Outside the window the key is taken over by a new job.
    mq.query("UPDATE job_dedupe_keys SET claimed_at = now() - interval '2 hours'")
    assert _submit(mq, first)["job_code"] != job["job_code"]
    assert mq.one("SELECT count(*) AS n FROM workflow_jobs")["n"] == 4


def test_a_workflow_without_dedupe_takes_every_submission(mq: MediaqEnv) -> None:
    _dedupe_workflow(mq, "T-PLAIN", window_s=None)
    source = mq.input_file("c.bin", b"same")
    codes = {_submit(mq, source, workflow="T-PLAIN")["job_code"] for _ in range(3)}
    assert len(codes) == 3
    assert mq.query("SELECT content_hash FROM workflow_jobs WHERE content_hash IS NOT NULL") == []


def test_an_unreadable_input_is_refused_with_one_line(mq: MediaqEnv) -> None:
    _dedupe_workflow(mq)
    with pytest.raises(SubmissionRefused, match="cannot be read to de-duplicate"):
        _submit(mq, mq.inputs / "missing.bin")
    assert mq.query("SELECT * FROM workflow_jobs") == []


def test_a_bad_window_is_refused_when_the_workflow_is_applied(mq: MediaqEnv) -> None:
    path = mq.write_yaml("bad.yaml", diagnostic_workflow("T-BAD", {"action": "noop"},
                                                         dedupe_window_seconds=0))
    result = mq.cli("workflows", "apply", str(path), check=False)
    assert result.returncode == 1 and "dedupe_window_seconds" in result.stderr


def test_the_cli_returns_the_same_job_code(mq: MediaqEnv) -> None:
    _dedupe_workflow(mq)
    source = mq.input_file("d.bin", b"payload")
    assert mq.submit("T-DEDUPE", source) == mq.submit("T-DEDUPE", source)
