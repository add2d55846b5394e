-- mediaq schema, revision 0007: ETAs from history.
-- Applied by mediaq/migrations/versions/0007_eta.py into schema "mediaq".
SET LOCAL search_path = mediaq, public;

-- A step's recent runs, newest first (the estimate reads the last 50).
CREATE INDEX step_executions_history
    ON step_executions (step_id, completed_at DESC) WHERE status = 'completed';

-- What a job was expected to take when it first started, kept to compare with what
-- it took (`mediaq report` and the eta_accuracy query).
CREATE TABLE job_estimates (
    job_id            BIGINT PRIMARY KEY REFERENCES workflow_jobs (id) ON DELETE CASCADE,
    estimated_seconds DOUBLE PRECISION NOT NULL,
    estimated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The median run time of a step over its last 50 completed executions (NULL: none).
CREATE OR REPLACE FUNCTION step_runtime_estimate(step integer) RETURNS double precision
    SET search_path = pg_catalog, mediaq
    LANGUAGE sql STABLE AS $$
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds)
      FROM (SELECT se.duration_ms / 1000.0 AS seconds FROM step_executions se
             WHERE se.step_id = step AND se.status = 'completed' AND se.duration_ms IS NOT NULL
             ORDER BY se.completed_at DESC LIMIT 50) recent $$;

-- A workflow version's run time: the sum of its steps' estimates; NULL until every
-- step has run at least once.
CREATE OR REPLACE FUNCTION workflow_runtime_estimate(workflow integer) RETURNS double precision
    SET search_path = pg_catalog, mediaq
    LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN count(*) > 0 AND bool_and(estimate IS NOT NULL) THEN sum(estimate) END
      FROM (SELECT step_runtime_estimate(s.id) AS estimate FROM workflow_steps s
             WHERE s.workflow_id = workflow) steps $$;

CREATE OR REPLACE FUNCTION record_job_estimate() RETURNS trigger
    SET search_path = pg_catalog, mediaq
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_estimates (job_id, estimated_seconds)
    SELECT NEW.id, estimate FROM workflow_runtime_estimate(NEW.workflow_id) AS estimate
     WHERE estimate IS NOT NULL
    ON CONFLICT (job_id) DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER job_record_estimate
    AFTER UPDATE OF status ON workflow_jobs
    FOR EACH ROW WHEN (NEW.status = 'processing' AND OLD.status IS DISTINCT FROM 'processing')
    EXECUTE FUNCTION record_job_estimate();

-- Estimated start and finish of every waiting or running job: its workflow's
-- estimate, the work ahead of it in its category (running jobs' remainder, then
-- waiting jobs by priority and age) shared by the slots of machines with a live
-- worker for the category. NULL where history or capacity is missing.
CREATE VIEW job_etas AS
WITH live AS (
    SELECT j.id, j.job_code, j.status, j.resource_category, j.priority, j.started_at,
           j.retry_after, workflow_runtime_estimate(j.workflow_id) AS total_s,
           coalesce(j.progress_percent, 0) AS progress_percent
      FROM workflow_jobs j
     WHERE j.status IN ('pending', 'queued', 'processing')),
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
                          now() + make_interval(secs => q.ahead_s / c.slots)) END
           AS estimated_start,
       CASE WHEN q.status = 'processing' THEN now() + make_interval(secs => q.left_s)
            ELSE greatest(coalesce(q.retry_after, now()),
                          now() + make_interval(secs => q.ahead_s / c.slots))
                 + make_interval(secs => q.total_s) END
           AS estimated_finish
  FROM queued_ahead q LEFT JOIN capacity c ON c.category = q.resource_category;
