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

-- ===========================================================================
-- Rate limits (token buckets shared by every `mediaq web` process)
-- ===========================================================================

-- name: rate_limit_take
-- Take one token from each of %(buckets)s (refilled at per_second up to capacity since
-- its last use); a bucket with less than one token refuses and keeps what it has.
-- clock_timestamp(), read once per row as EXCLUDED.updated_at: every process reads the
-- one database clock. Buckets in one order (ORDER BY): two takes never deadlock.
INSERT INTO rate_limit_buckets AS b (bucket, tokens, capacity, per_second, allowed, updated_at)
SELECT w.bucket, w.capacity - 1, w.capacity, w.per_second, TRUE, clock_timestamp()
  FROM unnest(%(buckets)s::text[], %(capacity)s::float8[], %(per_second)s::float8[])
       AS w(bucket, capacity, per_second)
 ORDER BY w.bucket
ON CONFLICT (bucket) DO UPDATE
   SET tokens = least(EXCLUDED.capacity, b.tokens + EXCLUDED.per_second
                     * greatest(0, extract(epoch FROM EXCLUDED.updated_at - b.updated_at)))
                - CASE WHEN least(EXCLUDED.capacity, b.tokens + EXCLUDED.per_second
                     * greatest(0, extract(epoch FROM EXCLUDED.updated_at - b.updated_at))) >= 1 THEN 1 ELSE 0 END,
       allowed = least(EXCLUDED.capacity, b.tokens + EXCLUDED.per_second
                     * greatest(0, extract(epoch FROM EXCLUDED.updated_at - b.updated_at))) >= 1,
       capacity = EXCLUDED.capacity, per_second = EXCLUDED.per_second,
       updated_at = EXCLUDED.updated_at
RETURNING b.bucket, b.tokens, b.per_second, b.allowed;

-- name: rate_limit_forget_idle
-- Buckets untouched for an hour are full again: forget them.
DELETE FROM rate_limit_buckets WHERE updated_at < clock_timestamp() - interval '1 hour';

-- ===========================================================================
-- Progress (GET /api/media/jobs/{id}/progress, also as server-sent events)
-- ===========================================================================

-- name: job_progress_api
-- One job's progress by code or numeric id: a primary-key or unique-index lookup, cheap
-- enough to poll (the event stream reads it about once a second).
SELECT j.id, j.job_code, j.status, j.progress_percent, j.progress_stage, j.current_step,
       (SELECT count(*) FROM workflow_steps ws WHERE ws.workflow_id = j.workflow_id)
           AS total_steps,
       j.error_message, j.started_at, j.completed_at, j.updated_at
  FROM workflow_jobs j
 WHERE j.job_code = %(code)s OR j.id = %(id)s;

-- ===========================================================================
-- Signed download links
-- ===========================================================================

-- name: download_key_get
-- The secret signing one job's links for one token (NULL: webhooks), made on first use.
-- A concurrent first use inserts nothing and reads the other's row.
WITH made AS (
    INSERT INTO download_keys (job_id, token_id, secret)
    VALUES (%(job_id)s, %(token_id)s, %(secret)s)
    ON CONFLICT (job_id, holder) DO NOTHING
    RETURNING id, secret
)
SELECT id, secret FROM made
UNION ALL
SELECT id, secret FROM download_keys
 WHERE job_id = %(job_id)s AND holder = coalesce(%(token_id)s::bigint, 0)
 LIMIT 1;

-- name: download_key_check
-- A link's key: its secret, its job, and whether its token (if any) is still live.
SELECT k.job_id, k.secret, j.job_code, (k.token_id IS NULL OR t.revoked_at IS NULL) AS live
  FROM download_keys k
  JOIN workflow_jobs j ON j.id = k.job_id
  LEFT JOIN api_tokens t ON t.id = k.token_id
 WHERE k.id = %(key_id)s;

-- name: download_job_exists
-- The job still exists (a notification may outlive it).
SELECT id FROM workflow_jobs WHERE id = %(job_id)s;

-- ===========================================================================
-- Uploads (tus resumable uploads and multipart posts)
-- ===========================================================================

-- name: upload_create
-- A new upload, receiving until %(length)s bytes are in its part file.
INSERT INTO uploads (id, token_id, length, received, filename, metadata, part_path, expires_at)
VALUES (%(id)s, %(token_id)s, %(length)s, %(received)s, %(filename)s, %(metadata)s,
        %(part_path)s, now() + make_interval(secs => %(ttl_s)s))
RETURNING *;

-- name: upload_get
-- One upload, with its job's code.
SELECT u.*, j.job_code
  FROM uploads u LEFT JOIN workflow_jobs j ON j.id = u.job_id
 WHERE u.id = %(id)s;

-- name: upload_claim
-- Take a receiving upload for one PATCH at %(offset)s: nobody else writing (or their
-- claim ran out), and the client's offset is the one on disk.
UPDATE uploads
   SET busy_until = now() + make_interval(secs => %(hold_s)s), updated_at = now()
 WHERE id = %(id)s AND status = 'receiving' AND received = %(offset)s
   AND (busy_until IS NULL OR busy_until < now())
RETURNING *;

-- name: upload_hold
-- A long PATCH keeps its claim.
UPDATE uploads SET busy_until = now() + make_interval(secs => %(hold_s)s)
 WHERE id = %(id)s AND status = 'receiving';

-- name: upload_release
-- A PATCH is over: %(received)s bytes are durably on disk; the expiry starts again.
UPDATE uploads
   SET received = %(received)s, busy_until = NULL, updated_at = now(),
       expires_at = now() + make_interval(secs => %(ttl_s)s)
 WHERE id = %(id)s AND status = 'receiving'
RETURNING *;

-- name: upload_complete
-- A finished upload landed under an input root (and became a job, or did not: error).
UPDATE uploads
   SET status = 'complete', received = length, landed_path = %(landed_path)s,
       content_type = %(content_type)s, job_id = %(job_id)s, error = %(error)s,
       busy_until = NULL, updated_at = now()
 WHERE id = %(id)s;

-- name: upload_delete
-- Terminate an upload nobody is writing to (tus termination).
DELETE FROM uploads
 WHERE id = %(id)s AND (busy_until IS NULL OR busy_until < now())
RETURNING part_path, status;

-- name: upload_delete_any
-- Forget an upload whose bytes were refused.
DELETE FROM uploads WHERE id = %(id)s;

-- name: uploads_expire
-- Unfinished uploads past their expiry, nobody writing: removed (their part files next).
DELETE FROM uploads
 WHERE status = 'receiving' AND expires_at < now()
   AND (busy_until IS NULL OR busy_until < now())
RETURNING id, part_path;

-- ===========================================================================
-- The dashboard's charts and Hosts view (GET /api/media/dashboard/…)
-- %(unit)s is 'minute' or 'hour' (the bucket), %(span)s the range ('1 hour', '1 day',
-- '7 days'); every series has one row per bucket, empty buckets included, so a chart's
-- x axis is the same for every series.
-- ===========================================================================

-- name: dash_throughput
-- Jobs completed and failed per bucket over the range.
WITH buckets AS (
    SELECT generate_series(date_trunc(%(unit)s, now() - %(span)s::interval),
                           date_trunc(%(unit)s, now()), ('1 ' || %(unit)s)::interval) AS t
), done AS (
    SELECT date_trunc(%(unit)s, completed_at) AS t,
           count(*) FILTER (WHERE status = 'completed') AS completed,
           count(*) FILTER (WHERE status = 'failed') AS failed
      FROM workflow_jobs
     WHERE completed_at >= date_trunc(%(unit)s, now() - %(span)s::interval)
       AND status IN ('completed', 'failed')
     GROUP BY 1
)
SELECT extract(epoch FROM b.t)::bigint AS t, coalesce(d.completed, 0) AS completed,
       coalesce(d.failed, 0) AS failed
  FROM buckets b LEFT JOIN done d ON d.t = b.t
 ORDER BY b.t;

-- name: dash_queue_depth
-- Per resource category and bucket end: jobs waiting then (submitted, not yet started or
-- finished) and the age of the oldest of them, in seconds.
WITH buckets AS (
    SELECT generate_series(date_trunc(%(unit)s, now() - %(span)s::interval),
                           date_trunc(%(unit)s, now()), ('1 ' || %(unit)s)::interval)
           + ('1 ' || %(unit)s)::interval AS t_end
), jobs AS (
    SELECT resource_category, submitted_at,
           coalesce(started_at, completed_at, 'infinity'::timestamptz) AS left_queue_at
      FROM workflow_jobs
     WHERE coalesce(started_at, completed_at, 'infinity'::timestamptz)
           >= now() - %(span)s::interval - ('1 ' || %(unit)s)::interval
)
SELECT extract(epoch FROM least(b.t_end, now()))::bigint AS t, c.category,
       count(j.submitted_at) AS waiting,
       coalesce(extract(epoch FROM least(b.t_end, now()) - min(j.submitted_at)), 0)::float8
           AS oldest_waiting_s
  FROM buckets b
 CROSS JOIN unnest(ARRAY['cpu', 'gpu_encode', 'gpu_ai']) AS c(category)
  LEFT JOIN jobs j ON j.resource_category = c.category
                  AND j.submitted_at <= least(b.t_end, now())
                  AND j.left_queue_at > least(b.t_end, now())
 GROUP BY b.t_end, c.category
 ORDER BY b.t_end, c.category;

-- name: dash_vram
-- Per host and bucket end: the VRAM (MB) of the GPU step runs under way then (the step's
-- own vram_required, else its job's).
WITH buckets AS (
    SELECT generate_series(date_trunc(%(unit)s, now() - %(span)s::interval),
                           date_trunc(%(unit)s, now()), ('1 ' || %(unit)s)::interval)
           + ('1 ' || %(unit)s)::interval AS t_end
), runs AS (
    SELECT w.host, se.started_at, coalesce(se.completed_at, 'infinity'::timestamptz) AS ended,
           coalesce(ws.vram_required, j.vram_required, 0) AS vram_mb
      FROM step_executions se
      JOIN workflow_jobs j ON j.id = se.job_id
      JOIN workflow_steps ws ON ws.id = se.step_id
      JOIN workers w ON w.worker_id = se.worker_id
     WHERE se.started_at IS NOT NULL
       AND coalesce(ws.resource_category, j.resource_category) <> 'cpu'
       AND coalesce(se.completed_at, 'infinity'::timestamptz)
           >= now() - %(span)s::interval - ('1 ' || %(unit)s)::interval
), hosts AS (SELECT host FROM worker_hosts UNION SELECT host FROM runs)
SELECT extract(epoch FROM least(b.t_end, now()))::bigint AS t, h.host,
       coalesce(sum(r.vram_mb), 0)::bigint AS vram_mb
  FROM buckets b
 CROSS JOIN hosts h
  LEFT JOIN runs r ON r.host = h.host AND r.started_at <= least(b.t_end, now())
                  AND r.ended > least(b.t_end, now())
 GROUP BY b.t_end, h.host
 ORDER BY b.t_end, h.host;

-- name: dash_hosts
-- Each host: VRAM budget and reservation, its live workers, slots in use per category,
-- its most recent heartbeat's age in seconds, and its GPUs as its newest live worker
-- last read them (NVML, in the heartbeat's resource snapshot).
SELECT h.host, h.vram_budget_mb, h.vram_reserved_mb, h.paused_by, h.paused_at,
       extract(epoch FROM now() - max(w.heartbeat_at))::float8 AS heartbeat_age_s,
       count(DISTINCT w.worker_id) FILTER (WHERE w.status <> 'stopped') AS live_workers,
       coalesce((SELECT jsonb_object_agg(category, jsonb_build_object('used', used, 'total', total))
                   FROM (SELECT s.category, count(s.job_id) AS used, count(*) AS total
                           FROM worker_slots s WHERE s.host = h.host
                          GROUP BY s.category) x), '{}'::jsonb) AS slots,
       (SELECT g.limits -> '_resources' -> 'gpus' FROM workers g
         WHERE g.host = h.host AND g.status <> 'stopped'
           AND jsonb_typeof(g.limits -> '_resources' -> 'gpus') = 'object'
         ORDER BY g.heartbeat_at DESC LIMIT 1) AS gpus
  FROM (SELECT host, vram_budget_mb, vram_reserved_mb, paused_by, paused_at FROM worker_hosts
        UNION
        SELECT DISTINCT host, 0, 0, NULL::text, NULL::timestamptz FROM workers
         WHERE host NOT IN (SELECT host FROM worker_hosts)) h
  LEFT JOIN workers w ON w.host = h.host
 GROUP BY h.host, h.vram_budget_mb, h.vram_reserved_mb, h.paused_by, h.paused_at
 ORDER BY h.host;

-- name: dash_workers
-- Every worker that is not stopped, or stopped within the last hour, with its heartbeat
-- age and the jobs (and steps) it runs now.
SELECT w.worker_id, w.host, w.pid, w.status, w.categories, w.limits, w.vram_budget_mb,
       w.version, w.started_at,
       extract(epoch FROM now() - w.heartbeat_at)::float8 AS heartbeat_age_s,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                    'job', j.job_code, 'workflow', d.workflow_code, 'step', ws.step_name,
                    'category', coalesce(ws.resource_category, j.resource_category),
                    'progress', j.progress_percent) ORDER BY se.started_at)
                   FROM step_executions se
                   JOIN workflow_jobs j ON j.id = se.job_id
                   JOIN workflow_definitions d ON d.id = j.workflow_id
                   JOIN workflow_steps ws ON ws.id = se.step_id
                  WHERE se.worker_id = w.worker_id AND se.status = 'running'),
                '[]'::jsonb) AS running
  FROM workers w
 WHERE w.status <> 'stopped' OR w.stopped_at > now() - interval '1 hour'
 ORDER BY w.host, w.worker_id;

-- name: dash_live
-- The one cheap row the dashboard polls for live updates: jobs per status, the newest
-- change and ``shown``, a checksum of what the page shows of each waiting, running or
-- paused job (the columns the trigger jobs_notify_dashboard watches): a page refetches
-- its view only when this row changes. ``changed_at`` alone misses a change that does
-- not touch updated_at (a priority set in SQL), which the trigger does announce.
SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE status = 'queued') AS queued,
       count(*) FILTER (WHERE status = 'processing') AS processing,
       count(*) FILTER (WHERE status = 'paused') AS paused,
       count(*) FILTER (WHERE status = 'completed') AS completed,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
       max(updated_at) AS changed_at,
       coalesce(sum(hashtext(concat_ws('|', id, status, progress_percent, progress_stage,
                                        priority, waiting_reason)))
                FILTER (WHERE status IN ('pending', 'queued', 'processing', 'paused')), 0)
           ::text AS shown
  FROM workflow_jobs;

-- name: dash_live_jobs
-- What the web process's live session diffs on each burst of changes (mediaq/web/live.py),
-- in the shape of jobs_api_list: every waiting, running or paused job, the newest
-- %(newest)s jobs (the landing page's), and the jobs of %(tracked)s (those it saw last
-- time: one that finished or was deleted shows so), newest first, at most %(limit)s.
SELECT j.id, j.job_code, wd.workflow_code, wd.workflow_name, j.status, j.progress_percent,
       j.progress_stage, j.current_step,
       (SELECT count(*) FROM workflow_steps ws WHERE ws.workflow_id = j.workflow_id) AS total_steps,
       j.resource_category, j.vram_required, j.priority, j.params, j.input_file_path,
       j.output_file_path, j.retry_count, j.max_retries, j.retry_after, j.waiting_reason,
       j.error_message, j.submitted_by, j.submitted_at, j.started_at, j.completed_at
  FROM workflow_jobs j
  JOIN workflow_definitions wd ON wd.id = j.workflow_id
 WHERE j.status IN ('pending', 'queued', 'processing', 'paused')
    OR j.id >= coalesce((SELECT min(n.id) FROM (SELECT id FROM workflow_jobs
                                                 ORDER BY id DESC LIMIT %(newest)s) n), 0)
    OR j.id = ANY (%(tracked)s::bigint[])
 ORDER BY j.id DESC
 LIMIT %(limit)s;

-- name: dash_listen
-- The web process's one live session waits for the dashboard's wake-up (the trigger
-- jobs_notify_dashboard sends it when a job's shown state changes).
LISTEN mediaq_dashboard;
