-- mediaq schema, revision 0004: Analytics views: the dashboards and workflow-operations questions as SQL.
-- Applied by mediaq/migrations/versions/0004_analytics.py into schema "mediaq".
SET LOCAL search_path = mediaq, public;

-- The job dashboards, the queue statistics of the API and the stage questions
-- (cycle time, SLA misses, rework, in-flight stages) as views, so that
-- any SQL dashboard can read them. Row views (one row per job, stage or step
-- execution) can be filtered by time as they are; the aggregates that a report
-- wants over a period are set-returning SQL functions `*_since(since)` (inlined by
-- the planner like a view), and the aggregate view is that function over all time.
-- Function bodies name everything with its schema: they are planned with the
-- caller's search_path.
--
-- SLA due times: each stage_started event carries started_at + the step's
-- `sla_seconds` (or its timeout), written by the step_executions trigger of 0001;
-- a job is due `sla_minutes` (of its workflow version) after it was submitted.

-- ---------------------------------------------------------------------------
-- The job status dashboard
-- ---------------------------------------------------------------------------
CREATE VIEW job_status_dashboard AS
SELECT wj.id AS job_id,
       wj.job_code,
       wd.workflow_code,
       wd.workflow_name,
       wj.status,
       wj.current_step,
       (SELECT COUNT(*) FROM workflow_steps WHERE workflow_id = wd.id) AS total_steps,
       wj.progress_percent,
       wj.priority,
       wj.submitted_by,
       wj.submitted_at,
       wj.started_at,
       wj.completed_at,
       wj.resource_category,
       wj.queue_name,
       wj.progress_stage,
       wj.waiting_reason,
       wj.retry_count,
       wj.error_message,
       CASE wj.status
           WHEN 'failed' THEN 1 WHEN 'processing' THEN 2 WHEN 'queued' THEN 3
           WHEN 'pending' THEN 4 WHEN 'paused' THEN 5 WHEN 'completed' THEN 6
           WHEN 'cancelled' THEN 7
       END AS status_rank
  FROM workflow_jobs wj
 INNER JOIN workflow_definitions wd ON wj.workflow_id = wd.id
 ORDER BY status_rank, wj.priority DESC, wj.id;

-- ---------------------------------------------------------------------------
-- The processing queue monitor (with each queue's pause switch)
-- ---------------------------------------------------------------------------
CREATE VIEW queue_monitor AS
SELECT mq.queue_name,
       COUNT(*) AS jobs_in_queue,
       COUNT(CASE WHEN mq.status = 'queued' THEN 1 END) AS waiting,
       COUNT(CASE WHEN mq.status = 'processing' THEN 1 END) AS processing,
       AVG(wj.priority) AS avg_priority,
       MIN(mq.scheduled_time) AS next_scheduled,
       coalesce(bool_or(q.paused), FALSE) AS paused
  FROM media_queue mq
 INNER JOIN workflow_jobs wj ON mq.job_id = wj.id
  LEFT JOIN queues q ON q.queue_name = mq.queue_name
 WHERE mq.status IN ('queued', 'processing')
 GROUP BY mq.queue_name
 ORDER BY waiting DESC, mq.queue_name;

-- ---------------------------------------------------------------------------
-- The queue statistics of GET /api/media/jobs/stats
-- ---------------------------------------------------------------------------
CREATE VIEW job_stats AS
SELECT
    count(*) FILTER (WHERE status = 'pending') AS pending,
    count(*) FILTER (WHERE status = 'queued') AS queued,
    count(*) FILTER (WHERE status = 'processing') AS running,
    count(*) FILTER (WHERE status = 'completed') AS completed,
    count(*) FILTER (WHERE status = 'failed') AS failed,
    count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
    count(*) FILTER (WHERE status = 'paused') AS paused,
    coalesce(sum(vram_required) FILTER (WHERE status = 'processing'), 0) AS total_vram_used,
    (SELECT coalesce(sum(vram_budget_mb), 0) FROM worker_hosts h
      WHERE EXISTS (SELECT 1 FROM workers w WHERE w.host = h.host AND w.status <> 'stopped'))
        AS total_vram_available,
    round(avg(extract(epoch FROM completed_at - started_at))
          FILTER (WHERE status = 'completed'))::integer AS average_processing_time,
    (SELECT coalesce(jsonb_object_agg(code, n), '{}'::jsonb) FROM (
        SELECT wd.workflow_code AS code, count(*) AS n
          FROM workflow_jobs x JOIN workflow_definitions wd ON wd.id = x.workflow_id
         GROUP BY wd.workflow_code) t) AS jobs_by_type,
    (SELECT count(*) FROM workers WHERE status <> 'stopped') AS workers
  FROM workflow_jobs;

-- ---------------------------------------------------------------------------
-- Step executions with their queue wait and run time
-- ---------------------------------------------------------------------------
-- wait: from the moment the step could have started (the end of the job's previous
-- execution, or the job's submission) to its start; it holds the time in the queue,
-- retry back-off and waiting for a slot. run: the execution itself.
CREATE VIEW step_timings AS
SELECT se.id AS execution_id,
       se.job_id,
       wj.job_code,
       wd.workflow_code,
       se.step_id,
       ws.step_number,
       ws.step_name,
       se.status,
       se.retry_attempt,
       se.started_at,
       se.completed_at,
       se.duration_seconds,
       coalesce(max(se.completed_at) OVER earlier, wj.submitted_at) AS ready_at,
       greatest(0, epoch(se.started_at
                         - coalesce(max(se.completed_at) OVER earlier, wj.submitted_at)))
           AS wait_seconds,
       coalesce(se.duration_ms / 1000.0, se.duration_seconds,
                epoch(se.completed_at - se.started_at))::double precision AS run_seconds
  FROM step_executions se
  JOIN workflow_jobs wj ON wj.id = se.job_id
  JOIN workflow_steps ws ON ws.id = se.step_id
  JOIN workflow_definitions wd ON wd.id = ws.workflow_id
WINDOW earlier AS (PARTITION BY se.job_id ORDER BY se.started_at, se.id
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING);

-- ---------------------------------------------------------------------------
-- Step performance, with queue wait vs run time
-- ---------------------------------------------------------------------------
CREATE FUNCTION step_performance_since(since timestamptz)
RETURNS TABLE (
    workflow_code    text,
    workflow_version integer,
    step_number      integer,
    step_name        text,
    step_type        text,
    executions       bigint,
    avg_duration_sec double precision,
    min_duration_sec integer,
    max_duration_sec integer,
    failures         bigint,
    avg_run_seconds  double precision,
    p90_run_seconds  double precision,
    avg_wait_seconds double precision,
    p90_wait_seconds double precision,
    wait_share       double precision
)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
SELECT wd.workflow_code::text,
       wd.version,
       ws.step_number,
       ws.step_name::text,
       ws.step_type::text,
       COUNT(st.execution_id),
       AVG(st.duration_seconds)::double precision,
       MIN(st.duration_seconds),
       MAX(st.duration_seconds),
       COUNT(CASE WHEN st.status = 'failed' THEN 1 END),
       mediaq.round(AVG(st.run_seconds), 3),
       mediaq.round(percentile_cont(0.90) WITHIN GROUP (ORDER BY st.run_seconds), 3),
       mediaq.round(AVG(st.wait_seconds), 3),
       mediaq.round(percentile_cont(0.90) WITHIN GROUP (ORDER BY st.wait_seconds), 3),
       mediaq.round(SUM(st.wait_seconds)
                    / nullif(SUM(st.wait_seconds) + SUM(st.run_seconds), 0), 4)
  FROM mediaq.workflow_steps ws
  JOIN mediaq.workflow_definitions wd ON wd.id = ws.workflow_id
  LEFT JOIN mediaq.step_timings st
         ON st.step_id = ws.id AND (since IS NULL OR st.started_at >= since)
 GROUP BY ws.id, wd.id
HAVING wd.is_current OR COUNT(st.execution_id) > 0  -- old versions only where they ran
 ORDER BY 7 DESC NULLS LAST, wd.workflow_code, wd.version, ws.step_number
$$;

CREATE VIEW step_performance AS SELECT * FROM step_performance_since(NULL);

-- ---------------------------------------------------------------------------
-- Workflow analytics (all versions of a workflow together),
-- with the queue wait of jobs and the workflow's own SLA (sla_minutes)
-- ---------------------------------------------------------------------------
-- A job misses its workflow SLA when it completes later than sla_minutes after
-- submission; sla_miss_rate is over the completed jobs of workflows that have one.
CREATE FUNCTION workflow_analytics_since(since timestamptz)
RETURNS TABLE (
    workflow_code        text,
    workflow_name        text,
    workflow_type        text,
    total_jobs           bigint,
    completed            bigint,
    failed               bigint,
    in_progress          bigint,
    avg_duration_minutes double precision,
    p90_duration_minutes double precision,
    avg_wait_minutes     double precision,
    sla_minutes          integer,
    sla_missed           bigint,
    sla_miss_rate        double precision
)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
WITH jobs AS (
    SELECT v.workflow_code, wj.id, wj.status, wj.submitted_at, wj.started_at, wj.completed_at,
           v.sla_minutes,
           wj.submitted_at + make_interval(mins => v.sla_minutes) AS sla_due
      FROM mediaq.workflow_jobs wj
      JOIN mediaq.workflow_definitions v ON v.id = wj.workflow_id
     WHERE since IS NULL OR wj.submitted_at >= since
)
SELECT wd.workflow_code::text,
       wd.workflow_name::text,
       wd.workflow_type::text,
       COUNT(j.id),
       COUNT(CASE WHEN j.status = 'completed' THEN 1 END),
       COUNT(CASE WHEN j.status = 'failed' THEN 1 END),
       COUNT(CASE WHEN j.status IN ('pending', 'queued', 'processing') THEN 1 END),
       AVG(CASE WHEN j.completed_at IS NOT NULL
                THEN EXTRACT(EPOCH FROM (j.completed_at - j.started_at)) / 60
           END)::double precision,
       mediaq.round(percentile_cont(0.90) WITHIN GROUP (
           ORDER BY mediaq.epoch(j.completed_at - j.started_at) / 60), 2),
       mediaq.round(AVG(mediaq.epoch(j.started_at - j.submitted_at)) / 60, 2),
       wd.sla_minutes,
       COUNT(*) FILTER (WHERE j.status = 'completed' AND j.completed_at > j.sla_due),
       mediaq.round(AVG(CASE WHEN j.completed_at > j.sla_due THEN 1.0 ELSE 0 END)
                        FILTER (WHERE j.status = 'completed' AND j.sla_due IS NOT NULL)
                    ::double precision, 4)
  FROM mediaq.workflow_definitions wd
  LEFT JOIN jobs j ON j.workflow_code = wd.workflow_code
 WHERE wd.is_current AND wd.is_active = TRUE
 GROUP BY wd.id
 ORDER BY 4 DESC, wd.workflow_code
$$;

CREATE VIEW workflow_analytics AS SELECT * FROM workflow_analytics_since(NULL);

-- ---------------------------------------------------------------------------
-- stage_started <-> stage_completed, one row per (job, stage)
-- ---------------------------------------------------------------------------
-- The pairing: the earliest start with the earliest completion (survives
-- rework loops), the SLA due time of the first start; plus the counts that tell
-- rework (starts > 1) and the last event.
CREATE VIEW stage_pairs AS
SELECT workflow_id,
       workflow_stage,
       MIN(step_number) AS step_number,
       MIN(event_timestamp) FILTER (WHERE event_type = 'stage_started') AS started_at,
       MIN(event_timestamp) FILTER (WHERE event_type = 'stage_completed') AS completed_at,
       MIN(sla_due_timestamp) FILTER (WHERE event_type = 'stage_started') AS sla_due,
       MAX(event_timestamp) FILTER (WHERE event_type = 'stage_started') AS last_started_at,
       COUNT(*) FILTER (WHERE event_type = 'stage_started') AS starts,
       COUNT(*) FILTER (WHERE event_type = 'stage_completed') AS completions,
       COUNT(*) FILTER (WHERE event_type = 'stage_failed') AS failures,
       (array_agg(event_type ORDER BY event_timestamp DESC, id DESC))[1] AS last_event
  FROM media_workflow_events
 GROUP BY workflow_id, workflow_stage;

-- Cycle time per stage: p50/p90 in hours, and in
-- seconds (media steps are short). Over stages first started since `since`.
CREATE FUNCTION stage_cycle_time_since(since timestamptz)
RETURNS TABLE (
    workflow_stage text,
    n              bigint,
    p50_hours      double precision,
    p90_hours      double precision,
    avg_seconds    double precision,
    p50_seconds    double precision,
    p90_seconds    double precision,
    max_seconds    double precision,
    reworked       bigint
)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
SELECT workflow_stage,
       COUNT(*),
       mediaq.round(percentile_cont(0.50) WITHIN GROUP
           (ORDER BY mediaq.epoch(completed_at - started_at) / 3600.0), 2),
       mediaq.round(percentile_cont(0.90) WITHIN GROUP
           (ORDER BY mediaq.epoch(completed_at - started_at) / 3600.0), 2),
       mediaq.round(AVG(mediaq.epoch(completed_at - started_at)), 3),
       mediaq.round(percentile_cont(0.50) WITHIN GROUP
           (ORDER BY mediaq.epoch(completed_at - started_at)), 3),
       mediaq.round(percentile_cont(0.90) WITHIN GROUP
           (ORDER BY mediaq.epoch(completed_at - started_at)), 3),
       mediaq.round(MAX(mediaq.epoch(completed_at - started_at)), 3),
       COUNT(*) FILTER (WHERE starts > 1)
  FROM mediaq.stage_pairs
 WHERE started_at IS NOT NULL
   AND completed_at IS NOT NULL
   AND completed_at >= started_at
   AND (since IS NULL OR started_at >= since)
 GROUP BY workflow_stage
 ORDER BY 7 DESC, workflow_stage
$$;

CREATE VIEW stage_cycle_time AS SELECT * FROM stage_cycle_time_since(NULL);

-- SLA miss rate per stage: completed after the first start's due time.
CREATE FUNCTION stage_sla_since(since timestamptz)
RETURNS TABLE (
    workflow_stage      text,
    n                   bigint,
    missed              bigint,
    miss_rate           double precision,
    avg_sla_seconds     double precision,
    avg_overrun_seconds double precision,
    max_overrun_seconds double precision
)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
SELECT workflow_stage,
       COUNT(*),
       COUNT(*) FILTER (WHERE completed_at > sla_due),
       mediaq.round(AVG(CASE WHEN completed_at > sla_due THEN 1.0 ELSE 0 END)::double precision, 4),
       mediaq.round(AVG(mediaq.epoch(sla_due - started_at)), 3),
       mediaq.round(AVG(mediaq.epoch(completed_at - sla_due)) FILTER (WHERE completed_at > sla_due), 3),
       mediaq.round(MAX(mediaq.epoch(completed_at - sla_due)) FILTER (WHERE completed_at > sla_due), 3)
  FROM mediaq.stage_pairs
 WHERE started_at IS NOT NULL
   AND completed_at IS NOT NULL
   AND completed_at >= started_at
   AND (since IS NULL OR started_at >= since)
 GROUP BY workflow_stage
 ORDER BY 4 DESC, workflow_stage
$$;

CREATE VIEW stage_sla AS SELECT * FROM stage_sla_since(NULL);

-- ---------------------------------------------------------------------------
-- Rework loops: a stage started more than once for a job (a retry, a rescue)
-- ---------------------------------------------------------------------------
CREATE VIEW stage_rework AS
SELECT p.workflow_id,
       wj.job_code,
       wd.workflow_code,
       p.workflow_stage,
       p.step_number,
       p.starts,
       p.starts - 1 AS rework_loops,
       p.failures,
       p.started_at,
       p.last_started_at,
       p.completed_at,
       p.last_event,
       wj.status AS job_status
  FROM stage_pairs p
  JOIN workflow_jobs wj ON wj.id = p.workflow_id
  JOIN workflow_definitions wd ON wd.id = wj.workflow_id
 WHERE p.starts > 1;

-- Per stage: how many (job, stage) pairs started, how many went round more than once.
CREATE FUNCTION stage_rework_summary_since(since timestamptz)
RETURNS TABLE (
    workflow_stage        text,
    started               bigint,
    reworked              bigint,
    rework_rate           double precision,
    rework_loops          bigint,
    max_starts            bigint,
    completed_after_rework bigint
)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
SELECT workflow_stage,
       COUNT(*),
       COUNT(*) FILTER (WHERE starts > 1),
       mediaq.round(AVG(CASE WHEN starts > 1 THEN 1.0 ELSE 0 END)::double precision, 4),
       SUM(starts - 1)::bigint,
       MAX(starts),
       COUNT(*) FILTER (WHERE starts > 1 AND completions > 0)
  FROM mediaq.stage_pairs
 WHERE starts > 0
   AND (since IS NULL OR started_at >= since)
 GROUP BY workflow_stage
 ORDER BY 3 DESC, workflow_stage
$$;

CREATE VIEW stage_rework_summary AS SELECT * FROM stage_rework_summary_since(NULL);

-- ---------------------------------------------------------------------------
-- In-flight stages: started and not completed (an anti-join), of jobs that
-- are still under way, at or after the step the job is on: a stage whose job failed
-- for good is a dead letter, one given up by an on_failure=continue step is behind
-- the job, and neither is in flight any more.
-- ---------------------------------------------------------------------------
CREATE VIEW stage_in_flight AS
WITH starts AS (
    SELECT workflow_id, workflow_stage,
           MIN(event_timestamp) AS started_at,
           MIN(sla_due_timestamp) AS sla_due_timestamp,
           MAX(event_timestamp) AS last_started_at,
           COUNT(*) AS starts,
           MIN(step_number) AS step_number
      FROM media_workflow_events
     WHERE event_type = 'stage_started'
     GROUP BY workflow_id, workflow_stage
),
done AS (
    SELECT DISTINCT workflow_id, workflow_stage
      FROM media_workflow_events
     WHERE event_type = 'stage_completed'
)
SELECT s.workflow_id,
       wj.job_code,
       wd.workflow_code,
       s.workflow_stage,
       s.step_number,
       wj.status AS job_status,
       s.started_at,
       s.last_started_at,
       s.starts,
       s.sla_due_timestamp,
       epoch(now() - s.started_at) AS age_seconds,
       coalesce(now() > s.sla_due_timestamp, FALSE) AS overdue
  FROM starts s
  LEFT JOIN done d USING (workflow_id, workflow_stage)
  JOIN workflow_jobs wj ON wj.id = s.workflow_id
  JOIN workflow_definitions wd ON wd.id = wj.workflow_id
 WHERE d.workflow_id IS NULL
   AND wj.status IN ('pending', 'queued', 'processing', 'paused')
   AND coalesce(s.step_number >= wj.current_step, TRUE);

-- ---------------------------------------------------------------------------
-- Dead letters: jobs that failed for good (retries exhausted or a permanent error);
-- their inputs are untouched and `mediaq retry` sends them back.
-- ---------------------------------------------------------------------------
CREATE VIEW dead_letters AS
SELECT wj.id AS job_id,
       wj.job_code,
       wd.workflow_code,
       wd.workflow_name,
       wj.queue_name,
       wj.input_file_path,
       f.workflow_stage AS failed_stage,
       f.step_number AS failed_step,
       wj.error_class,
       wj.error_message,
       wj.retry_count,
       wj.max_retries,
       wj.submitted_at,
       wj.started_at,
       wj.completed_at AS failed_at
  FROM workflow_jobs wj
  JOIN workflow_definitions wd ON wd.id = wj.workflow_id
  LEFT JOIN LATERAL (
      SELECT e.workflow_stage, e.step_number
        FROM media_workflow_events e
       WHERE e.workflow_id = wj.id AND e.event_type = 'stage_failed'
       ORDER BY e.event_timestamp DESC, e.id DESC
       LIMIT 1) f ON TRUE
 WHERE wj.status = 'failed';

CREATE INDEX workflow_jobs_dead_letters ON workflow_jobs (completed_at) WHERE status = 'failed';
