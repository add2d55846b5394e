"""mediaq worker --autoscale: processes follow the queue, within the machine's limits."""

from __future__ import annotations

import os
import signal
import time

import pytest

from mediaq.worker.autoscale import ScalePolicy, desired_processes, parse_range
from tests.helpers import MediaqEnv, diagnostic_workflow, wait_for

BURST = 300  # `sleep 1` jobs, as in the acceptance


def _running_workers(mq: MediaqEnv) -> int:
    return int(mq.one("SELECT count(*) AS n FROM workers WHERE status = 'running' "
                      "AND heartbeat_at > now() - interval '5 seconds'")["n"])


@pytest.mark.slow
def test_a_burst_scales_up_within_the_limit_and_drains_back(mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow("T-BURST", {"action": "sleep",
                                                      "parameters": {"seconds": 1}}))
    mq.start("worker", "--autoscale", "1:6", "--categories", "cpu", "--limits", "cpu=6",
             "--scale-down-after", "3")
    wait_for(lambda: _running_workers(mq) == 1, timeout=30, message="the first process")
    source = mq.input_file("in.bin", b"x")
    mq.query("INSERT INTO workflow_jobs (workflow_id, input_file_path) SELECT (SELECT id FROM "
             "workflow_definitions WHERE workflow_code = 'T-BURST' AND is_current), %s "
             "FROM generate_series(1, %s)", (str(source), BURST))
    burst = time.monotonic()
    wait_for(lambda: _running_workers(mq) == 6, timeout=30, interval=0.2,
             message="six processes")
    print(f"\nautoscale: 1 -> 6 processes in {time.monotonic() - burst:.1f} s")

    # A process killed with -9 mid-job is replaced and its job rescued. It is stopped
    # first, so it cannot finish the job between our look and the kill.
    victim, job_id = _stop_a_busy_process(mq)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: mq.one("SELECT count(*) AS n FROM workflow_jobs WHERE status = "
                            "'completed'")["n"] == BURST, timeout=180, interval=0.5,
             message="every job, the killed one's too")
    assert mq.one("SELECT rescue_count FROM workflow_jobs WHERE id = %s",
                  (job_id,))["rescue_count"] == 1
    emptied = time.monotonic()
    # Never more than 6 jobs at once, whatever the number of processes: the stage events
    # swept in time order (an end before a start at the same instant).
    peak = mq.one("""SELECT max(running) AS peak FROM (
        SELECT sum(CASE WHEN event_type = 'stage_started' THEN 1 ELSE -1 END)
               OVER (ORDER BY event_timestamp, event_type <> 'stage_started', id) AS running
          FROM media_workflow_events) sweep""")["peak"]
    assert peak == 6
    wait_for(lambda: _running_workers(mq) == 1, timeout=60, interval=0.5,
             message="the drain back to one process")
    print(f"autoscale: {BURST} jobs, peak {peak} at once, back to 1 process "
          f"{time.monotonic() - emptied:.1f} s after the queue emptied")
    stopped = mq.one("SELECT count(*) AS n FROM workers WHERE status = 'stopped'")["n"]
    assert stopped >= 5  # drained processes say goodbye; the killed one could not


def _stop_a_busy_process(mq: MediaqEnv) -> tuple[int, int]:
    """SIGSTOP worker processes until one is caught holding a job: (pid, job id)."""
    for _ in range(50):
        for row in mq.query("SELECT pid FROM workers WHERE status = 'running'"):
            os.kill(row["pid"], signal.SIGSTOP)
            held = mq.query("SELECT j.id FROM workflow_jobs j JOIN workers w ON "
                            "w.worker_id = j.worker_id WHERE j.status = 'processing' "
                            "AND w.pid = %s", (row["pid"],))
            if held:
                return row["pid"], held[0]["id"]
            os.kill(row["pid"], signal.SIGCONT)
        time.sleep(0.1)
    raise AssertionError("no worker process was ever caught holding a job")


@pytest.mark.parametrize("running, waiting, limit, current, memory_ok, expected", [
    (0, 0, 6, 1, True, 1),      # nothing to do: the minimum
    (0, 300, 6, 1, True, 6),    # a burst: up to the limit at once
    (2, 300, 4, 2, True, 4),    # the machine limit caps it below MAX
    (1, 300, 6, 2, False, 2),   # short of memory: no growth
    (3, 0, 6, 6, True, 3),      # work running, none waiting: shrink towards it
])
def test_desired_processes(running: int, waiting: int, limit: int, current: int,
                           memory_ok: bool, expected: int) -> None:
    assert desired_processes(ScalePolicy(1, 6), running, waiting, limit, current,
                             memory_ok) == expected


def test_scale_ranges_parse_or_say_why() -> None:
    assert parse_range("1:6") == ScalePolicy(1, 6)
    assert parse_range("3") == ScalePolicy(3, 3)
    for bad in ("0:3", "5:2", "a:b", ""):
        with pytest.raises(ValueError, match="--autoscale"):
            parse_range(bad)
