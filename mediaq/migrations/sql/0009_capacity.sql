-- mediaq schema, revision 0009: the queue-depth signal for external autoscalers, and
-- ETAs that scale with input size and count a one-pass run once.
-- Applied by mediaq/migrations/versions/0009_capacity.py into schema "mediaq".
SET LOCAL search_path = mediaq, public;

-- What a job's input weighed: set at submission (mediaq.submit) or when a worker first
-- opens it (plain INSERTs). Estimates of steps whose time follows it scale with it.
ALTER TABLE workflow_jobs ADD COLUMN input_bytes BIGINT CHECK (input_bytes >= 0);

-- Per resource category, every category listed even when idle (an autoscaler reads
-- zero, not nothing): waiting jobs, those eligible to start now (not retrying later,
-- not waiting for VRAM, not in a paused queue), running jobs, and the ages of the
-- oldest waiting and oldest eligible jobs. This is what `media_queue_*` in /metrics exports.
CREATE VIEW queue_depth AS
SELECT c.category AS resource_category,
       count(j.id) FILTER (WHERE j.status IN ('pending', 'queued')) AS waiting,
       count(j.id) FILTER (WHERE j.eligible) AS eligible,
       count(j.id) FILTER (WHERE j.status = 'processing') AS running,
       coalesce(extract(epoch FROM now() - min(j.submitted_at)
                                   FILTER (WHERE j.status IN ('pending', 'queued'))),
                0)::float8 AS oldest_waiting_age_s,
       coalesce(extract(epoch FROM now() - min(j.submitted_at) FILTER (WHERE j.eligible)),
                0)::float8 AS oldest_eligible_age_s
  FROM unnest(ARRAY['cpu', 'gpu_encode', 'gpu_ai']) AS c(category)
  LEFT JOIN (
      SELECT w.id, w.status, w.submitted_at, w.resource_category,
             w.status IN ('pending', 'queued')
             AND (w.retry_after IS NULL OR w.retry_after <= now())
             AND w.waiting_reason IS NULL
             AND NOT EXISTS (SELECT 1 FROM queues q
                              WHERE q.queue_name = w.queue_name AND q.paused) AS eligible
        FROM workflow_jobs w
       WHERE w.status IN ('pending', 'queued', 'processing')) j
    ON j.resource_category = c.category
 GROUP BY c.category;

DROP VIEW job_etas;
DROP FUNCTION workflow_runtime_estimate(integer);
DROP FUNCTION step_runtime_estimate(integer);

-- A step's run-time model from its last 50 completed executions: the median time, and
-- a straight line over input size (base_s + per_byte_s * bytes, least squares) when
-- that predicts the same runs better (NULLs otherwise). Each step of a one-pass (fused)
-- run recorded the whole pass, so it counts for its share of it.
CREATE FUNCTION step_runtime_model(step integer,
                                   OUT flat_s double precision,
                                   OUT base_s double precision,
                                   OUT per_byte_s double precision)
    SET search_path = pg_catalog, mediaq
    LANGUAGE sql STABLE AS $$
    WITH recent AS (
        SELECT se.duration_ms / 1000.0
               / greatest(1, jsonb_array_length(coalesce(se.input_data -> 'fused_steps',
                                                         '[]'::jsonb))) AS seconds,
               nullif(j.input_bytes, 0)::double precision AS bytes
          FROM step_executions se JOIN workflow_jobs j ON j.id = se.job_id
         WHERE se.step_id = step AND se.status = 'completed' AND se.duration_ms IS NOT NULL
         ORDER BY se.completed_at DESC LIMIT 50),
    model AS (
        SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS flat_s,
               regr_intercept(seconds, bytes) AS base_s,
               regr_slope(seconds, bytes) AS per_byte_s,
               regr_count(seconds, bytes) AS sized_runs,
               regr_r2(seconds, bytes) AS r2
          FROM recent),
    fit AS (  -- the median relative error of each model over the runs it comes from
        SELECT percentile_cont(0.5) WITHIN GROUP (
                   ORDER BY abs(m.flat_s - r.seconds) / nullif(r.seconds, 0)) AS flat_err,
               percentile_cont(0.5) WITHIN GROUP (
                   ORDER BY abs(m.base_s + m.per_byte_s * r.bytes - r.seconds)
                            / nullif(r.seconds, 0)) AS sized_err
          FROM recent r, model m WHERE r.bytes IS NOT NULL)
    SELECT m.flat_s, CASE WHEN c.scales THEN m.base_s END,
           CASE WHEN c.scales THEN m.per_byte_s END
      FROM model m, fit f,
           -- A line only when the size explains the times and halves the error: a step
           -- whose time does not follow the size shows chance slopes from noise.
           LATERAL (SELECT m.sized_runs >= 5 AND m.per_byte_s > 0 AND m.r2 >= 0.5
                           AND f.sized_err < f.flat_err / 2 AS scales) c $$;

-- A workflow version's model: the seconds of the steps that do not depend on the
-- input (fixed_s); for those that do, their line (base_s, per_byte_s) and their median
-- (sized_flat_s, for an input of unknown size). NULLs until every step has run.
CREATE FUNCTION workflow_runtime_model(workflow integer,
                                       OUT fixed_s double precision,
                                       OUT base_s double precision,
                                       OUT per_byte_s double precision,
                                       OUT sized_flat_s double precision)
    SET search_path = pg_catalog, mediaq
    LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN ok THEN fixed END, CASE WHEN ok THEN base END,
           CASE WHEN ok THEN per_byte END, CASE WHEN ok THEN sized_flat END
      FROM (SELECT count(*) > 0 AND bool_and(m.flat_s IS NOT NULL) AS ok,
                   coalesce(sum(m.flat_s) FILTER (WHERE m.per_byte_s IS NULL), 0) AS fixed,
                   coalesce(sum(m.base_s), 0) AS base,
                   coalesce(sum(m.per_byte_s), 0) AS per_byte,
                   coalesce(sum(m.flat_s) FILTER (WHERE m.per_byte_s IS NOT NULL), 0)
                       AS sized_flat
              FROM workflow_steps s, LATERAL step_runtime_model(s.id) m
             WHERE s.workflow_id = workflow) steps $$;

-- A model applied to one input (never below the fixed part).
CREATE FUNCTION runtime_from_model(fixed_s double precision, base_s double precision,
                                   per_byte_s double precision, sized_flat_s double precision,
                                   input_bytes bigint)
    RETURNS double precision
    SET search_path = pg_catalog, mediaq
    LANGUAGE sql IMMUTABLE AS $$
    SELECT fixed_s + CASE WHEN input_bytes > 0
                          THEN greatest(0, base_s + per_byte_s * input_bytes)
                          ELSE sized_flat_s END $$;

-- How long a job of this workflow version on an input of this size should take.
CREATE FUNCTION workflow_runtime_estimate(workflow integer, input_bytes bigint DEFAULT NULL)
    RETURNS double precision
    SET search_path = pg_catalog, mediaq
    LANGUAGE sql STABLE AS $$
    SELECT runtime_from_model(m.fixed_s, m.base_s, m.per_byte_s, m.sized_flat_s, input_bytes)
      FROM workflow_runtime_model(workflow) m $$;

CREATE OR REPLACE FUNCTION record_job_estimate() RETURNS trigger
    SET search_path = pg_catalog, mediaq
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_estimates (job_id, estimated_seconds)
    SELECT NEW.id, estimate
      FROM workflow_runtime_estimate(NEW.workflow_id, NEW.input_bytes) AS estimate
     WHERE estimate IS NOT NULL
    ON CONFLICT (job_id) DO NOTHING;
    RETURN NULL;
END $$;

-- As in revision 0007, with each workflow's model computed once (not once per job)
-- and applied to each job's input size; a category no live worker serves counts as one
-- slot (the queue order still holds when a worker comes back).
CREATE VIEW job_etas AS
WITH live_jobs AS (
    SELECT j.id, j.job_code, j.status, j.resource_category, j.priority, j.started_at,
           j.retry_after, j.workflow_id, j.input_bytes,
           coalesce(j.progress_percent, 0) AS progress_percent
      FROM workflow_jobs j
     WHERE j.status IN ('pending', 'queued', 'processing')),
models AS (
    SELECT w.workflow_id, m.*
      FROM (SELECT DISTINCT workflow_id FROM live_jobs) w,
           LATERAL workflow_runtime_model(w.workflow_id) m),
live AS (
    SELECT l.*, runtime_from_model(m.fixed_s, m.base_s, m.per_byte_s, m.sized_flat_s,
                              l.input_bytes)
               AS total_s
      FROM live_jobs l JOIN models m ON m.workflow_id = l.workflow_id),
capacity AS (
    SELECT s.category, count(*) AS slots
      FROM worker_slots s
     WHERE EXISTS (SELECT 1 FROM workers w
                    WHERE w.host = s.host AND w.status = 'running'
                      AND w.heartbeat_at > now() - interval '1 minute'
                      AND (cardinality(w.categories) = 0 OR s.category = ANY (w.categories)))
     GROUP BY s.category),
remaining AS (
    SELECT l.*,
           CASE WHEN l.status = 'processing' THEN l.total_s * (1 - l.progress_percent / 100.0)
                ELSE l.total_s END AS left_s
      FROM live l),
queued_ahead AS (
    SELECT r.*,
           coalesce(sum(r.left_s) OVER (
               PARTITION BY r.resource_category
               ORDER BY (r.status = 'processing') DESC, r.priority DESC, r.id
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS ahead_s
      FROM remaining r)
SELECT q.id AS job_id, q.job_code, q.status, q.resource_category, q.total_s AS estimated_seconds,
       CASE WHEN q.status = 'processing' THEN q.started_at
            ELSE greatest(coalesce(q.retry_after, now()),
                          now() + make_interval(secs => q.ahead_s / coalesce(c.slots, 1))) END
           AS estimated_start,
       CASE WHEN q.status = 'processing' THEN now() + make_interval(secs => q.left_s)
            ELSE greatest(coalesce(q.retry_after, now()),
                          now() + make_interval(secs => q.ahead_s / coalesce(c.slots, 1)))
                 + make_interval(secs => q.total_s) END
           AS estimated_finish
  FROM queued_ahead q LEFT JOIN capacity c ON c.category = q.resource_category;
