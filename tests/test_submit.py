"""Submitting work: the CLI, SQL (submit_job and a plain INSERT), the Python API,
refusals, idempotency, and the priority-then-FIFO claim order."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

import mediaq
from mediaq.errors import SubmissionRefused
from tests.helpers import MediaqEnv, diagnostic_workflow, wait_for


@pytest.fixture
def noop_workflow(mq: MediaqEnv) -> str:
    mq.apply_workflow(diagnostic_workflow(
        "T-SUBMIT", {"action": "noop", "step_name": "Make.Thumb"},
        {"action": "sleep", "parameters": {"seconds": 0.05}, "timeout_seconds": 5},
        default_priority=4))
    return "T-SUBMIT"


def job_count(mq: MediaqEnv) -> int:
    return int(mq.one("SELECT count(*) AS n FROM workflow_jobs")["n"])


def plain_connection(mq: MediaqEnv) -> psycopg.Connection[dict]:
    """A connection as any other application opens one: no search_path of ours."""
    return psycopg.connect(mq.url, autocommit=True, row_factory=dict_row)


def our_path(mq: MediaqEnv) -> psycopg.Connection[tuple]:
    """A non-autocommit connection with search_path = mediaq, public."""
    return psycopg.connect(mq.url, options="-c search_path=mediaq,public")


# -- the CLI ------------------------------------------------------------------------------


def test_cli_submit_prints_the_job_code_and_stores_the_options(
    mq: MediaqEnv, noop_workflow: str
) -> None:
    path = mq.input_file("in.bin")
    result = mq.cli("submit", noop_workflow, str(path), "--priority", "9",
                    "--param", "Make.Thumb.size=300", "--param", "Make.Thumb.label=big",
                    "--param", "2.enabled=true", "--param", "2.ratio=0.5",
                    "--metadata", '{"camera": "A", "take": 3}',
                    "--notify", "https://hooks.example/x", "--notify", "mailto:ops@example.com")
    code = result.stdout.split()[-1]
    job = mq.job(code)
    assert job["status"] == "pending"
    assert job["priority"] == 9
    assert job["input_file_path"] == str(path.resolve())
    assert job["params"] == {"Make.Thumb": {"size": 300, "label": "big"},
                             "2": {"enabled": True, "ratio": 0.5}}
    assert job["input_metadata"] == {"camera": "A", "take": 3}
    assert job["notify"] == ["https://hooks.example/x", "mailto:ops@example.com"]
    assert job["resource_category"] == "cpu"

    plain = mq.job(mq.submit(noop_workflow, path))
    assert plain["priority"] == 4  # the workflow's default
    assert plain["params"] == {} and plain["input_metadata"] is None and plain["notify"] == []


def test_param_overrides_reach_the_step(mq: MediaqEnv, noop_workflow: str) -> None:
    """A step sleeping 30 s past its 5 s timeout completes when --param shortens it."""
    mq.query("UPDATE workflow_steps SET parameters = '{\"seconds\": 30}' WHERE action = 'sleep'")
    code = mq.submit(noop_workflow, mq.input_file("in.bin"), "--param", "2.seconds=0.1")
    assert mq.job(code)["params"] == {"2": {"seconds": 0.1}}
    mq.run_burst()
    job = mq.job(code)
    assert job["status"] == "completed", job["error_message"]
    done = mq.one("SELECT se.output_data FROM step_executions se JOIN workflow_steps ws"
                  " ON ws.id = se.step_id WHERE se.job_id = %s AND ws.step_number = 2",
                  (job["id"],))
    assert done["output_data"]["slept_seconds"] == 0.1


def test_idempotency_key_returns_the_same_job(mq: MediaqEnv, noop_workflow: str) -> None:
    path = mq.input_file("in.bin")
    first = mq.submit(noop_workflow, path, "--key", "upload-42")
    second = mq.submit(noop_workflow, path, "--key", "upload-42")
    assert first == second
    again = mq.one("SELECT job_code FROM mediaq.submit_job(%s, %s,"
                   " idempotency_key => 'upload-42')", (noop_workflow, str(path)))
    assert again == {"job_code": first}
    assert job_count(mq) == 1
    other = mq.submit(noop_workflow, path, "--key", "upload-43")
    assert other != first and job_count(mq) == 2


def refusal_cases(mq: MediaqEnv, workflow: str) -> dict[str, list[str]]:
    good = str(mq.input_file("good.bin"))
    outside = mq.root / "outside.bin"
    outside.write_bytes(b"x")
    link = mq.inputs / "link.bin"
    link.symlink_to("/etc/hostname")
    relative = os.path.relpath(mq.inputs, Path.cwd()) + "/../outside.bin"
    return {
        "unknown workflow": ["NO-SUCH-WORKFLOW", good],
        "missing file": [workflow, str(mq.inputs / "missing.bin")],
        "outside the roots": [workflow, "/etc/hostname"],
        "relative path with ..": [workflow, relative],
        "absolute path with ..": [workflow, f"{mq.inputs}/../outside.bin"],
        "symlink leading outside": [workflow, str(link)],
        "network URL": [workflow, "http://example.com/a.mp4"],
        "priority 11": [workflow, good, "--priority", "11"],
        "priority 0": [workflow, good, "--priority", "0"],
        "metadata not JSON": [workflow, good, "--metadata", "{not json"],
        "metadata not an object": [workflow, good, "--metadata", "[1, 2]"],
        "param without a step": [workflow, good, "--param", "size=300"],
        "param without a value": [workflow, good, "--param", "Make.Thumb.size"],
    }


# case: words the one-line error must contain
CASES = {
    "unknown workflow": "workflow NO-SUCH-WORKFLOW does not exist",
    "missing file": "does not exist",
    "outside the roots": "outside the input roots",
    "relative path with ..": "outside the input roots",
    "absolute path with ..": "outside the input roots",
    "symlink leading outside": "outside the input roots",
    "network URL": "only local files",
    "priority 11": "priority",
    "priority 0": "priority",
    "metadata not JSON": "--metadata is not valid JSON",
    "metadata not an object": "--metadata must be a JSON object",
    "param without a step": "--param",
    "param without a value": "--param",
}
NAMES_THE_FILE = {"missing file", "outside the roots", "relative path with ..",
                  "absolute path with ..", "symlink leading outside"}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_submissions_exit_1_with_one_line_and_create_nothing(
    mq: MediaqEnv, noop_workflow: str, case: str
) -> None:
    args = refusal_cases(mq, noop_workflow)[case]
    result = mq.cli("submit", *args, check=False)
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert CASES[case] in lines[0]
    assert job_count(mq) == 0
    if case in NAMES_THE_FILE:
        assert args[1] in lines[0]


def test_param_value_that_yaml_reads_as_a_date_is_stored_or_refused_cleanly(
    mq: MediaqEnv, noop_workflow: str
) -> None:
    path = mq.input_file("in.bin")
    result = mq.cli("submit", noop_workflow, str(path), "--param", "Make.Thumb.until=2024-01-25",
                    check=False)
    assert "Traceback" not in result.stderr, result.stderr
    if result.returncode == 0:
        job = mq.job(result.stdout.split()[-1])
        assert job["params"] == {"Make.Thumb": {"until": "2024-01-25"}}
    else:
        assert result.returncode == 1 and result.stderr.startswith("error: ")
        assert len(result.stderr.strip().splitlines()) == 1


# -- SQL ----------------------------------------------------------------------------------


def test_sql_submit_job_from_any_application_is_completed_by_a_worker(
    mq: MediaqEnv, noop_workflow: str
) -> None:
    path = mq.input_file("in.bin")
    with plain_connection(mq) as conn:
        job = conn.execute("SELECT * FROM mediaq.submit_job(%s, %s)",
                           (noop_workflow, str(path))).fetchone()
    assert job is not None and job["job_code"] and job["priority"] == 4
    mq.run_burst()
    assert mq.job(job["job_code"])["status"] == "completed"


def test_sql_submit_job_refusals(mq: MediaqEnv, noop_workflow: str) -> None:
    with plain_connection(mq) as conn:
        with pytest.raises(psycopg.Error, match="workflow NOPE does not exist"):
            conn.execute("SELECT * FROM mediaq.submit_job('NOPE', '/in/a.bin')")
        with pytest.raises(psycopg.Error, match="input file path is required"):
            conn.execute("SELECT * FROM mediaq.submit_job(%s, '')", (noop_workflow,))
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("SELECT * FROM mediaq.submit_job(%s, '/in/a.bin', 11)",
                         (noop_workflow,))
    assert job_count(mq) == 0


def test_plain_insert_gets_defaults_and_is_picked_up_at_once(
    mq: MediaqEnv, noop_workflow: str
) -> None:
    workflow_id = mq.one("SELECT id FROM workflow_definitions WHERE workflow_code = %s",
                         (noop_workflow,))["id"]
    mq.start_worker()
    wait_for(lambda: mq.query("SELECT 1 FROM workers WHERE status = 'running'"),
             timeout=15, message="the worker to register")
    time.sleep(0.5)  # let it go idle (listening)
    path = mq.input_file("in.bin")
    with plain_connection(mq) as conn:
        row = conn.execute("INSERT INTO mediaq.workflow_jobs (workflow_id, input_file_path)"
                           " VALUES (%s, %s) RETURNING job_code, priority, resource_category,"
                           " status", (workflow_id, str(path))).fetchone()
    assert row is not None
    assert row["job_code"].startswith("JOB-")
    assert (row["priority"], row["resource_category"], row["status"]) == (4, "cpu", "pending")
    wait_for(lambda: mq.job(row["job_code"])["started_at"], timeout=5,
             message="the worker to start the inserted job")
    job = mq.job(row["job_code"])
    latency = (job["started_at"] - job["submitted_at"]).total_seconds()
    print(f"plain INSERT enqueue-to-start latency: {latency * 1000:.0f} ms")
    assert latency < 1.5
    wait_for(lambda: mq.job(row["job_code"])["status"] == "completed", timeout=10)


# -- Python API ---------------------------------------------------------------------------


# These use a connection with mediaq's search_path so that they show the transaction
# handling alone; test_python_submit_refusals uses a plain connection.


def test_python_submit_rolled_back_by_the_caller_leaves_no_job(
    mq: MediaqEnv, noop_workflow: str
) -> None:
    """DB-API style: the connection's implicit transaction, rolled back."""
    with our_path(mq) as conn:
        job = mediaq.submit(conn, noop_workflow, mq.input_file("in.bin"), priority=6,
                            params={"Make.Thumb": {"size": 10}})
        assert job["job_code"]
        conn.rollback()
    assert job_count(mq) == 0, "a job submitted in a rolled-back transaction exists"


def test_python_submit_in_a_rolled_back_transaction_block_leaves_no_job(
    mq: MediaqEnv, noop_workflow: str
) -> None:
    with our_path(mq) as conn:
        with conn.transaction(force_rollback=True):
            mediaq.submit(conn, noop_workflow, mq.input_file("in.bin"))
        assert job_count(mq) == 0, "a job submitted in a rolled-back transaction block exists"
        with conn.transaction():
            job = mediaq.submit(conn, noop_workflow, mq.input_file("in.bin"))
    assert mq.job(job["job_code"])["status"] == "pending"


def test_python_submit_is_visible_only_once_the_caller_commits(
    mq: MediaqEnv, noop_workflow: str
) -> None:
    with our_path(mq) as conn:
        job = mediaq.submit(conn, noop_workflow, mq.input_file("in.bin"), priority=6,
                            metadata={"k": "v"})
        assert job_count(mq) == 0, "the job is visible before the caller committed"
        conn.commit()
    stored = mq.job(job["job_code"])
    assert stored["priority"] == 6 and stored["input_metadata"] == {"k": "v"}
    assert job_count(mq) == 1


def test_python_submit_refusals(mq: MediaqEnv, noop_workflow: str) -> None:
    with psycopg.connect(mq.url) as conn:
        with pytest.raises(SubmissionRefused, match="outside"):
            mediaq.submit(conn, noop_workflow, "/in/a.bin", priority=11)
        with pytest.raises(SubmissionRefused,
                           match="does not exist"):
            mediaq.submit(conn, "NOPE", "/in/a.bin")
        # the caller's transaction survives a refusal
        job = mediaq.submit(conn, noop_workflow, "/in/a.bin")
        conn.commit()
    assert mq.job(job["job_code"])["status"] == "pending"


# -- order --------------------------------------------------------------------------------


def test_priority_then_fifo(mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow("T-ORDER", {"action": "noop"}))
    path = mq.input_file("in.bin")
    codes = [mq.submit("T-ORDER", path, "--priority", p) for p in ("2", "9", "5", "9")]
    mq.run_burst("--limits", "cpu=1")
    order = [r["job_code"] for r in mq.query(
        "SELECT j.job_code FROM workflow_jobs j JOIN step_executions se ON se.job_id = j.id"
        " GROUP BY j.job_code ORDER BY min(se.id)")]
    assert order == [codes[1], codes[3], codes[2], codes[0]]
    started = [mq.job(c)["started_at"] for c in order]
    assert started == sorted(started)
