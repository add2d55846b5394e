-- Named queries of the HTTP API, the dashboard and /metrics (`mediaq web`).

-- ===========================================================================
-- Tokens
-- ===========================================================================

-- name: token_create
-- Store a new token's hash (the token itself is never stored).
INSERT INTO api_tokens (name, role, token_hash, prefix)
VALUES (%(name)s, %(role)s, %(token_hash)s, %(prefix)s)
RETURNING id, name, role, prefix, created_at;

-- name: tokens_list
-- Every token, without its hash.
SELECT id, name, role, prefix, created_at, last_used_at, revoked_at
  FROM api_tokens ORDER BY id;

-- name: token_revoke
-- Revoke a token for good.
UPDATE api_tokens SET revoked_at = now()
 WHERE id = %(id)s AND revoked_at IS NULL
RETURNING id;

-- name: token_authenticate
-- The live token with this hash; its last use is recorded at most once a minute.
UPDATE api_tokens
   SET last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < now() - interval '1 minute'
                           THEN now() ELSE last_used_at END
 WHERE token_hash = %(token_hash)s AND revoked_at IS NULL
RETURNING id, name, role;

-- ===========================================================================
-- The HTTP API
-- ===========================================================================

-- name: web_health
-- The database answers.
SELECT 1 AS ok;

-- name: jobs_api_list
-- The job list of GET /api/media/jobs: filtered, newest first, one page, with the total count.
SELECT j.id, j.job_code, wd.workflow_code, wd.workflow_name, j.status, j.progress_percent,
       j.progress_stage, j.current_step,
       (SELECT count(*) FROM workflow_steps ws WHERE ws.workflow_id = j.workflow_id) AS total_steps,
       j.resource_category, j.vram_required, j.priority, j.params, j.input_file_path,
       j.output_file_path, j.retry_count, j.max_retries, j.retry_after, j.waiting_reason,
       j.error_message, j.submitted_by, j.submitted_at, j.started_at, j.completed_at,
       count(*) OVER () AS total
  FROM workflow_jobs j
  JOIN workflow_definitions wd ON wd.id = j.workflow_id
 WHERE (%(status)s::text IS NULL OR j.status = %(status)s)
   AND (%(workflow_code)s::text IS NULL OR wd.workflow_code = %(workflow_code)s)
   AND (%(category)s::text IS NULL OR j.resource_category = %(category)s)
 ORDER BY j.id DESC
 LIMIT %(limit)s OFFSET %(offset)s;

-- name: jobs_api_etas
-- Estimated start and finish of the waiting and running jobs among %(job_ids)s, or why no
-- live worker can start one.
SELECT job_id, estimated_seconds, estimated_start, estimated_finish, eta_blocked_reason
  FROM job_etas WHERE job_id = ANY (%(job_ids)s::bigint[]);

-- name: jobs_api_count
-- How many jobs match the filters (for a page past the end).
SELECT count(*) AS total
  FROM workflow_jobs j
  JOIN workflow_definitions wd ON wd.id = j.workflow_id
 WHERE (%(status)s::text IS NULL OR j.status = %(status)s)
   AND (%(workflow_code)s::text IS NULL OR wd.workflow_code = %(workflow_code)s)
   AND (%(category)s::text IS NULL OR j.resource_category = %(category)s);

-- name: job_total_steps
-- How many steps a job's workflow version has.
SELECT count(*) AS total_steps FROM workflow_steps WHERE workflow_id = %(workflow_id)s;

-- name: hosts_vram
-- Each machine's VRAM budget and what running jobs hold of it.
SELECT h.host, h.vram_budget_mb, h.vram_reserved_mb, h.updated_at,
       (SELECT count(*) FROM workers w WHERE w.host = h.host AND w.status <> 'stopped') AS workers
  FROM worker_hosts h ORDER BY h.host;

-- ===========================================================================
-- Prometheus /metrics (computed per scrape)
-- ===========================================================================

-- name: metrics_jobs_by_type_status
-- Jobs per workflow code and status.
SELECT wd.workflow_code AS type, j.status, count(*) AS n
  FROM workflow_jobs j JOIN workflow_definitions wd ON wd.id = j.workflow_id
 GROUP BY wd.workflow_code, j.status ORDER BY 1, 2;

-- name: metrics_categories
-- Per resource category: the queue_depth view (what external autoscalers read).
SELECT resource_category AS category, running, waiting AS depth, eligible,
       oldest_waiting_age_s AS oldest_age, oldest_eligible_age_s AS oldest_eligible_age
  FROM queue_depth ORDER BY resource_category;

-- name: metrics_job_counters
-- Pending jobs, dead letters (failed jobs), and retries and rescues per workflow code.
SELECT wd.workflow_code AS type,
       count(*) FILTER (WHERE j.status = 'pending') AS pending,
       count(*) FILTER (WHERE j.status = 'failed') AS dead_lettered,
       coalesce(sum(j.retry_count), 0) AS retries,
       coalesce(sum(j.rescue_count), 0) AS rescues
  FROM workflow_jobs j JOIN workflow_definitions wd ON wd.id = j.workflow_id
 GROUP BY wd.workflow_code ORDER BY 1;

-- name: metrics_hosts
-- VRAM per machine.
SELECT host, vram_budget_mb, vram_reserved_mb FROM worker_hosts ORDER BY host;

-- name: metrics_step_buckets
-- Step durations per (workflow, action): count, sum and cumulative counts per bucket bound.
WITH d AS (
    SELECT wd.workflow_code AS workflow, ws.action, se.duration_ms / 1000.0 AS seconds
      FROM step_executions se
      JOIN workflow_steps ws ON ws.id = se.step_id
      JOIN workflow_definitions wd ON wd.id = ws.workflow_id
     WHERE se.duration_ms IS NOT NULL AND se.status <> 'skipped'
), c AS (
    SELECT d.workflow, d.action, u.i, count(*) FILTER (WHERE d.seconds <= u.le) AS n_le
      FROM d CROSS JOIN unnest(%(bounds)s::float8[]) WITH ORDINALITY AS u(le, i)
     GROUP BY d.workflow, d.action, u.i
)
SELECT g.workflow, g.action, g.n, g.total,
       (SELECT array_agg(c.n_le ORDER BY c.i) FROM c
         WHERE c.workflow = g.workflow AND c.action = g.action) AS buckets
  FROM (SELECT workflow, action, count(*) AS n, sum(seconds)::float8 AS total
          FROM d GROUP BY workflow, action) AS g
 ORDER BY g.workflow, g.action;

-- name: metrics_notifications
-- Outbox rows per channel and status.
SELECT coalesce(channel, 'unknown') AS channel, coalesce(status, 'unknown') AS status, count(*) AS n
  FROM workflow_notifications GROUP BY 1, 2 ORDER BY 1, 2;

-- name: metrics_breakers
-- Every endpoint's circuit breaker state.
SELECT endpoint, state FROM notification_endpoints ORDER BY endpoint;

-- name: metrics_workers
-- Worker processes per status.
SELECT s.status, count(w.worker_id) AS n
  FROM unnest(ARRAY['running', 'draining', 'stopped']) AS s(status)
  LEFT JOIN workers w ON w.status = s.status
 GROUP BY s.status ORDER BY s.status;

-- name: metrics_worker_resources
-- What each live worker last reported of its machine (disk free on its storage roots,
-- its RSS, the load), kept under limits' "_resources" key by worker_heartbeat.
SELECT worker_id, host, limits -> '_resources' AS resources
  FROM workers
 WHERE status <> 'stopped' AND heartbeat_at > now() - interval '5 minutes'
   AND jsonb_typeof(limits -> '_resources') = 'object'
 ORDER BY heartbeat_at DESC, worker_id;

-- name: metrics_jobs_finished_recent
-- Jobs that finished in the last 15 minutes, completed or failed (their current status:
-- a failed job retried since is no longer counted as failed).
SELECT o.outcome, count(j.id) AS n
  FROM unnest(ARRAY['completed', 'failed']) AS o(outcome)
  LEFT JOIN workflow_jobs j
    ON j.status = o.outcome AND j.completed_at > now() - interval '15 minutes'
 GROUP BY o.outcome ORDER BY o.outcome;
