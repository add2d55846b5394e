"""Graph jobs vs linear jobs, side by side in one run (read the ratios).

The same seven no-op steps as a chain (seed 000's shape), as a graph (one step, five
independent steps, one fan-in: `needs`), and as a fan-out (`for_each` over five items
between two steps), run by one worker process. Figures: jobs per second, and the time a
job spends outside its actions per step execution (claim, graph walk, condition and
item planning, bookkeeping), p50 and p90, from the database's own timestamps.

Then a ladder (three transcode_video rungs of one 720p source, after a probe): fused on
one worker (one decode-once pass) against spread over three workers on three hosts
(each rung a task of its own, claimed by an idle worker): the CPU time of the rungs
(their executions' busy seconds, summed: on two shared cores, three parallel
encoders each take longer) and the job's wall time, as ratios. On a 2-core
machine three encoders share two cores, so wall time says little; the CPU time says
what spreading costs, and the critical path (the slowest rung) what it could win.

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
from tests.helpers import MediaqEnv, diagnostic_workflow, wait_for
from tests.media_judge import ffmpeg

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


LADDER = diagnostic_workflow(
    "B-LADDER", {"action": "noop", "step_name": "probe"},
    *({"action": "transcode_video", "step_name": f"rung {r}", "needs": ["probe"],
       "parameters": {"resolution": r}} for r in ("480p", "360p", "240p")))
LADDER_JOBS = scaled(4, 2)


def run_ladder(env: MediaqEnv, workers: int) -> dict[str, float]:
    """LADDER_JOBS ladder jobs one after another on ``workers`` workers (one host each):
    medians of the rungs' CPU seconds (summed durations), the slowest rung, the job's
    wall seconds, and whether the rungs were fused."""
    source = env.inputs / "ladder.mp4"
    if not source.exists():
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", "-t", "3",
               "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", source)
    procs = [env.start_worker("--no-triggers", "--no-notifier", "--id", f"l{workers}-{n}",
                              "--categories", "cpu", "--limits", "cpu=1",
                              host_id=f"ladder-{workers}-{n}") for n in range(workers)]
    wait_for(lambda: env.one("SELECT count(*) AS n FROM workers WHERE status = 'running'"
                             " AND worker_id LIKE %s", (f"l{workers}-%",))["n"] >= workers,
             timeout=120)
    codes = []
    for _ in range(LADDER_JOBS):
        code = env.submit("B-LADDER", source)
        wait_for(lambda c=code: env.job(c)["status"] in ("completed", "failed"), timeout=300)
        codes.append(code)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(60)
    row = env.one("""
        WITH per_job AS (
            SELECT j.id, extract(epoch FROM j.completed_at - j.started_at) AS wall,
                   -- a fused pass's executions each last the whole pass
                   CASE WHEN bool_or(se.input_data ? 'fused_steps') THEN max(se.duration_ms)
                        ELSE sum(se.duration_ms) END / 1000.0 AS cpu,
                   max(se.duration_ms) / 1000.0 AS slowest,
                   bool_or(se.input_data ? 'fused_steps') AS fused,
                   count(DISTINCT se.worker_id) AS workers
              FROM workflow_jobs j JOIN step_executions se ON se.job_id = j.id
              JOIN workflow_steps ws ON ws.id = se.step_id
             WHERE j.job_code = ANY (%s) AND ws.action = 'transcode_video'
               AND se.status = 'completed'
             GROUP BY j.id)
        SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY cpu) AS cpu,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY slowest) AS slowest,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY wall) AS wall,
               bool_and(fused) AS fused, max(workers) AS workers FROM per_job""", (codes,))
    return {k: float(v) for k, v in row.items()}


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
    with server("ladder") as (admin, root):
        env = fresh_env(admin, root, LADDER)
        fused = run_ladder(env, 1)
        spread = run_ladder(env, 3)
    results["ladder"] = {"fused": fused, "spread": spread}
    text += "\n" + table(
        f"A three-rung ladder, {LADDER_JOBS} jobs: fused on one worker vs spread over three",
        ["run", "rung busy s (sum)", "slowest rung s", "job wall s", "fused", "workers"],
        [["fused (1 worker)", fused["cpu"], fused["slowest"], fused["wall"], fused["fused"],
          fused["workers"]],
         ["spread (3 workers)", spread["cpu"], spread["slowest"], spread["wall"],
          spread["fused"], spread["workers"]],
         ["spread / fused", spread["cpu"] / fused["cpu"], spread["slowest"] / fused["slowest"],
          spread["wall"] / fused["wall"], "", ""]])
    write_results("graph", results, text)


if __name__ == "__main__":
    main()
