"""ETAs from history: estimates recorded at start, compared with what jobs took."""

from __future__ import annotations

import pytest

from mediaq.queries import queries
from tests.helpers import MediaqEnv, diagnostic_workflow, wait_for

STEPS = ({"action": "sleep", "parameters": {"seconds": 0.3}},
         {"action": "sleep", "parameters": {"seconds": 0.2}})


def _submit_many(mq: MediaqEnv, count: int) -> None:
    source = mq.input_file("in.bin", b"x")
    mq.query("INSERT INTO workflow_jobs (workflow_id, input_file_path) "
             "SELECT (SELECT id FROM workflow_definitions WHERE workflow_code = 'T-ETA' "
             "AND is_current), %s FROM generate_series(1, %s)", (str(source), count))


def _completed(mq: MediaqEnv) -> int:
    return int(mq.one("SELECT count(*) AS n FROM workflow_jobs WHERE status = 'completed'")["n"])


@pytest.mark.slow
def test_estimates_after_fifty_runs_are_within_a_quarter(mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow("T-ETA", *STEPS))
    mq.start_worker("--no-notifier", "--limits", "cpu=4")
    _submit_many(mq, 50)
    wait_for(lambda: _completed(mq) == 50, timeout=120, interval=0.2, message="50 jobs")
    learned = mq.one("SELECT count(*) AS n FROM job_estimates")["n"]
    # Jobs started before any had finished (4 at a time) had no history to go on.
    first_done = mq.one("SELECT min(completed_at) AS t FROM workflow_jobs")["t"]
    started_after = mq.one("SELECT count(*) AS n FROM workflow_jobs WHERE started_at > %s",
                           (first_done,))["n"]
    assert learned == started_after and learned >= 40
    mq.query("DELETE FROM job_estimates")  # judge only the next 50
    _submit_many(mq, 50)
    wait_for(lambda: _completed(mq) == 100, timeout=120, interval=0.2, message="100 jobs")
    accuracy = mq.one(queries["eta_accuracy"], {"since": None})
    print(f"\nETA accuracy over the next 50 jobs: {accuracy}")
    assert accuracy["jobs"] == 50
    assert accuracy["median_abs_error"] < 0.25, accuracy
    estimate = mq.one("SELECT min(estimated_seconds) AS low, max(estimated_seconds) AS high "
                      "FROM job_estimates")
    assert 0.45 <= estimate["low"] <= estimate["high"] <= 0.8  # 0.3 s + 0.2 s of sleep

    # Waiting jobs get a start that follows their place in the queue.
    mq.cli("queue", "pause", "test")  # the queue of workflow_type "test"
    _submit_many(mq, 8)
    etas = mq.query("SELECT e.estimated_start, e.estimated_finish, e.estimated_seconds "
                    "FROM job_etas e JOIN workflow_jobs j ON j.id = e.job_id "
                    "WHERE e.status = 'pending' ORDER BY j.priority DESC, j.id")
    assert len(etas) == 8 and all(e["estimated_start"] is not None for e in etas)
    starts = [e["estimated_start"] for e in etas]
    assert starts == sorted(starts) and starts[-1] > starts[0]
    assert all((e["estimated_finish"] - e["estimated_start"]).total_seconds()
               == pytest.approx(e["estimated_seconds"], abs=0.01) for e in etas)
    code = mq.one("SELECT job_code FROM workflow_jobs WHERE status = 'pending' "
                  "ORDER BY id DESC LIMIT 1")["job_code"]
    assert "estimated_finish" in mq.cli("show", code).stdout
    report = mq.one("SELECT count(*) AS n FROM job_estimates")
    assert report["n"] == 50
