-- Named queries of the analytics reports (`mediaq report`, the API's analytics panels).
-- Each reads the analytics views of schema.sql (or their `*_since` functions,
-- for aggregates over a period); %(since)s is NULL for all of history.

-- name: report_steps
-- Step performance with queue wait vs run time, over executions started since.
SELECT * FROM step_performance_since(%(since)s::timestamptz);

-- name: report_workflows
-- Workflow analytics with job wait and workflow SLA, over jobs submitted since.
SELECT * FROM workflow_analytics_since(%(since)s::timestamptz);

-- name: report_cycle_time
-- Cycle time p50/p90 per stage, over stages first started since.
SELECT * FROM stage_cycle_time_since(%(since)s::timestamptz);

-- name: report_sla
-- SLA miss rate per stage, over stages first started since.
SELECT * FROM stage_sla_since(%(since)s::timestamptz);

-- name: report_rework
-- Rework loops per stage (a stage started more than once for a job), over stages first started since.
SELECT * FROM stage_rework_summary_since(%(since)s::timestamptz);

-- name: report_in_flight
-- Stages started and not completed, of jobs still under way (an anti-join), oldest first.
SELECT * FROM stage_in_flight
 WHERE %(since)s::timestamptz IS NULL OR started_at >= %(since)s::timestamptz
 ORDER BY started_at, workflow_id, workflow_stage;

-- name: report_dead_letters
-- Jobs that failed for good, most recent first, failed since.
SELECT * FROM dead_letters
 WHERE %(since)s::timestamptz IS NULL OR failed_at >= %(since)s::timestamptz
 ORDER BY failed_at DESC NULLS LAST, job_id DESC;
