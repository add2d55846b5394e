"""Hostile input (issue 8, items 10 and 11): input paths that try to leave the input
roots, and rows written straight into workflow_jobs.

Paths (``../``, symlinks out of the roots, NUL bytes, URL-encoding, URLs, a sibling
folder sharing the root's prefix) go in through the four doors: ``mediaq submit``,
``POST /api/media/jobs``, the SQL function ``mediaq.submit_job`` and a plain INSERT.
The CLI and HTTP refuse them at the door. The database knows no input roots but
refuses, for ``submit_job`` and INSERT alike, what no root allows (relative paths and
URLs, ``..`` segments plain or URL-encoded); what it must accept (symlinks out of the
roots, a sibling folder sharing the root's prefix) the worker refuses with one line,
before any step opens the file. An inotify canary on the outside
folder proves that nothing opened the file behind the path.
"""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
import pytest
import requests

from tests.chaos.conftest import scaled
from tests.chaos.hostile_escape import FileCanary
from tests.chaos.hostile_media import _video
from tests.helpers import MediaqEnv, diagnostic_workflow, wait_for

pytestmark = pytest.mark.chaos

# What the worker (outputs.check_input) answers; a refused job's message must match.
REFUSALS = ("outside the input roots", "input path contains a NUL byte",
            "only local files are accepted", "input paths must be absolute",
            "file does not exist", "not a regular file", "no input file given")


def _hostile_paths(mq: MediaqEnv) -> dict[str, str]:
    outside = mq.root / "outside"
    outside.mkdir()
    _video(outside / "secret.mp4", "mp4", "libx264", None)
    sibling = mq.root / f"{mq.inputs.name}-evil"  # shares the root's name as a prefix
    sibling.mkdir()
    (sibling / "secret.mp4").write_bytes((outside / "secret.mp4").read_bytes())
    (mq.inputs / "link.mp4").symlink_to(outside / "secret.mp4")
    (mq.inputs / "linkdir").symlink_to(outside, target_is_directory=True)
    (mq.inputs / "sub").mkdir()
    inputs = str(mq.inputs)
    return {
        "dotdot": f"{inputs}/../outside/secret.mp4",
        "dotdot_deep": f"{inputs}/sub/../../outside/secret.mp4",
        "relative": "../outside/secret.mp4",
        "symlink_file": f"{inputs}/link.mp4",
        "symlink_dir": f"{inputs}/linkdir/secret.mp4",
        "nul": f"{inputs}/sub/x.mp4\x00/../../../outside/secret.mp4",
        "url_encoded": f"{inputs}/%2e%2e/outside/secret.mp4",
        "url_encoded_slash": f"{inputs}/..%2Foutside%2Fsecret.mp4",
        "file_url": f"file://{outside}/secret.mp4",
        "http_url": "http://127.0.0.1:9/secret.mp4",
        "prefix_sibling": f"{sibling}/secret.mp4",
        "tilde": "~/../../" + str(outside / "secret.mp4").lstrip("/"),
    }


def _one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""



def test_paths_out_of_the_input_roots_are_refused(mq: MediaqEnv, figure: Any) -> None:
    paths = _hostile_paths(mq)
    mq.apply_workflow(diagnostic_workflow("PATHS", {"action": "validate_video"},
                                          retry_count=0))
    token = mq.cli("tokens", "create", "--role", "submitter", "--name", "hostile"
                   ).stdout.split()[-1]
    _, base = mq.start_web()
    rows: dict[str, dict[str, str]] = {}
    sql_jobs: dict[str, str] = {}
    outside = mq.root / "outside"
    with FileCanary(outside) as canary:
        for name, path in paths.items():
            row = rows.setdefault(name, {})
            # 1. the CLI
            if "\x00" in path:
                row["cli"] = "n/a (argv cannot carry a NUL byte)"
            else:
                result = mq.cli("submit", "PATHS", path, check=False)
                assert result.returncode != 0, (name, result.stdout)
                row["cli"] = f"refused: {_one_line(result.stderr)}"
                assert "Traceback" not in result.stderr, result.stderr
            # 2. HTTP
            response = requests.post(base + "/api/media/jobs", timeout=30,
                                     headers={"Authorization": f"Bearer {token}"},
                                     json={"type": "PATHS", "inputPath": path})
            assert 400 <= response.status_code < 500, (name, response.status_code,
                                                       response.text)
            error = response.json()["detail"]  # RFC 9457 problem+json
            assert "\n" not in error
            row["http"] = f"{response.status_code}: {error}"
            # 3. the SQL function and 4. a plain INSERT
            for door, sql in (
                ("sql_function", "SELECT job_code FROM mediaq.submit_job('PATHS', %s)"),
                ("insert", "INSERT INTO mediaq.workflow_jobs (workflow_id, input_file_path) "
                           "SELECT id, %s FROM mediaq.workflow_definitions WHERE "
                           "workflow_code = 'PATHS' AND is_current RETURNING job_code"),
            ):
                try:
                    with psycopg.connect(mq.url, autocommit=True) as conn:
                        found = conn.execute(sql, (path,)).fetchone()
                        assert found is not None
                        sql_jobs[found[0]] = f"{name} {door}"
                        row[door] = f"accepted as {found[0]}"
                except (psycopg.DataError, psycopg.IntegrityError, ValueError) as exc:
                    row[door] = f"refused by PostgreSQL: {_one_line(str(exc))}"
        mq.run_burst(timeout=120)
        time.sleep(0.2)
        opens = canary.poll()
    jobs = {j["job_code"]: j for j in mq.query(
        "SELECT job_code, status, error_message FROM workflow_jobs")}
    for code, where in sql_jobs.items():
        name, door = where.split()
        job = jobs[code]
        rows[name][door] += f" -> worker: {job['status']}: {job['error_message']}"
    for name, row in rows.items():
        print(f"  {name}: " + " | ".join(f"{door}: {text}" for door, text in row.items()))
    web_refused = sum(1 for r in rows.values() if r["http"][0] == "4")
    cli_refused = sum(1 for r in rows.values() if r["cli"].startswith("refused"))
    pg_refused = sum(1 for r in rows.values() for d in ("sql_function", "insert")
                     if r[d].startswith("refused"))
    failed = [j for j in jobs.values() if j["status"] == "failed"]
    figure(f"{len(paths)} hostile paths: CLI refused {cli_refused} (+1 NUL argv n/a), "
           f"HTTP refused {web_refused}, SQL function/INSERT refused by PostgreSQL "
           f"{pg_refused}, accepted {len(sql_jobs)} and failed by the worker "
           f"{len(failed)}/{len(jobs)}; outside-file opens {len(opens)}")
    assert len(jobs) == len(sql_jobs)
    for name in ("dotdot", "dotdot_deep", "relative", "url_encoded", "url_encoded_slash",
                 "file_url", "http_url", "tilde", "nul"):
        for door in ("sql_function", "insert"):
            assert rows[name][door].startswith("refused by PostgreSQL"), (name, rows[name])
    assert all(j["status"] == "failed" for j in jobs.values()), jobs
    for job in jobs.values():
        message = job["error_message"] or ""
        assert "\n" not in message and any(r in message for r in REFUSALS), message
    assert opens == []


# --------------------------------------------------------------------------- item 11

BAD_ROWS: list[tuple[str, str, dict[str, Any]]] = [
    # (name, SQL, parameters): each an INSERT into workflow_jobs a client might attempt
    ("params not JSON", "INSERT INTO workflow_jobs (workflow_id, input_file_path, params) "
     "VALUES (%(wf)s, %(input)s, %(text)s::jsonb)", {"text": "{not json"}),
    ("metadata not JSON", "INSERT INTO workflow_jobs (workflow_id, input_file_path, "
     "input_metadata) VALUES (%(wf)s, %(input)s, %(text)s::jsonb)", {"text": "[1, 2,"}),
    ("params an array", "INSERT INTO workflow_jobs (workflow_id, input_file_path, params) "
     "VALUES (%(wf)s, %(input)s, '[1, 2, 3]')", {}),
    ("params a string", "INSERT INTO workflow_jobs (workflow_id, input_file_path, params) "
     "VALUES (%(wf)s, %(input)s, '\"boom\"')", {}),
    ("params JSON null", "INSERT INTO workflow_jobs (workflow_id, input_file_path, params) "
     "VALUES (%(wf)s, %(input)s, 'null')", {}),
    ("step params of wrong types", "INSERT INTO workflow_jobs (workflow_id, input_file_path, "
     "params) VALUES (%(wf)s, %(input)s, %(params)s)",
     {"params": json.dumps({"1": {"seconds": "forever"}})}),
    ("step params nested deep", "INSERT INTO workflow_jobs (workflow_id, input_file_path, "
     "params) VALUES (%(wf)s, %(input)s, %(params)s)",
     {"params": json.dumps({"sleep": {"seconds": 0.01, "x": [[[[[[[[[[[[1]]]]]]]]]]]]}})}),
    ("unknown workflow id", "INSERT INTO workflow_jobs (workflow_id, input_file_path) "
     "VALUES (987654, %(input)s)", {}),
    ("unknown action in workflow", "INSERT INTO workflow_jobs (workflow_id, input_file_path) "
     "VALUES (%(ghost_wf)s, %(input)s)", {}),
    ("workflow with no steps", "INSERT INTO workflow_jobs (workflow_id, input_file_path) "
     "VALUES (%(empty_wf)s, %(input)s)", {}),
    ("negative priority", "INSERT INTO workflow_jobs (workflow_id, input_file_path, priority) "
     "VALUES (%(wf)s, %(input)s, -5)", {}),
    ("priority 11", "INSERT INTO workflow_jobs (workflow_id, input_file_path, priority) "
     "VALUES (%(wf)s, %(input)s, 11)", {}),
    ("priority 2^31", "INSERT INTO workflow_jobs (workflow_id, input_file_path, priority) "
     "VALUES (%(wf)s, %(input)s, 2147483648)", {}),
    ("negative max_retries", "INSERT INTO workflow_jobs (workflow_id, input_file_path, "
     "max_retries) VALUES (%(wf)s, %(input)s, -3)", {}),
    ("unknown status", "INSERT INTO workflow_jobs (workflow_id, input_file_path, status) "
     "VALUES (%(wf)s, %(input)s, 'exploding')", {}),
    ("processing with no owner", "INSERT INTO workflow_jobs (workflow_id, input_file_path, "
     "status, attempt) VALUES (%(wf)s, %(input)s, 'processing', 3)", {}),
    ("negative attempt", "INSERT INTO workflow_jobs (workflow_id, input_file_path, attempt) "
     "VALUES (%(wf)s, %(input)s, -1)", {}),
    ("NULL input path", "INSERT INTO workflow_jobs (workflow_id) VALUES (%(wf)s)", {}),
    ("empty input path", "INSERT INTO workflow_jobs (workflow_id, input_file_path) "
     "VALUES (%(wf)s, '')", {}),
    ("huge metadata", "INSERT INTO workflow_jobs (workflow_id, input_file_path, "
     "input_metadata) VALUES (%(wf)s, %(input)s, %(huge)s)", {}),
    ("huge params", "INSERT INTO workflow_jobs (workflow_id, input_file_path, params) "
     "VALUES (%(wf)s, %(input)s, %(huge_params)s)", {}),
    ("unknown error_class", "INSERT INTO workflow_jobs (workflow_id, input_file_path, "
     "error_class) VALUES (%(wf)s, %(input)s, 'cosmic')", {}),
    ("unknown resource category", "INSERT INTO workflow_jobs (workflow_id, input_file_path, "
     "resource_category) VALUES (%(wf)s, %(input)s, 'quantum')", {}),
    ("negative vram", "INSERT INTO workflow_jobs (workflow_id, input_file_path, "
     "vram_required) VALUES (%(wf)s, %(input)s, -100)", {}),
    ("notify junk", "INSERT INTO workflow_jobs (workflow_id, input_file_path, notify) "
     "VALUES (%(wf)s, %(input)s, ARRAY['javascript:alert(1)', 'gopher://x', ''])", {}),
]


def test_bad_rows_are_refused_or_fail_cleanly(mq: MediaqEnv, figure: Any) -> None:
    mb = scaled(64, 8)
    mq.apply_workflow(diagnostic_workflow("SQL-OK", {"action": "sleep",
                                                     "parameters": {"seconds": 0.01}},
                                          retry_count=0))
    mq.apply_workflow(diagnostic_workflow("SQL-GHOST", {"action": "noop"}, retry_count=0))
    mq.query("UPDATE workflow_steps SET action = 'no_such_action' WHERE workflow_id = "
             "(SELECT id FROM workflow_definitions WHERE workflow_code = 'SQL-GHOST')")
    # (apply refuses an unknown action; a plugin uninstalled later leaves one behind)
    mq.query("INSERT INTO workflow_definitions (workflow_code, retry_count) "
             "VALUES ('SQL-EMPTY', 0)")  # a workflow with no steps (YAML refuses one)
    ids = {r["workflow_code"]: r["id"] for r in mq.query(
        "SELECT workflow_code, id FROM workflow_definitions WHERE is_current")}
    source = mq.input_file("ok.bin")
    huge = json.dumps({"blob": "x" * (mb << 20), "list": list(range(10_000))})
    base = {"wf": ids["SQL-OK"], "ghost_wf": ids["SQL-GHOST"], "empty_wf": ids["SQL-EMPTY"],
            "input": str(source), "huge": huge,
            "huge_params": json.dumps({"sleep": {"seconds": 0.01}, "junk": "y" * (mb << 20)})}
    worker = mq.start_worker()
    outcome: dict[str, str] = {}
    codes: dict[str, str] = {}
    with psycopg.connect(mq.url, autocommit=True,
                         options="-c search_path=mediaq,public") as conn:
        for name, sql, extra in BAD_ROWS:
            try:
                row = conn.execute(sql + " RETURNING job_code", {**base, **extra}).fetchone()
            except psycopg.Error as exc:
                outcome[name] = (f"refused ({exc.sqlstate}): "
                                 f"{_one_line(exc.diag.message_primary or str(exc))[:90]}")
                continue
            assert row is not None
            codes[name] = row[0]
    wait_for(lambda: mq.one("SELECT count(*) AS n FROM workflow_jobs WHERE job_code = "
                            "ANY(%s) AND status IN ('completed', 'failed')",
                            (list(codes.values()),))["n"] == len(codes)
             or worker.poll() is not None,
             timeout=120, interval=0.3, message="the accepted rows to finish")
    # The worker lives on and still runs an ordinary job.
    good = mq.submit("SQL-OK", source)
    wait_for(lambda: mq.job(good)["status"] in ("completed", "failed") or worker.poll(),
             timeout=60, message="an ordinary job after the bad rows")
    alive = worker.poll() is None
    for name, code in codes.items():
        job = mq.job(code)
        outcome[name] = f"accepted -> {job['status']}: {job['error_message'] or ''}"[:160]
        assert job["status"] in ("completed", "failed"), (name, job["status"])
        assert "\n" not in (job["error_message"] or "")
        assert "Traceback" not in (job["error_message"] or "")
    for name, text in outcome.items():
        print(f"  {name}: {text}")
    refused = sum(1 for text in outcome.values() if text.startswith("refused"))
    failed = sum(1 for text in outcome.values() if "-> failed" in text)
    completed = sum(1 for text in outcome.values() if "-> completed" in text)
    log = mq.worker_log(worker)
    figure(f"{len(BAD_ROWS)} bad rows ({mb} MiB metadata/params): refused by constraints "
           f"{refused}, accepted and failed cleanly {failed}, accepted and completed "
           f"{completed}; worker alive {alive}, ordinary job after them "
           f"{mq.job(good)['status']}; tracebacks in the worker log {log.count('Traceback')}")
    assert alive, log[-3000:]
    assert mq.job(good)["status"] == "completed"
    assert "Traceback" not in log, log[-3000:]
    for name in ("params not JSON", "metadata not JSON", "unknown workflow id",
                 "negative priority", "priority 11", "unknown status"):
        assert outcome[name].startswith("refused"), (name, outcome[name])
    for name in ("unknown action in workflow", "workflow with no steps",
                 "step params of wrong types", "NULL input path", "empty input path"):
        assert "-> failed" in outcome[name], (name, outcome[name])
