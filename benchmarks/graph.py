"""Graph jobs vs linear jobs, side by side in one run (read the ratios).

The same seven no-op steps as a chain (seed 000's shape), as a graph (one step, five
independent steps, one fan-in: `needs`), and as a fan-out (`for_each` over five items
between two steps), run by one worker process. Figures: jobs per second, and the time a
job spends outside its actions per step execution (claim, graph walk, condition and
item planning, bookkeeping), p50 and p90, from the database's own timestamps.

Run: make bench (BENCH_QUICK=1 for a shorter run).
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import (
    drain,
    fresh_env,
    insert_jobs,
    scaled,
    server,
    start_fleet,
    table,
    write_results,
)
from tests.helpers import MediaqEnv, diagnostic_workflow

JOBS = scaled(600, 150)

LINEAR = diagnostic_workflow("B-LINEAR", *({"action": "noop"} for _ in range(7)))
GRAPH = diagnostic_workflow(
    "B-GRAPH", {"action": "noop", "step_name": "first"},
    *({"action": "noop", "needs": ["first"]} for _ in range(5)),
    {"action": "noop", "needs": [f"noop {n}" for n in range(2, 7)]})
FANOUT = diagnostic_workflow(
    "B-FANOUT", {"action": "noop", "step_name": "first"},
    {"action": "echo", "step_name": "items", "for_each": {"value": [1, 2, 3, 4, 5]}},
    {"action": "echo", "step_name": "last", "when": "size(steps.items) == 5"})


def per_task_outside(env: MediaqEnv, workflow: str) -> dict[str, float]:
    """Per job: (claim to completion - the actions' own seconds) / step executions."""
    row = env.one("""
        WITH per_job AS (
            SELECT (extract(epoch FROM j.completed_at - j.started_at) * 1000
                    - sum(coalesce((s.output_data ->> 'seconds')::float, 0)) * 1000)
                   / count(*) AS per_task_ms
              FROM workflow_jobs j
              JOIN workflow_definitions wd ON wd.id = j.workflow_id
              JOIN step_executions s ON s.job_id = j.id
             WHERE j.status = 'completed' AND wd.workflow_code = %s
             GROUP BY j.id)
        SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY per_task_ms) AS p50,
               percentile_cont(0.9) WITHIN GROUP (ORDER BY per_task_ms) AS p90
          FROM per_job""", (workflow,))
    return {k: float(v) for k, v in row.items()}


def run_shape(env: MediaqEnv, workflow: str) -> dict[str, Any]:
    before = int(env.one("SELECT count(*) AS n FROM workflow_jobs")["n"])
    start_fleet(env, 1)
    insert_jobs(env, JOBS, workflow)
    seconds = drain(env, before + JOBS)
    env.stop_workers()
    failed = env.one("SELECT count(*) AS n FROM workflow_jobs WHERE status <> 'completed'")
    assert failed["n"] == 0, f"{workflow}: {failed['n']} jobs did not complete"
    return {"jobs_per_s": JOBS / seconds, **per_task_outside(env, workflow)}


def main() -> None:
    with server("graph") as (admin, root):
        env = fresh_env(admin, root, LINEAR, GRAPH, FANOUT)
        results = {name: run_shape(env, code) for name, code in
                   (("linear", "B-LINEAR"), ("graph", "B-GRAPH"), ("fan-out", "B-FANOUT"))}
    base = results["linear"]
    rows = [[name, r["jobs_per_s"], r["p50"], r["p90"], r["p50"] / base["p50"]]
            for name, r in results.items()]
    text = table(f"Seven-step no-op jobs, one worker process, {JOBS} jobs per shape",
                 ["shape", "jobs/s", "outside p50 ms/task", "p90", "p50 vs linear"], rows)
    write_results("graph", results, text)


if __name__ == "__main__":
    main()
