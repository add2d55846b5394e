-- Every runtime statement of mediaq, by name. Loaded by mediaq/queries.py.
-- Format: a "-- name: NAME" line, a one-line description, then the statement.
-- Worker writes about a job carry the fence (worker_id, attempt, status) so a
-- worker that lost its lease changes nothing: a fenced statement then touches 0 rows.

-- name: schema_version
-- The Alembic revision the database is at.
SELECT version_num FROM mediaq.alembic_version;

-- name: migration_lock
-- Wait until no other migrator runs (a session-level advisory lock).
SELECT pg_advisory_lock(%(key)s);

-- name: migration_unlock
-- Let the next migrator in.
SELECT pg_advisory_unlock(%(key)s);

-- name: schema_is_new
-- Whether schema "mediaq" is absent or holds no table, view, sequence or function yet
-- (such a database gets schema.sql; any other gets the revisions after its own).
SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = 'mediaq')
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
                     JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                    WHERE n.nspname = 'mediaq') AS is_new;

-- name: schema_create
-- The schema the version table lives in (the revisions and schema.sql fill it).
CREATE SCHEMA IF NOT EXISTS mediaq;

-- ===========================================================================
-- Workers, hosts, slots
-- ===========================================================================

-- name: worker_liveness_lock
-- Take this worker's liveness lock on the session that runs it (the listening session,
-- kept for the process's whole life): a session-level advisory lock in namespace 28017
-- on hashtext(worker_id). PostgreSQL frees it the moment the session ends (the process
-- was killed, its host closed the socket), which is how rescuers know the worker died
-- without waiting for its lease. False: another live session holds it (a half-open
-- session of this same worker, or a hash twin), and the lease alone protects its jobs.
SELECT pg_try_advisory_lock(28017, hashtext(%(worker_id)s)) AS held;

-- name: host_duties_lock
-- Take this machine's duties (the notifier and the watch-folder and schedule triggers
-- that `mediaq worker` runs beside its jobs) on the listening session: a session-level
-- advisory lock in namespace 28018 on hashtext(host). One process a machine holds it,
-- so fifty processes run one notifier and one trigger runner, not fifty; when that
-- process ends its session ends, and the next process to try takes them over.
SELECT pg_try_advisory_lock(28018, hashtext(%(host)s)) AS held;

-- name: worker_register
-- Record a starting worker (a restarted worker with the same id takes its row over);
-- liveness_key says whether it holds its liveness lock (worker_liveness_lock).
INSERT INTO workers (worker_id, host, pid, categories, limits, queues, vram_budget_mb, version,
                     liveness_key)
VALUES (%(worker_id)s, %(host)s, %(pid)s, %(categories)s, %(limits)s, %(queues)s,
        %(vram_budget_mb)s, %(version)s,
        CASE WHEN %(liveness)s THEN hashtext(%(worker_id)s) END)
ON CONFLICT (worker_id) DO UPDATE
   SET host = EXCLUDED.host, pid = EXCLUDED.pid, categories = EXCLUDED.categories,
       limits = EXCLUDED.limits, queues = EXCLUDED.queues,
       vram_budget_mb = EXCLUDED.vram_budget_mb, version = EXCLUDED.version,
       liveness_key = EXCLUDED.liveness_key,
       status = 'running', started_at = now(), heartbeat_at = now(), stopped_at = NULL;

-- name: worker_liveness_set
-- Record whether the worker holds its liveness lock (after its listening session was
-- reconnected and the lock taken again, or not).
UPDATE workers SET liveness_key = CASE WHEN %(liveness)s THEN hashtext(worker_id) END
 WHERE worker_id = %(worker_id)s;

-- name: worker_heartbeat
-- Show the worker alive, with what its machine has left (disk free on the storage roots,
-- RSS, load: mediaq.host_stats) under limits' "_resources" key: no category is called
-- that, so the claim and the ETAs, which read limits per category, never see it. No
-- figures (measuring stalled, e.g. on a hung mount) removes the old ones.
UPDATE workers
   SET heartbeat_at = now(), status = %(status)s,
       limits = CASE WHEN %(resources)s::jsonb IS NULL THEN limits - '_resources'
                     ELSE jsonb_set(limits, '{_resources}', %(resources)s::jsonb) END
 WHERE worker_id = %(worker_id)s;

-- name: worker_stopped
-- Mark the worker stopped on a clean exit.
UPDATE workers SET status = 'stopped', stopped_at = now(), heartbeat_at = now()
 WHERE worker_id = %(worker_id)s;

-- name: workers_mark_lost
-- Workers silent for longer than a lease are shown stopped.
-- A row locked now is its worker's heartbeat being written: skipped, never waited for.
UPDATE workers SET status = 'stopped', stopped_at = heartbeat_at
 WHERE worker_id IN (SELECT worker_id FROM workers
                      WHERE status <> 'stopped'
                        AND heartbeat_at < now() - make_interval(secs => %(lease_seconds)s)
                        FOR NO KEY UPDATE SKIP LOCKED);

-- name: host_ensure
-- Create this machine's row; the VRAM budget is the one the latest worker declared.
INSERT INTO worker_hosts (host, vram_budget_mb) VALUES (%(host)s, %(vram_budget_mb)s)
ON CONFLICT (host) DO UPDATE SET vram_budget_mb = EXCLUDED.vram_budget_mb, updated_at = now();

-- name: slots_ensure
-- Create numbered slots 1..limit for one category on this machine.
INSERT INTO worker_slots (host, category, slot)
SELECT %(host)s, %(category)s, n FROM generate_series(1, %(limit)s) AS n
ON CONFLICT DO NOTHING;

-- name: host_lock
-- Lock this machine's VRAM ledger for a GPU claim. Lock order: host, slot, job.
SELECT vram_budget_mb, vram_reserved_mb FROM worker_hosts WHERE host = %(host)s FOR UPDATE;

-- name: host_reserve_vram
-- Take VRAM from this machine's budget for a claimed job (host row is locked).
UPDATE worker_hosts SET vram_reserved_mb = vram_reserved_mb + %(vram_mb)s, updated_at = now()
 WHERE host = %(host)s;

-- name: slots_release_orphans
-- Free slots whose task is no longer running (a belt to the triggers' braces).
UPDATE worker_slots s
   SET job_id = NULL, job_attempt = NULL, task_id = NULL, worker_id = NULL, taken_at = NULL,
       vram_mb = 0
 WHERE s.job_id IS NOT NULL
   AND s.taken_at < now() - interval '5 seconds'
   AND NOT EXISTS (SELECT 1 FROM job_tasks t
                    WHERE t.id = s.task_id AND t.state = 'running'
                      AND t.worker_id = s.worker_id);

-- ===========================================================================
-- Claiming
-- ===========================================================================

-- name: task_claim_next
-- Claim the most urgent ready task of one category that fits the free VRAM, together
-- with a free numbered slot of this machine, in one statement; its job goes to
-- processing (attempt + 1 when it was waiting: a job keeps its attempt while any of its
-- tasks run or wait between them).
-- Run-ahead: a ready task of %(prefer_job_id)s (the job whose task this worker just
-- committed) comes first, so a chain runs start to finish on one worker.
-- The CTEs are optimisation fences: the planner cannot lock or update more rows than
-- the LIMITs, and SKIP LOCKED lets concurrent claimers pass each other. The general
-- candidate walks job_tasks_ready (category, priority DESC, id): never the jobs table.
-- Lock order: slot, task, job (a locked job row is skipped, never waited for).
-- The slot is locked only once a read-only look (the ready index for the category, the
-- job's tasks for run-ahead) saw a ready task that fits: locking a row is a write, and
-- a claim that finds nothing must write nothing (tests/test_idle_claims.py).
WITH slot AS (
    SELECT host, category, slot
      FROM worker_slots
     WHERE host = %(host)s AND category = %(category)s AND slot <= %(limit)s
       AND job_id IS NULL
       AND CASE WHEN %(only_preferred)s
                THEN EXISTS (SELECT 1 FROM job_tasks r
                              WHERE r.job_id = %(prefer_job_id)s AND r.state = 'ready'
                                AND r.resource_category = %(category)s
                                AND (r.retry_after IS NULL OR r.retry_after <= now())
                                AND r.vram_required <= %(vram_free_mb)s
                                AND EXISTS (SELECT 1 FROM workflow_jobs j
                                             WHERE j.id = r.job_id
                                               AND j.status IN ('pending', 'queued', 'processing')
                                               AND NOT j.cancel_requested
                                               AND NOT j.pause_requested))
                ELSE EXISTS (SELECT 1 FROM job_tasks r
                              WHERE r.state = 'ready' AND r.resource_category = %(category)s
                                AND (r.retry_after IS NULL OR r.retry_after <= now())
                                AND r.vram_required <= %(vram_free_mb)s
                                AND (%(queues)s::text[] IS NULL
                                     OR r.queue_name = ANY (%(queues)s::text[]))
                                AND NOT EXISTS (SELECT 1 FROM queues q
                                                 WHERE q.queue_name = r.queue_name AND q.paused)
                                AND EXISTS (SELECT 1 FROM workflow_jobs j
                                             WHERE j.id = r.job_id
                                               AND j.status IN ('pending', 'queued', 'processing')
                                               AND (j.retry_after IS NULL OR j.retry_after <= now())
                                               AND NOT j.cancel_requested
                                               AND NOT j.pause_requested))
           END
     ORDER BY slot
     LIMIT 1
       FOR UPDATE SKIP LOCKED
), preferred AS (
    SELECT t.id
      FROM job_tasks t
     WHERE EXISTS (SELECT 1 FROM slot)
       AND t.job_id = %(prefer_job_id)s AND t.state = 'ready'
       AND t.resource_category = %(category)s
       AND (t.retry_after IS NULL OR t.retry_after <= now())
       AND t.vram_required <= %(vram_free_mb)s
       AND EXISTS (SELECT 1 FROM workflow_jobs j
                    WHERE j.id = t.job_id AND j.status IN ('pending', 'queued', 'processing')
                      AND NOT j.cancel_requested AND NOT j.pause_requested)
     ORDER BY t.step_number, t.item_index NULLS FIRST, t.id
     LIMIT 1
       FOR UPDATE SKIP LOCKED
), general AS (
    SELECT t.id
      FROM job_tasks t
     WHERE EXISTS (SELECT 1 FROM slot) AND NOT EXISTS (SELECT 1 FROM preferred)
       AND NOT %(only_preferred)s
       AND t.state = 'ready'
       AND t.resource_category = %(category)s
       AND (t.retry_after IS NULL OR t.retry_after <= now())
       AND t.vram_required <= %(vram_free_mb)s
       AND (%(queues)s::text[] IS NULL OR t.queue_name = ANY (%(queues)s::text[]))
       AND NOT EXISTS (SELECT 1 FROM queues q WHERE q.queue_name = t.queue_name AND q.paused)
       AND EXISTS (SELECT 1 FROM workflow_jobs j
                    WHERE j.id = t.job_id AND j.status IN ('pending', 'queued', 'processing')
                      AND (j.retry_after IS NULL OR j.retry_after <= now())
                      AND NOT j.cancel_requested AND NOT j.pause_requested)
     ORDER BY t.priority DESC, t.id
     LIMIT 1
       FOR UPDATE SKIP LOCKED
), candidate AS (
    SELECT id FROM preferred UNION ALL SELECT id FROM general
), job_locked AS (
    -- SKIP LOCKED: a job row is locked by a sibling task's commit, which may wait for
    -- this machine's host row (a GPU slot's VRAM given back) that a GPU claim holds;
    -- this claim then takes nothing, and the commit's wake-up brings it back.
    SELECT j.id, j.job_code, j.attempt, j.workflow_id,
           j.status = 'processing' AND j.worker_id IS NOT DISTINCT FROM %(worker_id)s AS mine
      FROM workflow_jobs j, job_tasks t, candidate
     WHERE t.id = candidate.id AND j.id = t.job_id
       AND j.status IN ('pending', 'queued', 'processing')
       AND NOT j.cancel_requested AND NOT j.pause_requested
       FOR UPDATE OF j SKIP LOCKED
), job_moved AS (
    -- A job this worker already runs (run-ahead, the next item) keeps its row as it is:
    -- no new row version, no job triggers; its lease follows its tasks' (heartbeat).
    UPDATE workflow_jobs j
       SET status = 'processing',
           attempt = CASE WHEN j.status = 'processing' THEN j.attempt ELSE j.attempt + 1 END,
           worker_id = %(worker_id)s,
           lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
           started_at = coalesce(j.started_at, now()),
           waiting_reason = NULL,
           progress_stage = CASE WHEN j.status = 'processing' THEN j.progress_stage
                                 ELSE 'starting' END,
           updated_at = now(),
           log = CASE WHEN j.status = 'processing' THEN j.log
                      ELSE job_log_append(j.log, %(log_line)s) END
      FROM job_locked
     WHERE j.id = job_locked.id AND NOT job_locked.mine
    RETURNING j.id, j.job_code, j.attempt, j.workflow_id
), job AS (
    SELECT id, job_code, attempt, workflow_id FROM job_moved
    UNION ALL
    SELECT id, job_code, attempt, workflow_id FROM job_locked WHERE mine
), claimed AS (
    UPDATE job_tasks t
       SET state = 'running', worker_id = %(worker_id)s, attempt = t.attempt + 1,
           lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
           started_at = now(), completed_at = NULL, fused = NULL
      FROM candidate, job
     WHERE t.id = candidate.id AND t.job_id = job.id
    RETURNING t.id AS task_id, t.attempt AS task_attempt, t.step_id, t.step_number,
              t.item_index, t.vram_required AS vram_mb
), assigned AS (
    UPDATE worker_slots s
       SET job_id = job.id, job_attempt = job.attempt, task_id = claimed.task_id,
           worker_id = %(worker_id)s,
           vram_mb = CASE WHEN %(gpu)s THEN claimed.vram_mb ELSE 0 END,
           taken_at = now()
      FROM slot, claimed, job
     WHERE s.host = slot.host AND s.category = slot.category AND s.slot = slot.slot
    RETURNING s.slot, s.vram_mb AS slot_vram_mb
)
SELECT job.*, claimed.*, assigned.slot, assigned.slot_vram_mb,
       (SELECT count(*) FROM slot) AS slot_free
  FROM job, claimed, assigned;

-- name: task_ready_categories
-- Which of these categories hold a ready task that a claim could take now, VRAM aside:
-- the read-only look an idle worker's poll takes instead of claiming in every category
-- (a plain SELECT: no transaction id, no WAL, no row lock). Walks job_tasks_ready.
SELECT c.category
  FROM unnest(%(categories)s::text[]) AS c (category)
 WHERE EXISTS (
     SELECT 1 FROM job_tasks t
      WHERE t.state = 'ready' AND t.resource_category = c.category
        AND (t.retry_after IS NULL OR t.retry_after <= now())
        AND (%(queues)s::text[] IS NULL OR t.queue_name = ANY (%(queues)s::text[]))
        AND NOT EXISTS (SELECT 1 FROM queues q WHERE q.queue_name = t.queue_name AND q.paused)
        AND EXISTS (SELECT 1 FROM workflow_jobs j
                     WHERE j.id = t.job_id AND j.status IN ('pending', 'queued', 'processing')
                       AND (j.retry_after IS NULL OR j.retry_after <= now())
                       AND NOT j.cancel_requested AND NOT j.pause_requested));

-- name: task_fits_vram
-- Before a GPU claim locks this machine's VRAM ledger (a write, and a wait behind the
-- machine's other claimers): the VRAM free now (the ledger's, capped by the GPU's own
-- live figure when known) and whether a ready task of the category fits it (of
-- %(prefer_job_id)s only, when %(only_preferred)s). Read-only.
WITH ledger AS (
    SELECT greatest(0, least(vram_budget_mb - vram_reserved_mb,
                             coalesce(%(live_free_mb)s::integer, 2147483647))) AS free
      FROM worker_hosts WHERE host = %(host)s
)
SELECT ledger.free AS vram_free_mb,
       EXISTS (SELECT 1 FROM job_tasks t
                WHERE t.state = 'ready' AND t.resource_category = %(category)s
                  AND (t.retry_after IS NULL OR t.retry_after <= now())
                  AND t.vram_required <= ledger.free
                  AND (NOT %(only_preferred)s OR t.job_id = %(prefer_job_id)s)) AS fits
  FROM ledger;

-- name: jobs_mark_waiting
-- Tell operators why runnable jobs of a category are not starting on this machine.
-- Only rows whose reason changes are written, so this stays cheap when repeated.
UPDATE workflow_jobs j
   SET status = 'queued', waiting_reason = %(reason)s, updated_at = now()
 WHERE j.id IN (SELECT id FROM workflow_jobs
                 WHERE status IN ('pending', 'queued')
                   AND resource_category = %(category)s
                   AND vram_required > %(vram_free_mb)s
                   AND (retry_after IS NULL OR retry_after <= now())
                   AND waiting_reason IS DISTINCT FROM %(reason)s
                 ORDER BY priority DESC, id
                 LIMIT 100
                   FOR UPDATE SKIP LOCKED);

-- name: jobs_fall_back
-- Waiting tasks that no live worker can run (none takes their category with the VRAM
-- they need) move to their step's fallback category, else their workflow's (a GPU
-- encode done in software on a CPU slot), once; the job's log says why. A job that
-- waits whole moves with them (its category and VRAM, as before tasks). A live worker:
-- running, heartbeat in the last minute (as job_etas reads it).
WITH stranded AS MATERIALIZED (
    SELECT t.id, t.job_id, t.resource_category AS was, t.vram_required AS vram,
           coalesce(ws.fallback_category, wd.fallback_category) AS fallback
      FROM job_tasks t
      JOIN workflow_steps ws ON ws.id = t.step_id
      JOIN workflow_jobs j ON j.id = t.job_id
      JOIN workflow_definitions wd ON wd.id = j.workflow_id
     WHERE t.state IN ('waiting', 'ready')
       AND j.status IN ('pending', 'queued', 'processing')
       AND coalesce(ws.fallback_category, wd.fallback_category) IS NOT NULL
       AND t.resource_category <> coalesce(ws.fallback_category, wd.fallback_category)
       AND NOT EXISTS (
           SELECT 1 FROM workers w
            WHERE w.status = 'running' AND w.heartbeat_at > now() - interval '1 minute'
              AND (cardinality(w.categories) = 0 OR t.resource_category = ANY (w.categories))
              AND coalesce((w.limits ->> t.resource_category)::integer, 1) > 0
              AND t.vram_required <= w.vram_budget_mb)
), tasks AS (
    UPDATE job_tasks t SET resource_category = s.fallback, vram_required = 0
      FROM stranded s WHERE t.id = s.id
), per_job AS (
    SELECT DISTINCT ON (job_id) job_id, was, vram, fallback
      FROM stranded ORDER BY job_id, vram DESC
), moved AS (
    UPDATE workflow_jobs j
       SET resource_category = CASE WHEN j.status <> 'processing' AND j.resource_category = p.was
                                    THEN p.fallback ELSE j.resource_category END,
           vram_required = CASE WHEN j.status <> 'processing' AND j.resource_category = p.was
                                THEN 0 ELSE j.vram_required END,
           waiting_reason = NULL, updated_at = now(),
           log = job_log_append(j.log, format(
               '%%s no live worker serves %%s with %%s MB of VRAM: running on %%s instead' || E'\n',
               %(stamp)s::text, p.was, p.vram, p.fallback))
      FROM per_job p
     WHERE j.id = p.job_id
    RETURNING j.id, j.job_code, p.fallback AS resource_category
)
SELECT id, job_code, resource_category FROM moved;

-- name: jobs_runnable_exists
-- Is any task runnable now or due within a horizon, for the given categories (burst mode exit)?
SELECT EXISTS (
    SELECT 1 FROM job_tasks t JOIN workflow_jobs j ON j.id = t.job_id
     WHERE t.state = 'ready' AND j.status IN ('pending', 'queued', 'processing')
       AND NOT j.cancel_requested AND NOT j.pause_requested
       AND t.resource_category = ANY (%(categories)s::text[])
       AND (t.retry_after IS NULL OR t.retry_after <= now() + make_interval(secs => %(horizon_seconds)s))
       AND (j.retry_after IS NULL OR j.retry_after <= now() + make_interval(secs => %(horizon_seconds)s))
       AND (%(queues)s::text[] IS NULL OR t.queue_name = ANY (%(queues)s::text[]))
       AND (t.resource_category = 'cpu' OR t.vram_required <= %(vram_budget_mb)s)
       AND NOT EXISTS (SELECT 1 FROM queues q WHERE q.queue_name = t.queue_name AND q.paused)
) AS runnable;

-- ===========================================================================
-- Leases and operator requests
-- ===========================================================================

-- name: leases_renew
-- Extend the leases of the tasks this worker still owns, each statement its own
-- transaction (see worker/heartbeat.py). Returns every asked task this worker still owns
-- (running, same attempt) with its job and whether its lease was extended now. A task row
-- another transaction holds is skipped, never waited for: its own commit (the job row,
-- then its tasks) or a rescuer (job, then tasks, then a workers row) may hold it, and a
-- renewal that waited there would sit in their lock cycle and miss its lease. A skipped
-- task (renewed FALSE) is renewed again within a fraction of a second.
WITH asked AS MATERIALIZED (
    SELECT * FROM unnest(%(task_ids)s::bigint[], %(task_attempts)s::integer[]) AS mine (id, attempt)
), owned AS MATERIALIZED (
    SELECT t.id, t.job_id FROM job_tasks t JOIN asked a ON a.id = t.id AND a.attempt = t.attempt
     WHERE t.worker_id = %(worker_id)s AND t.state = 'running'
), free AS (
    -- in id order, as every statement that locks several tasks of a job should
    SELECT t.id FROM job_tasks t JOIN asked a ON a.id = t.id AND a.attempt = t.attempt
     WHERE t.worker_id = %(worker_id)s AND t.state = 'running'
     ORDER BY t.id
       FOR NO KEY UPDATE OF t SKIP LOCKED
), renewed AS (
    UPDATE job_tasks t
       SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
      FROM free WHERE t.id = free.id
    RETURNING t.id
)
SELECT o.id, o.job_id, EXISTS (SELECT 1 FROM renewed r WHERE r.id = o.id) AS renewed
  FROM owned o;

-- name: task_leases_give_up
-- End the leases of tasks this worker abandoned (a write it could not finish while the
-- database was away): the rescuers' next pass hands them on instead of a lease later.
-- Only tasks still running under this worker and attempt.
UPDATE job_tasks t
   SET lease_expires_at = now() - interval '1 millisecond'
  FROM unnest(%(task_ids)s::bigint[], %(task_attempts)s::integer[]) AS mine (id, attempt)
 WHERE t.id = mine.id AND t.attempt = mine.attempt
   AND t.worker_id = %(worker_id)s AND t.state = 'running'
RETURNING t.id;

-- name: job_leases_renew
-- The jobs' leases follow their running tasks' (shown to operators), in a transaction
-- of its own after leases_renew (job rows only). A job row a commit holds is skipped:
-- the heartbeat never waits behind a sibling's commit (which may be publishing files).
UPDATE workflow_jobs j
   SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
 WHERE j.id IN (SELECT id FROM workflow_jobs
                 WHERE id = ANY (%(job_ids)s::bigint[]) AND status = 'processing'
                 ORDER BY id
                   FOR NO KEY UPDATE SKIP LOCKED);

-- name: jobs_control_flags
-- Cancel and pause requests for the tasks this worker runs (polled every second).
SELECT mine.id AS task_id, j.id, j.cancel_requested, j.pause_requested,
       (j.status = 'processing' AND t.state = 'running' AND t.worker_id = %(worker_id)s
        AND t.attempt = mine.attempt) AS owned
  FROM unnest(%(task_ids)s::bigint[], %(task_attempts)s::integer[]) AS mine (id, attempt)
  JOIN job_tasks t ON t.id = mine.id
  JOIN workflow_jobs j ON j.id = t.job_id;

-- name: jobs_rescue_expired
-- Hand tasks whose lease ran out, or whose worker's session is gone, back to ready (no
-- retry spent: the worker died, not the task), or fail the task and its job once that
-- task was rescued too often. Their running step executions are closed as failed with
-- the "system" class. The job goes back to pending (as before tasks) when none of its
-- tasks runs any more; its siblings running elsewhere go on.
-- A worker's session is gone when its liveness lock (worker_liveness_lock) is free:
-- pg_try_advisory_xact_lock takes it for this transaction only, so a rescuer never keeps
-- it. Only workers that own running tasks are tried, and such a dead worker is shown
-- stopped at once. A frozen (SIGSTOP) or cut-off worker keeps its session, so its lock
-- stays held and only its lease hands its tasks on. Jobs are locked before their tasks
-- (the order every committer follows); a locked job waits for the next pass.
WITH owners AS MATERIALIZED (
    SELECT DISTINCT worker_id FROM job_tasks WHERE state = 'running'
), dead AS MATERIALIZED (
    SELECT o.worker_id FROM owners o
     WHERE (SELECT pg_try_advisory_xact_lock(28017, w.liveness_key) FROM workers w
             WHERE w.worker_id = o.worker_id AND w.liveness_key IS NOT NULL)
), dead_shown AS (
    UPDATE workers w SET status = 'stopped', stopped_at = now()
      FROM dead WHERE w.worker_id = dead.worker_id AND w.status <> 'stopped'
), expired AS MATERIALIZED (
    SELECT t.id, t.job_id, coalesce(t.lease_expires_at, '-infinity') >= now() AS session_gone
      FROM job_tasks t
     WHERE t.state = 'running'
       AND (coalesce(t.lease_expires_at, '-infinity') < now()
            OR t.worker_id IN (SELECT worker_id FROM dead))
     ORDER BY t.id
     LIMIT 100
), stuck AS MATERIALIZED (
    -- Jobs left processing with a stop asked and no task running (their last tasks ended
    -- at the same moment): the stop ends them.
    SELECT j.id FROM workflow_jobs j
     WHERE j.status = 'processing' AND (j.cancel_requested OR j.pause_requested)
       AND NOT EXISTS (SELECT 1 FROM job_tasks t WHERE t.job_id = j.id AND t.state = 'running')
     LIMIT 100
), locked AS MATERIALIZED (
    SELECT j.id FROM workflow_jobs j
     WHERE j.id IN (SELECT job_id FROM expired UNION SELECT id FROM stuck)
       AND j.status = 'processing'
     ORDER BY j.id
       FOR UPDATE SKIP LOCKED
), tasks AS (
    UPDATE job_tasks t
       SET state = CASE WHEN t.rescue_count >= %(max_rescues)s THEN 'failed' ELSE 'ready' END,
           rescue_count = t.rescue_count + 1, lease_expires_at = NULL
      FROM expired e
     WHERE t.id = e.id AND e.job_id IN (SELECT id FROM locked) AND t.state = 'running'
       -- Checked again on the row's latest version: a lease renewed after this
       -- statement's snapshot (its renewal committed while this waited for the row)
       -- keeps its task; the worker is alive.
       AND (coalesce(t.lease_expires_at, '-infinity') < now()
            OR t.worker_id IN (SELECT worker_id FROM dead))
    RETURNING t.id, t.job_id, t.step_id, t.item_index, t.worker_id, t.state, t.rescue_count,
              e.session_gone
), per_job AS (
    SELECT l.id AS job_id,
           bool_or(tk.state = 'failed') AS gave_up,
           coalesce(bool_and(tk.session_gone), FALSE) AS session_gone,
           max(tk.rescue_count) AS rescues,
           string_agg(DISTINCT tk.worker_id, ', ') AS workers,
           EXISTS (SELECT 1 FROM job_tasks o
                    WHERE o.job_id = l.id AND o.state = 'running'
                      AND o.id NOT IN (SELECT id FROM tasks)) AS busy
      FROM locked l LEFT JOIN tasks tk ON tk.job_id = l.id
     GROUP BY l.id
), rescued AS (
    UPDATE workflow_jobs j
       SET status = CASE WHEN p.gave_up THEN 'failed'
                         WHEN p.busy THEN 'processing'
                         ELSE after_attempt(j.cancel_requested, j.pause_requested) END,
           error_class = CASE WHEN p.gave_up THEN 'system'
                              WHEN p.busy THEN j.error_class
                              WHEN j.cancel_requested THEN 'cancelled' ELSE j.error_class END,
           error_message = CASE WHEN p.gave_up
               THEN format('worker lost %%s times (last: %%s); giving up', p.rescues,
                           coalesce(p.workers, j.worker_id, 'unknown'))
               ELSE j.error_message END,
           completed_at = CASE WHEN p.gave_up OR (NOT p.busy AND j.cancel_requested)
                               THEN now() END,
           cancel_requested = CASE WHEN p.busy AND NOT p.gave_up THEN j.cancel_requested
                                   ELSE FALSE END,
           pause_requested = CASE WHEN p.busy AND NOT p.gave_up THEN j.pause_requested
                                  ELSE FALSE END,
           rescue_count = j.rescue_count + CASE WHEN p.workers IS NULL THEN 0 ELSE 1 END,
           lease_expires_at = CASE WHEN p.busy AND NOT p.gave_up THEN j.lease_expires_at END,
           progress_stage = CASE WHEN p.busy AND NOT p.gave_up THEN j.progress_stage END,
           updated_at = now(),
           log = CASE WHEN p.workers IS NULL THEN j.log
                      ELSE job_log_append(j.log, format(E'[%%s] %%s of %%s %%s; rescued by %%s\n',
                                 to_char(now(), 'YYYY-MM-DD HH24:MI:SS'),
                                 CASE WHEN p.session_gone THEN 'Session' ELSE 'Lease' END,
                                 p.workers,
                                 CASE WHEN p.session_gone THEN 'ended' ELSE 'expired' END,
                                 %(worker_id)s::text)) END
      FROM per_job p
     WHERE j.id = p.job_id
    RETURNING j.id, j.job_code, j.status, j.attempt
), closed_steps AS (
    UPDATE step_executions se
       SET status = 'failed', error_class = 'system', completed_at = now(),
           error_message = 'worker lost during the step',
           duration_seconds = extract(epoch FROM now() - se.started_at)::integer
      FROM tasks tk
     WHERE se.job_id = tk.job_id AND se.worker_id = tk.worker_id AND se.status = 'running'
       -- not an execution of another task that worker still runs in the job
       AND NOT EXISTS (SELECT 1 FROM job_tasks o
                        WHERE o.job_id = se.job_id AND o.worker_id = se.worker_id
                          AND o.state = 'running' AND o.id NOT IN (SELECT id FROM tasks)
                          AND o.step_id = se.step_id
                          AND o.item_index IS NOT DISTINCT FROM se.item_index)
    RETURNING se.id
)
SELECT r.id, r.job_code, r.status FROM rescued r;

-- ===========================================================================
-- Executing a job (all fenced)
-- ===========================================================================

-- name: job_context
-- What the executor needs about a claimed job and its workflow version.
SELECT j.id, j.job_code, j.attempt, j.input_file_path, j.params, j.started_at,
       j.retry_count, j.max_retries, j.input_metadata, j.input_bytes,
       wd.workflow_code, wd.version AS workflow_version, wd.timeout_minutes,
       extract(epoch FROM (j.started_at + make_interval(mins => coalesce(wd.timeout_minutes, 60))
                           - now()))::double precision AS seconds_left
  FROM workflow_jobs j JOIN workflow_definitions wd ON wd.id = j.workflow_id
 WHERE j.id = %(job_id)s;

-- name: workflow_steps_of
-- The steps of one workflow version, in order.
SELECT id, step_number, step_name, step_type, action, parameters, timeout_seconds, on_failure,
       needs, when_expr, for_each, resource_category, vram_required, fallback_category, fuse
  FROM workflow_steps WHERE workflow_id = %(workflow_id)s
 ORDER BY step_number, id;

-- name: step_history_of_job
-- Per step (per item of a fanned-out step): how many executions so far, whether it
-- completed, was skipped (its condition was false) or was given up on for good (a
-- `continue` step), the output of the completed one (resume), and whether its outputs
-- wait to be published still (its worker died after its commit: publications).
SELECT step_id, item_index,
       count(*) FILTER (WHERE status <> 'skipped') AS executions,
       bool_or(status = 'completed') AS completed,
       bool_or(status = 'skipped') AS skipped,
       bool_or(status = 'failed' AND error_class IN ('permanent', 'exhausted')) AS given_up,
       (array_agg(output_data ORDER BY id DESC) FILTER (WHERE status = 'completed'))[1] AS output_data,
       (array_agg(error_message ORDER BY id DESC) FILTER (WHERE status = 'failed'))[1] AS error_message,
       bool_or(status = 'completed' AND EXISTS (
           SELECT FROM publications p
            WHERE p.execution_id = e.id AND p.published_at IS NULL)) AS unpublished
  FROM step_executions e WHERE job_id = %(job_id)s
 GROUP BY step_id, item_index;

-- name: task_claim_siblings
-- Claim, with a task this worker runs, the ready tasks of the same job's sibling steps
-- %(step_numbers)s (of the pass %(group_numbers)s) for one decode-once pass: with fuse auto only when no other live
-- worker serving the category is idle (else they are left to spread). Records the choice.
WITH idle_elsewhere AS (
    SELECT EXISTS (
        SELECT 1 FROM workers w
         WHERE w.worker_id <> %(worker_id)s AND w.status = 'running'
           AND w.heartbeat_at > now() - interval '1 minute'
           AND (cardinality(w.categories) = 0 OR %(category)s = ANY (w.categories))
           AND NOT EXISTS (SELECT 1 FROM job_tasks r
                            WHERE r.worker_id = w.worker_id AND r.state = 'running')
    ) AS spread
), mine AS (
    -- ready, or waiting only for steps of the pass itself (a chain of renditions)
    SELECT t.id FROM job_tasks t, idle_elsewhere
     WHERE t.job_id = %(job_id)s AND t.step_number = ANY (%(step_numbers)s::integer[])
       AND t.item_index IS NULL
       AND (t.state = 'ready'
            OR (t.state = 'waiting'
                AND NOT EXISTS (SELECT 1 FROM job_tasks n
                                 WHERE n.job_id = t.job_id
                                   AND n.step_number = ANY (t.need_steps)
                                   AND n.state IN ('waiting', 'ready', 'running')
                                   AND n.step_number <> ALL (%(group_numbers)s::integer[]))))
       AND (t.retry_after IS NULL OR t.retry_after <= now())
       AND NOT idle_elsewhere.spread
       AND task_owned(%(job_id)s, %(task_ids)s, %(task_attempts)s, %(worker_id)s)
     ORDER BY t.step_number
       FOR UPDATE OF t SKIP LOCKED
)
UPDATE job_tasks t
   SET state = 'running', worker_id = %(worker_id)s, attempt = t.attempt + 1,
       lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
       started_at = now(), completed_at = NULL, fused = TRUE
  FROM mine
 WHERE t.id = mine.id
RETURNING t.id AS task_id, t.attempt AS task_attempt, t.step_number;

-- name: job_lock_owned
-- Lock the job row if this worker still owns one of its running tasks: the statements
-- after it in the transaction see every sibling's commit (they serialise on this row).
SELECT id FROM workflow_jobs
 WHERE id = %(job_id)s AND status = 'processing'
   AND task_owned(id, %(task_ids)s, %(task_attempts)s, %(worker_id)s)
   FOR UPDATE;

-- name: task_remaining
-- How many tasks of the job are unfinished besides %(task_id)s (the job row is locked).
SELECT count(*) AS remaining FROM job_tasks
 WHERE job_id = %(job_id)s AND id <> %(task_id)s AND state IN ('waiting', 'ready', 'running');

-- name: task_done
-- A task's step (item) is done (completed, skipped, or failed under on_failure
-- continue): the steps waiting for it count one need less (0: ready). The job row is
-- locked (job_step_committed or job_lock_owned) in this transaction.
-- The ready task this worker's run-ahead claim takes next (the job's first ready task
-- of the same category, in the claim's order, when it is one this statement readied)
-- goes into mediaq.run_ahead_task for the rest of the transaction: task_after_update
-- wakes no other process for it (they would only race the run-ahead, or find nothing).
-- Should the worker not claim it after all (stopping), the others' polls find it.
WITH done AS (
    UPDATE job_tasks t
       SET state = %(state)s, completed_at = now(), lease_expires_at = NULL
     WHERE t.id = %(task_id)s AND t.job_id = %(job_id)s AND t.worker_id = %(worker_id)s
       AND t.state = 'running'
    RETURNING t.id, t.job_id, t.step_number, t.resource_category
), readied AS (
    UPDATE job_tasks d
       SET pending_needs = d.pending_needs - 1,
           state = CASE WHEN d.pending_needs = 1 THEN 'ready' ELSE d.state END
      FROM done
     WHERE d.job_id = done.job_id AND d.state = 'waiting' AND d.item_index IS NULL
       AND done.step_number = ANY (d.need_steps)
    RETURNING d.id, d.state, d.step_number, d.resource_category
), ahead AS (
    SELECT set_config('mediaq.run_ahead_task', coalesce((
        SELECT r.id::text FROM readied r
         WHERE r.state = 'ready' AND r.resource_category = done.resource_category
           AND NOT EXISTS (SELECT 1 FROM job_tasks o  -- ready before this statement
                            WHERE o.job_id = done.job_id AND o.state = 'ready'
                              AND o.resource_category = done.resource_category
                              AND o.step_number <= r.step_number)
         ORDER BY r.step_number, r.id
         LIMIT 1), ''), true) AS task_id
      FROM done
)
SELECT done.id, (SELECT count(*) FROM readied) AS readied,
       (SELECT nullif(task_id, '') FROM ahead) AS run_ahead_task
  FROM done;

-- name: task_expand
-- A fan-out's task made its items: one ready task per item, and the steps waiting for
-- it wait for every item instead (a fan-in is its count reaching 0). The job row is
-- locked in this transaction.
WITH parent AS (
    UPDATE job_tasks t
       SET state = 'completed', completed_at = now(), lease_expires_at = NULL,
           item_count = %(count)s
     WHERE t.id = %(task_id)s AND t.job_id = %(job_id)s AND t.worker_id = %(worker_id)s
       AND t.state = 'running'
    RETURNING t.*
), items AS (
    INSERT INTO job_tasks (job_id, step_id, step_number, item_index, item_params, state,
                           resource_category, vram_required, priority, queue_name)
    SELECT p.job_id, p.step_id, p.step_number, i.ordinality - 1, i.params, 'ready',
           p.resource_category, p.vram_required, p.priority, p.queue_name
      FROM parent p, jsonb_array_elements(%(items)s::jsonb) WITH ORDINALITY AS i (params, ordinality)
     ORDER BY i.ordinality
    RETURNING id
), dependents AS (
    UPDATE job_tasks d
       SET pending_needs = d.pending_needs + %(count)s - 1,
           state = CASE WHEN d.pending_needs + %(count)s - 1 = 0 THEN 'ready' ELSE d.state END
      FROM parent
     WHERE d.job_id = parent.job_id AND d.state = 'waiting' AND d.item_index IS NULL
       AND parent.step_number = ANY (d.need_steps)
)
SELECT parent.id, (SELECT count(*) FROM items) AS items FROM parent;

-- name: job_tasks_of
-- The tasks of a job (what a task's run needs of its siblings: item counts and params).
SELECT id, step_id, step_number, item_index, item_count, item_params, state
  FROM job_tasks WHERE job_id = %(job_id)s
 ORDER BY step_number, item_index NULLS FIRST, id;

-- name: job_step_committed
-- Lock the job row if this worker still owns it (nothing else may change it until
-- commit) and log the step's outcome and the job's progress.
-- A step that is done counts its tasks whole in the job's weighted progress.
UPDATE workflow_jobs
   SET log = job_log_append(log, %(log_line)s), updated_at = now(),
       progress_percent = CASE WHEN %(done)s THEN job_weighted_progress(id, %(task_ids)s::bigint[], 1::real)
                               ELSE %(progress_percent)s END
 WHERE id = %(job_id)s AND status = 'processing'
   AND task_owned(id, %(task_ids)s, %(task_attempts)s, %(worker_id)s)
RETURNING id;

-- name: step_start
-- Open a step execution and point the job at the step, if this worker still owns the job.
WITH fenced AS (
    UPDATE workflow_jobs
       SET current_step = coalesce(least(job_lowest_unfinished_step(id), %(step_number)s),
                                   %(step_number)s),
           progress_stage = %(step_name)s, updated_at = now(),
           progress_percent = job_weighted_progress(id, %(task_ids)s::bigint[], 0::real),
           log = job_log_append(log, %(log_line)s)
     WHERE id = %(job_id)s AND status = 'processing'
       AND task_owned(id, %(task_ids)s, %(task_attempts)s, %(worker_id)s)
    RETURNING id
)
INSERT INTO step_executions (job_id, step_id, status, input_data, started_at, retry_attempt,
                             job_attempt, worker_id, item_index)
SELECT fenced.id, %(step_id)s, 'running', %(input_data)s, now(), %(retry_attempt)s,
       %(attempt)s, %(worker_id)s, %(item_index)s
  FROM fenced
RETURNING id;

-- name: step_skip
-- Record a step whose condition was false as skipped (it counts as done for the steps
-- that need it), if this worker still owns the job.
WITH fenced AS (
    UPDATE workflow_jobs
       SET log = job_log_append(log, %(log_line)s),
           progress_percent = job_weighted_progress(id, %(task_ids)s::bigint[], 1::real), updated_at = now()
     WHERE id = %(job_id)s AND status = 'processing'
       AND task_owned(id, %(task_ids)s, %(task_attempts)s, %(worker_id)s)
    RETURNING id
)
INSERT INTO step_executions (job_id, step_id, status, input_data, output_data, started_at,
                             completed_at, duration_seconds, duration_ms, job_attempt,
                             worker_id)
SELECT fenced.id, %(step_id)s, 'skipped', %(input_data)s, %(output_data)s, now(), now(), 0, 0,
       %(attempt)s, %(worker_id)s
  FROM fenced
RETURNING id;

-- name: step_finish
-- Close a step execution (job_step_committed has locked the job row in this transaction).
UPDATE step_executions
   SET status = %(status)s, output_data = %(output_data)s, error_message = %(error_message)s,
       error_class = %(error_class)s, completed_at = now(),
       duration_seconds = round(extract(epoch FROM now() - started_at))::integer,
       duration_ms = round(extract(epoch FROM now() - started_at) * 1000)::integer
 WHERE id = %(execution_id)s AND status = 'running';

-- name: job_progress
-- Record progress of the running task (its own fraction done) and the job's, weighted
-- over its tasks (tasks of one job run side by side on several workers), if this worker
-- still owns the task. Without a fraction (downloading the input), the figure given.
WITH mine AS (
    UPDATE job_tasks SET progress = least(greatest(%(fraction)s::real, 0), 1)
     WHERE %(fraction)s::real IS NOT NULL AND id = ANY (%(task_ids)s::bigint[])
       AND job_id = %(job_id)s AND worker_id = %(worker_id)s AND state = 'running'
)
UPDATE workflow_jobs
   SET progress_percent = CASE WHEN %(fraction)s::real IS NULL THEN %(progress_percent)s
           ELSE job_weighted_progress(id, %(task_ids)s::bigint[], %(fraction)s::real) END,
       progress_stage = %(stage)s, updated_at = now()
 WHERE id = %(job_id)s AND status = 'processing'
   AND task_owned(id, %(task_ids)s, %(task_attempts)s, %(worker_id)s)
RETURNING id;

-- name: job_input_bytes
-- Record the input's size (for size-scaled estimates), if this worker still owns the job.
UPDATE workflow_jobs SET input_bytes = %(input_bytes)s
 WHERE id = %(job_id)s AND status = 'processing'
   AND task_owned(id, %(task_ids)s, %(task_attempts)s, %(worker_id)s)
RETURNING id;

-- name: job_append_log
-- Append lines to the job log, if this worker still owns the job (capped: job_log_append).
UPDATE workflow_jobs
   SET log = job_log_append(log, %(log_line)s)
 WHERE id = %(job_id)s AND status = 'processing'
   AND task_owned(id, %(task_ids)s, %(task_attempts)s, %(worker_id)s)
RETURNING id;

-- name: job_complete
-- Finish a job successfully, if this worker still owns the task whose commit ends it
-- (no other task of the job is unfinished: task_remaining, under the job's lock).
WITH mine AS (
    UPDATE job_tasks t
       SET state = CASE WHEN t.id = %(task_id)s::bigint THEN coalesce(%(task_state)s, 'completed')
                        ELSE 'completed' END,
           completed_at = now(), lease_expires_at = NULL
     WHERE t.id = ANY (%(task_ids)s) AND t.job_id = %(job_id)s AND t.worker_id = %(worker_id)s
       AND t.state = 'running'
       AND task_owned(%(job_id)s, %(task_ids)s, %(task_attempts)s, %(worker_id)s)
)
UPDATE workflow_jobs
   SET status = 'completed', completed_at = now(), progress_percent = 100,
       progress_stage = NULL, lease_expires_at = NULL, waiting_reason = NULL,
       output_metadata = %(output_metadata)s, output_file_path = %(output_file_path)s,
       error_message = NULL, error_class = NULL, retry_after = NULL, updated_at = now(),
       cancel_requested = FALSE, pause_requested = FALSE,
       log = job_log_append(log, %(log_line)s)
 WHERE id = %(job_id)s AND status = 'processing'
   AND task_owned(id, %(task_ids)s, %(task_attempts)s, %(worker_id)s)
RETURNING id;

-- name: job_fail
-- Fail a job for good (a dead letter), if this worker still owns one of its tasks: its
-- tasks fail, the job's other unfinished tasks are cancelled (job_tasks_end_with_job).
WITH mine AS (
    UPDATE job_tasks t
       SET state = 'failed', completed_at = now(), lease_expires_at = NULL
     WHERE t.id = ANY (%(task_ids)s) AND t.job_id = %(job_id)s AND t.worker_id = %(worker_id)s
       AND t.state = 'running'
       AND task_owned(%(job_id)s, %(task_ids)s, %(task_attempts)s, %(worker_id)s)
)
UPDATE workflow_jobs
   SET status = 'failed', completed_at = now(), progress_stage = NULL, lease_expires_at = NULL,
       error_message = %(error_message)s, error_class = %(error_class)s,
       output_metadata = %(output_metadata)s, updated_at = now(),
       cancel_requested = FALSE, pause_requested = FALSE,
       log = job_log_append(log, %(log_line)s)
 WHERE id = %(job_id)s AND status = 'processing'
   AND task_owned(id, %(task_ids)s, %(task_attempts)s, %(worker_id)s)
RETURNING id;

-- name: job_schedule_retry
-- Send a task back to wait out its back-off (the job's retry budget is spent by one);
-- the job goes back to pending with it when none of its tasks runs any more (it resumes
-- at its unfinished tasks), else stays processing. Run after job_lock_owned.
WITH mine AS (
    UPDATE job_tasks t
       SET state = 'ready', lease_expires_at = NULL,
           retry_after = now() + make_interval(secs => %(delay_seconds)s)
     WHERE t.id = ANY (%(task_ids)s) AND t.job_id = %(job_id)s AND t.worker_id = %(worker_id)s
       AND t.state = 'running'
       AND task_owned(%(job_id)s, %(task_ids)s, %(task_attempts)s, %(worker_id)s)
), others AS (
    SELECT EXISTS (SELECT 1 FROM job_tasks o
                    WHERE o.job_id = %(job_id)s AND o.state = 'running'
                      AND o.id <> ALL (%(task_ids)s)) AS busy
)
UPDATE workflow_jobs
   SET status = CASE WHEN others.busy THEN status
                     ELSE after_attempt(cancel_requested, pause_requested) END,
       retry_count = retry_count + 1,
       retry_after = now() + make_interval(secs => %(delay_seconds)s),
       completed_at = CASE WHEN cancel_requested AND NOT others.busy THEN now() END,
       error_message = %(error_message)s,
       error_class = CASE WHEN cancel_requested AND NOT others.busy THEN 'cancelled'
                          ELSE 'transient' END,
       cancel_requested = others.busy AND cancel_requested,
       pause_requested = others.busy AND pause_requested,
       progress_stage = CASE WHEN others.busy THEN progress_stage END,
       lease_expires_at = CASE WHEN others.busy THEN lease_expires_at END,
       updated_at = now(),
       log = job_log_append(log, %(log_line)s)
  FROM others
 WHERE id = %(job_id)s AND status = 'processing'
   AND task_owned(id, %(task_ids)s, %(task_attempts)s, %(worker_id)s)
RETURNING id;

-- name: job_cancelled
-- Record that running tasks stopped on an operator's cancel; the last running task to
-- stop marks the job cancelled (its unfinished tasks are cancelled with it). Run after
-- job_lock_owned (or job_step_committed).
WITH mine AS (
    UPDATE job_tasks t
       SET state = 'cancelled', completed_at = now(), lease_expires_at = NULL
     WHERE t.id = ANY (%(task_ids)s) AND t.job_id = %(job_id)s AND t.worker_id = %(worker_id)s
       AND t.state = 'running'
       AND task_owned(%(job_id)s, %(task_ids)s, %(task_attempts)s, %(worker_id)s)
), others AS (
    SELECT EXISTS (SELECT 1 FROM job_tasks o
                    WHERE o.job_id = %(job_id)s AND o.state = 'running'
                      AND o.id <> ALL (%(task_ids)s)) AS busy
)
UPDATE workflow_jobs
   SET status = CASE WHEN others.busy THEN status ELSE 'cancelled' END,
       completed_at = CASE WHEN others.busy THEN completed_at ELSE now() END,
       progress_stage = CASE WHEN others.busy THEN progress_stage END,
       lease_expires_at = CASE WHEN others.busy THEN lease_expires_at END,
       error_class = CASE WHEN others.busy THEN error_class ELSE 'cancelled' END,
       cancel_requested = others.busy AND cancel_requested,
       pause_requested = others.busy AND pause_requested,
       updated_at = now(),
       log = CASE WHEN others.busy THEN log ELSE job_log_append(log, %(log_line)s) END
  FROM others
 WHERE id = %(job_id)s AND status = 'processing'
   AND task_owned(id, %(task_ids)s, %(task_attempts)s, %(worker_id)s)
RETURNING id;

-- name: job_hand_back
-- Give running tasks back without spending a retry (worker draining, or paused by an
-- operator): they are ready again; the job waits (or pauses) once none of its tasks runs.
WITH mine AS (
    UPDATE job_tasks t
       SET state = 'ready', lease_expires_at = NULL
     WHERE t.id = ANY (%(task_ids)s) AND t.job_id = %(job_id)s AND t.worker_id = %(worker_id)s
       AND t.state = 'running'
       AND task_owned(%(job_id)s, %(task_ids)s, %(task_attempts)s, %(worker_id)s)
), others AS (
    SELECT EXISTS (SELECT 1 FROM job_tasks o
                    WHERE o.job_id = %(job_id)s AND o.state = 'running'
                      AND o.id <> ALL (%(task_ids)s)) AS busy
)
UPDATE workflow_jobs
   SET status = CASE WHEN others.busy THEN status
                     ELSE after_attempt(cancel_requested, pause_requested) END,
       completed_at = CASE WHEN cancel_requested AND NOT others.busy THEN now() END,
       error_class = CASE WHEN cancel_requested AND NOT others.busy THEN 'cancelled'
                          ELSE error_class END,
       cancel_requested = others.busy AND cancel_requested,
       pause_requested = others.busy AND pause_requested,
       progress_stage = CASE WHEN others.busy THEN progress_stage END,
       lease_expires_at = CASE WHEN others.busy THEN lease_expires_at END,
       updated_at = now(), log = job_log_append(log, %(log_line)s)
  FROM others
 WHERE id = %(job_id)s AND status = 'processing'
   AND task_owned(id, %(task_ids)s, %(task_attempts)s, %(worker_id)s)
RETURNING status;

-- ===========================================================================
-- Operators
-- ===========================================================================

-- name: job_find
-- A job by its code or numeric id.
SELECT j.*, wd.workflow_code, wd.workflow_name, wd.version AS workflow_version
  FROM workflow_jobs j JOIN workflow_definitions wd ON wd.id = j.workflow_id
 WHERE j.job_code = %(ref)s OR j.id::text = %(ref)s;

-- name: job_steps_detail
-- Every step of a job's workflow with its latest execution, where it ran, how many of a
-- fanned-out step's items are done, and its tasks (for `mediaq show` and the API).
SELECT ws.step_number, ws.step_name, ws.action, ws.on_failure, ws.needs,
       se.status, se.retry_attempt, se.started_at, se.completed_at, se.duration_ms,
       se.error_message, se.output_data, se.worker_id, w.host,
       (SELECT count(*) FROM step_executions x
         WHERE x.job_id = %(job_id)s AND x.step_id = ws.id) AS executions,
       (SELECT count(DISTINCT x.item_index) FROM step_executions x
         WHERE x.job_id = %(job_id)s AND x.step_id = ws.id) AS items,
       (SELECT count(DISTINCT x.item_index) FROM step_executions x
         WHERE x.job_id = %(job_id)s AND x.step_id = ws.id AND x.status = 'completed')
           AS items_completed,
       -- The step's tasks (its items' for a fanned-out step), each with its state and
       -- where it runs or ran: tasks of one job run side by side on several hosts.
       (SELECT jsonb_agg(jsonb_build_object('item', t.item_index, 'state', t.state,
                                            'worker', t.worker_id, 'host', tw.host,
                                            'attempt', t.attempt, 'fused', t.fused)
                         ORDER BY t.item_index NULLS FIRST, t.id)
          FROM job_tasks t LEFT JOIN workers tw ON tw.worker_id = t.worker_id
         WHERE t.job_id = %(job_id)s AND t.step_id = ws.id
           AND (t.item_index IS NOT NULL OR t.item_count IS NULL)) AS tasks
  FROM workflow_steps ws
  LEFT JOIN LATERAL (SELECT * FROM step_executions e
                      WHERE e.job_id = %(job_id)s AND e.step_id = ws.id
                      ORDER BY e.id DESC LIMIT 1) se ON TRUE
  LEFT JOIN workers w ON w.worker_id = se.worker_id
 WHERE ws.workflow_id = %(workflow_id)s
 ORDER BY ws.step_number, ws.id;

-- name: job_watch
-- The few fields a live progress bar needs.
SELECT status, progress_percent, progress_stage, current_step, error_message, waiting_reason,
       (SELECT count(*) FROM workflow_steps ws WHERE ws.workflow_id = j.workflow_id) AS total_steps,
       e.estimated_start, e.eta_blocked_reason
  FROM workflow_jobs j
  LEFT JOIN LATERAL (SELECT x.estimated_start, x.eta_blocked_reason
                       FROM job_etas x WHERE x.job_id = j.id) e ON TRUE
 WHERE j.id = %(job_id)s;

-- name: job_cancel
-- Cancel: a waiting job at once; a running one is asked to stop (its worker checks every second).
UPDATE workflow_jobs
   SET status = CASE WHEN status = 'processing' THEN status ELSE 'cancelled' END,
       cancel_requested = (status = 'processing'),
       completed_at = CASE WHEN status = 'processing' THEN completed_at ELSE now() END,
       error_class = CASE WHEN status = 'processing' THEN error_class ELSE 'cancelled' END,
       updated_at = now(),
       log = job_log_append(log, %(log_line)s)
 WHERE id = %(job_id)s AND status IN ('pending', 'queued', 'paused', 'processing')
RETURNING status, cancel_requested;

-- name: job_pause
-- Pause: a waiting job at once; a running one is handed back at its next step boundary.
UPDATE workflow_jobs
   SET status = CASE WHEN status = 'processing' THEN status ELSE 'paused' END,
       pause_requested = (status = 'processing'),
       updated_at = now(), log = job_log_append(log, %(log_line)s)
 WHERE id = %(job_id)s AND status IN ('pending', 'queued', 'processing')
RETURNING status, pause_requested;

-- name: job_resume
-- Resume a paused job (or withdraw a pause request).
UPDATE workflow_jobs
   SET status = CASE WHEN status = 'paused' THEN 'pending' ELSE status END,
       pause_requested = FALSE, updated_at = now(), log = job_log_append(log, %(log_line)s)
 WHERE id = %(job_id)s AND (status = 'paused' OR (status = 'processing' AND pause_requested))
RETURNING status;

-- name: job_retry
-- Send a failed or cancelled job back to the queue; it resumes at its first unfinished step.
UPDATE workflow_jobs
   SET status = 'pending', retry_count = retry_count + 1, retry_after = NULL,
       max_retries = greatest(max_retries, retry_count + 1),
       rescue_count = 0, error_message = NULL, error_class = NULL, completed_at = NULL,
       cancel_requested = FALSE, pause_requested = FALSE, waiting_reason = NULL,
       updated_at = now(), log = job_log_append(log, %(log_line)s)
 WHERE id = %(job_id)s AND status IN ('failed', 'cancelled')
RETURNING status, retry_count;

-- name: jobs_matching_filter
-- Jobs in %(statuses)s matching a bulk filter's workflow, step, class, time and submitter (mediaq/job_filter.py matches the reason), by id.
-- step is the job's current_step: the step a failed job failed at, the step a waiting job
-- resumes at. since/until read completed_at (the failure) when %(by_failure)s, else
-- submitted_at. A plain SELECT: the batches that act on these rows lock and re-check them.
SELECT j.id, j.job_code, j.status, wd.workflow_code, j.current_step AS step_number,
       ws.step_name, j.error_class, j.error_message, j.completed_at AS failed_at,
       j.submitted_at, j.submitted_by
  FROM workflow_jobs j
  JOIN workflow_definitions wd ON wd.id = j.workflow_id
  LEFT JOIN workflow_steps ws ON ws.workflow_id = j.workflow_id
                             AND ws.step_number = j.current_step
 WHERE j.status = ANY(%(statuses)s::text[])
   AND (%(workflow)s::text IS NULL OR wd.workflow_code = %(workflow)s::text)
   AND (%(step_number)s::int IS NULL OR j.current_step = %(step_number)s::int)
   AND (%(step_name)s::text IS NULL OR lower(ws.step_name) = lower(%(step_name)s::text)
        OR lower(ws.action) = lower(%(step_name)s::text))
   AND (%(error_class)s::text IS NULL OR j.error_class = %(error_class)s::text)
   AND (%(since)s::timestamptz IS NULL
        OR CASE WHEN %(by_failure)s THEN j.completed_at ELSE j.submitted_at END
           >= %(since)s::timestamptz)
   AND (%(until)s::timestamptz IS NULL
        OR CASE WHEN %(by_failure)s THEN j.completed_at ELSE j.submitted_at END
           < %(until)s::timestamptz)
   AND (%(submitted_by)s::text IS NULL OR j.submitted_by = %(submitted_by)s::text)
 ORDER BY j.id;

-- name: jobs_lock_for_bulk
-- Lock one batch of a bulk retry or cancel: those of %(job_ids)s still in %(statuses)s, skipping rows another transaction holds.
-- SKIP LOCKED: a job that a concurrent `mediaq retry JOB` (or a worker) holds is left to
-- it and counted as skipped, not waited for; the status re-check under the lock is what
-- makes a second run, or a job retried meanwhile, retry nothing twice. The moves
-- themselves are job_retry and job_cancel, one job at a time, so the state machine's
-- statements stay the only ones that write a status.
SELECT id, job_code, retry_count
  FROM workflow_jobs
 WHERE id = ANY(%(job_ids)s::bigint[]) AND status = ANY(%(statuses)s::text[])
 ORDER BY id
   FOR UPDATE SKIP LOCKED;

-- name: job_set_priority_if_waiting
-- Change the priority of a waiting (pending, queued or paused) job, of its tasks not yet
-- running and of its media_queue row.
-- The after-update trigger copies the priority to media_queue only on a status change, so
-- the mirror row (seed dashboards read it) is updated here, in the same statement.
WITH before AS (
    SELECT id, priority FROM workflow_jobs
     WHERE id = %(job_id)s AND status IN ('pending', 'queued', 'paused')
       FOR UPDATE
), job AS (
    UPDATE workflow_jobs j
       SET priority = %(priority)s, updated_at = now(), log = job_log_append(j.log, %(log_line)s)
      FROM before
     WHERE j.id = before.id AND j.status IN ('pending', 'queued', 'paused')
    RETURNING j.id, j.status, j.priority, before.priority AS previous_priority
), mirror AS (
    UPDATE media_queue mq SET priority = job.priority
      FROM job
     WHERE mq.job_id = job.id
), tasks AS (  -- the claim orders ready tasks by their copy of the job's priority
    UPDATE job_tasks t SET priority = job.priority
      FROM job
     WHERE t.job_id = job.id AND t.state IN ('waiting', 'ready')
)
SELECT status, priority, previous_priority FROM job;

-- name: job_status_transitions
-- The moves a job's status may make (mediaq.states.mermaid draws them; a trigger refuses others).
SELECT from_status, to_status, description FROM mediaq.job_status_transitions
 ORDER BY from_status, to_status;

-- name: queue_set_paused
-- Pause or resume a whole queue.
INSERT INTO queues (queue_name, paused, paused_at, paused_by)
VALUES (%(queue_name)s, %(paused)s, CASE WHEN %(paused)s THEN now() END, %(by)s)
ON CONFLICT (queue_name) DO UPDATE
   SET paused = EXCLUDED.paused, paused_at = EXCLUDED.paused_at, paused_by = EXCLUDED.paused_by;

-- name: queue_resumed_wakeup
-- Wake workers after a queue is resumed.
SELECT pg_notify('mediaq_jobs', 'resume');

-- name: jobs_dashboard
-- The job status dashboard (optionally filtered, most recent first within a status).
SELECT job_code, workflow_name, status, current_step, total_steps, progress_percent, priority,
       submitted_by, submitted_at, started_at, completed_at, error_message, waiting_reason
  FROM mediaq.job_status_dashboard
 WHERE (%(status)s::text IS NULL OR status = %(status)s)
   AND (%(workflow_code)s::text IS NULL OR workflow_code = %(workflow_code)s)
 ORDER BY status_rank, priority DESC, job_id
 LIMIT %(limit)s;

-- name: queue_monitor
-- The processing queue monitor, with each queue's pause switch.
SELECT * FROM mediaq.queue_monitor;

-- name: queue_depth
-- Per resource category: waiting, eligible and running jobs (what autoscalers read).
SELECT * FROM mediaq.queue_depth ORDER BY resource_category;

-- name: queues_paused
-- Queues paused by operators (they may hold no jobs right now).
SELECT queue_name, paused_at, paused_by FROM queues WHERE paused ORDER BY queue_name;

-- name: job_stats
-- The stats endpoint (GET /api/media/jobs/stats): counts per status, VRAM, average processing time, jobs per workflow.
SELECT * FROM mediaq.job_stats;

-- ===========================================================================
-- Workflows
-- ===========================================================================

-- name: workflow_current
-- The current version of a workflow.
SELECT * FROM workflow_definitions WHERE workflow_code = %(workflow_code)s AND is_current;

-- name: workflow_retire_current
-- Make the current version of a workflow an older one (jobs keep pointing at it).
UPDATE workflow_definitions SET is_current = FALSE
 WHERE workflow_code = %(workflow_code)s AND is_current
RETURNING version;

-- name: workflow_insert
-- A new version of a workflow.
INSERT INTO workflow_definitions
    (workflow_code, workflow_name, description, workflow_type, input_types, output_types,
     steps_json, default_priority, timeout_minutes, retry_count, is_active, created_by,
     version, resource_category, vram_required, queue_name, sla_minutes, notify,
     dedupe_window_seconds, fallback_category)
VALUES
    (%(workflow_code)s, %(workflow_name)s, %(description)s, %(workflow_type)s, %(input_types)s,
     %(output_types)s, %(steps_json)s, %(default_priority)s, %(timeout_minutes)s,
     %(retry_count)s, %(is_active)s, %(created_by)s, %(version)s, %(resource_category)s,
     %(vram_required)s, %(queue_name)s, %(sla_minutes)s, %(notify)s,
     %(dedupe_window_seconds)s, %(fallback_category)s)
RETURNING id;

-- name: workflow_step_insert
-- One step of a workflow version.
INSERT INTO workflow_steps
    (workflow_id, step_number, step_name, step_type, action, parameters, required_inputs,
     expected_outputs, timeout_seconds, on_failure, sla_seconds, needs, when_expr, for_each,
     resource_category, vram_required, fallback_category, fuse)
VALUES
    (%(workflow_id)s, %(step_number)s, %(step_name)s, %(step_type)s, %(action)s, %(parameters)s,
     %(required_inputs)s, %(expected_outputs)s, %(timeout_seconds)s, %(on_failure)s,
     %(sla_seconds)s, %(needs)s, %(when_expr)s, %(for_each)s, %(resource_category)s,
     %(vram_required)s, %(fallback_category)s, %(fuse)s);

-- name: workflows_list
-- Current workflows with their step counts and job counts.
SELECT wd.workflow_code, wd.workflow_name, wd.workflow_type, wd.version, wd.is_active,
       wd.resource_category, wd.vram_required, wd.default_priority, wd.queue_name,
       (SELECT count(*) FROM workflow_steps ws WHERE ws.workflow_id = wd.id) AS steps,
       (SELECT count(*) FROM workflow_jobs wj
          JOIN workflow_definitions v ON v.id = wj.workflow_id
         WHERE v.workflow_code = wd.workflow_code) AS jobs
  FROM workflow_definitions wd
 WHERE wd.is_current
 ORDER BY wd.workflow_code;

-- name: workflow_set_active
-- Enable or disable the current version of a workflow.
UPDATE workflow_definitions SET is_active = %(active)s
 WHERE workflow_code = %(workflow_code)s AND is_current
RETURNING id;

-- ===========================================================================
-- Submission
-- ===========================================================================

-- name: job_submit
-- Create a job through the SQL API (or get the one with the same idempotency key).
SELECT * FROM mediaq.submit_job(
    %(workflow_code)s, %(input_file_path)s, %(priority)s, %(params)s, %(metadata)s,
    %(notify)s::text[], %(idempotency_key)s, %(submitted_by)s);

-- name: jobs_submit_batch
-- Many jobs of one workflow in one statement (mediaq.submit.submit_batch): one row per
-- input path, in order, with its size; the engine's insert triggers fire as for any job.
-- No row at all when the workflow is unknown or disabled (the caller checks first).
INSERT INTO mediaq.workflow_jobs (workflow_id, input_file_path, input_bytes, priority,
                                  params, submitted_by)
SELECT wd.id, t.path, t.size, %(priority)s, %(params)s, %(submitted_by)s
  FROM mediaq.workflow_definitions wd,
       unnest(%(paths)s::text[], %(sizes)s::bigint[]) WITH ORDINALITY AS t (path, size, n)
 WHERE wd.workflow_code = %(workflow_code)s AND wd.is_current AND wd.is_active
 ORDER BY t.n
RETURNING job_code;

-- name: workflow_submittable
-- Whether a workflow can take batch submissions: current version exists, is active,
-- and does not de-duplicate (de-duplicating workflows go through submit() one by one).
SELECT is_active, dedupe_window_seconds FROM mediaq.workflow_definitions
 WHERE workflow_code = %(workflow_code)s AND is_current;

-- name: job_set_input_bytes
-- A new job's input size, known to the submitting process (for size-scaled estimates).
UPDATE mediaq.workflow_jobs SET input_bytes = %(input_bytes)s
 WHERE id = %(job_id)s AND input_bytes IS NULL;

-- name: workflow_steps_full
-- Every column of a workflow version's steps (for export).
SELECT * FROM workflow_steps WHERE workflow_id = %(workflow_id)s ORDER BY step_number, id;

-- ===========================================================================
-- Plumbing
-- ===========================================================================

-- name: listen_jobs
-- Workers wake on this channel for events every worker must hear (a resumed queue);
-- work and freed slots go to the channels of wake_channels.
LISTEN mediaq_jobs;

-- name: wake_channels
-- The channels a worker listens on while it has room in a category (wake_channel()):
-- new or requeued work of the category, and a slot of it freed on this host.
SELECT c AS category, wake_channel(c) AS work, wake_channel(c, %(host)s) AS slot
  FROM unnest(%(categories)s::text[]) AS c;

-- name: database_exists
-- Does the embedded server have the mediaq database yet?
SELECT 1 AS found FROM pg_database WHERE datname = %(name)s;

-- name: jobs_ended_count
-- How many of the given jobs have reached a final state (the demo's progress bar).
SELECT count(*) AS n FROM workflow_jobs
 WHERE job_code = ANY (%(job_codes)s) AND status IN ('completed', 'failed', 'cancelled');

-- name: submit_savepoint
-- mediaq.submit() inside the caller's transaction: a refusal must not abort it.
SAVEPOINT mediaq_submit;

-- name: submit_rollback_to_savepoint
-- Undo a refused submission, keeping the caller's transaction.
ROLLBACK TO SAVEPOINT mediaq_submit;

-- name: submit_release_savepoint
-- Keep an accepted submission in the caller's transaction.
RELEASE SAVEPOINT mediaq_submit;

-- ===========================================================================
-- Notifications: the outbox delivery loop (mediaq/notify/notifier.py)
-- A notifier holds a row as "sending" until locked_until; every write about a
-- row it holds is fenced by locked_by, so a notifier whose hold ran out (and whose
-- row another notifier took) changes nothing.
-- ===========================================================================

-- name: listen_notifications
-- Wake up when the outbox gets rows.
LISTEN mediaq_notifications;

-- name: notifications_reclaim_expired
-- Rows held by a notifier that died: due again, the interrupted attempt counted.
UPDATE mediaq.workflow_notifications
   SET status = 'pending', locked_by = NULL, locked_until = NULL, next_attempt_at = now(),
       error_message = coalesce(error_message, 'the notifier delivering it stopped')
 WHERE status = 'sending' AND locked_until < now();

-- name: notifications_claim
-- Take up to %(limit)s due rows whose endpoint is not held back by an open breaker.
WITH picked AS (
    SELECT n.id
      FROM mediaq.workflow_notifications n
     WHERE n.status = 'pending' AND n.next_attempt_at <= now()
       AND NOT EXISTS (SELECT 1 FROM mediaq.notification_endpoints e
                        WHERE e.endpoint = n.endpoint AND e.open_until > now())
     ORDER BY n.next_attempt_at, n.id
     LIMIT %(limit)s
       FOR UPDATE OF n SKIP LOCKED
)
UPDATE mediaq.workflow_notifications n
   SET status = 'sending', locked_by = %(notifier)s,
       locked_until = now() + make_interval(secs => %(hold_s)s),
       attempts = n.attempts + 1, last_attempt_at = now()
  FROM picked
 WHERE n.id = picked.id
RETURNING n.id, n.event_id::text AS event_id, n.notification_type, n.recipient, n.channel,
          n.endpoint, n.subject, n.payload, n.attempts,
          (SELECT e.state FROM mediaq.notification_endpoints e
            WHERE e.endpoint = n.endpoint) AS breaker_state;

-- name: notification_sent
-- A delivery succeeded.
UPDATE mediaq.workflow_notifications
   SET status = 'sent', sent_at = now(), error_message = NULL,
       last_status_code = %(status_code)s, locked_by = NULL, locked_until = NULL
 WHERE id = %(id)s AND status = 'sending' AND locked_by = %(notifier)s;

-- name: notification_retry_later
-- A delivery failed in a way worth retrying: due again after the back-off.
UPDATE mediaq.workflow_notifications
   SET status = 'pending', next_attempt_at = now() + make_interval(secs => %(delay_s)s),
       error_message = %(error)s, last_status_code = %(status_code)s,
       locked_by = NULL, locked_until = NULL
 WHERE id = %(id)s AND status = 'sending' AND locked_by = %(notifier)s;

-- name: notification_failed
-- A delivery failed for good.
UPDATE mediaq.workflow_notifications
   SET status = 'failed', error_message = %(error)s, last_status_code = %(status_code)s,
       locked_by = NULL, locked_until = NULL
 WHERE id = %(id)s AND status = 'sending' AND locked_by = %(notifier)s;

-- name: notification_release
-- Hand an untried row back (its endpoint's breaker is being probed by another row).
UPDATE mediaq.workflow_notifications
   SET status = 'pending', attempts = attempts - 1, locked_by = NULL, locked_until = NULL
 WHERE id = %(id)s AND status = 'sending' AND locked_by = %(notifier)s;

-- name: endpoint_take_probe
-- An open breaker whose cool-down is over lets exactly one delivery through.
UPDATE mediaq.notification_endpoints
   SET state = 'half_open', open_until = now() + make_interval(secs => %(hold_s)s),
       updated_at = now()
 WHERE endpoint = %(endpoint)s AND state IN ('open', 'half_open') AND open_until <= now()
RETURNING endpoint;

-- name: endpoint_succeeded
-- The endpoint answered: close its breaker (a no-op for a healthy endpoint).
UPDATE mediaq.notification_endpoints
   SET state = 'closed', consecutive_failures = 0, times_opened = 0, open_until = NULL,
       last_success_at = now(), updated_at = now()
 WHERE endpoint = %(endpoint)s AND (state <> 'closed' OR consecutive_failures > 0);

-- name: endpoint_failed
-- One more failure: the breaker opens at the threshold, or at once after a failed
-- probe, for a cool-down that doubles each time it opens in a row (up to 64x). A
-- failure recorded while it is already open (a delivery that was in flight) neither
-- opens it again nor lengthens the cool-down.
INSERT INTO mediaq.notification_endpoints AS e
       (endpoint, state, consecutive_failures, times_opened, open_until, last_error,
        last_failure_at)
VALUES (%(endpoint)s,
        CASE WHEN %(threshold)s <= 1 THEN 'open' ELSE 'closed' END,
        1,
        CASE WHEN %(threshold)s <= 1 THEN 1 ELSE 0 END,
        CASE WHEN %(threshold)s <= 1 THEN now() + make_interval(secs => %(cooldown_s)s) END,
        %(error)s, now())
ON CONFLICT (endpoint) DO UPDATE SET
    consecutive_failures = e.consecutive_failures + 1,
    last_error = excluded.last_error,
    last_failure_at = now(),
    updated_at = now(),
    state = CASE
        WHEN e.state = 'disabled' THEN 'disabled'
        WHEN e.state = 'half_open' OR e.consecutive_failures + 1 >= %(threshold)s THEN 'open'
        ELSE e.state END,
    times_opened = CASE
        WHEN e.state = 'half_open'
             OR (e.state = 'closed' AND e.consecutive_failures + 1 >= %(threshold)s)
            THEN e.times_opened + 1
        ELSE e.times_opened END,
    open_until = CASE
        WHEN e.state = 'half_open'
             OR (e.state = 'closed' AND e.consecutive_failures + 1 >= %(threshold)s)
            THEN now() + make_interval(secs => %(cooldown_s)s * 2 ^ least(e.times_opened, 6))
        ELSE e.open_until END
RETURNING state, consecutive_failures, open_until;

-- name: endpoint_disabled
-- The endpoint answered 410 Gone: stop delivering to it until an operator retries.
INSERT INTO mediaq.notification_endpoints AS e (endpoint, state, last_error, last_failure_at)
VALUES (%(endpoint)s, 'disabled', %(error)s, now())
ON CONFLICT (endpoint) DO UPDATE SET
    state = 'disabled', open_until = NULL, last_error = excluded.last_error,
    last_failure_at = now(), updated_at = now();

-- name: notifications_fail_endpoint
-- Waiting rows for a disabled endpoint fail with the reason.
UPDATE mediaq.workflow_notifications
   SET status = 'failed', error_message = %(error)s
 WHERE endpoint = %(endpoint)s AND status = 'pending';

-- name: notifications_next_due
-- Seconds until the next pending row is due (NULL: none); a row whose endpoint's
-- breaker is open is due when the breaker lets a probe through.
SELECT extract(epoch FROM min(greatest(n.next_attempt_at, e.open_until)) - now())::float
       AS wait_s
  FROM mediaq.workflow_notifications n
  LEFT JOIN mediaq.notification_endpoints e ON e.endpoint = n.endpoint
 WHERE n.status = 'pending';

-- name: notifications_list
-- The outbox, newest first, for `mediaq notifications` and the API.
SELECT n.id, j.job_code, n.notification_type, n.channel, n.recipient, n.endpoint, n.status,
       n.attempts, n.last_status_code, n.error_message, n.created_at, n.sent_at,
       n.next_attempt_at, n.event_id::text
  FROM mediaq.workflow_notifications n
  JOIN mediaq.workflow_jobs j ON j.id = n.job_id
 WHERE (%(status)s::text IS NULL OR n.status = %(status)s)
   AND (%(job_code)s::text IS NULL OR j.job_code = %(job_code)s)
 ORDER BY n.id DESC
 LIMIT %(limit)s;

-- name: notification_retry
-- An operator sends a failed (or waiting) row again now; the event id stays.
UPDATE mediaq.workflow_notifications
   SET status = 'pending', next_attempt_at = now(), attempts = 0
 WHERE id = %(id)s AND status IN ('failed', 'pending')
RETURNING id, endpoint;

-- name: endpoint_reset
-- An operator closes an endpoint's breaker (after a 410, or to probe now).
UPDATE mediaq.notification_endpoints
   SET state = 'closed', consecutive_failures = 0, times_opened = 0, open_until = NULL,
       updated_at = now()
 WHERE endpoint = %(endpoint)s AND state <> 'closed';

-- name: notification_counts
-- Outbox rows by status.
SELECT status, count(*)::int AS count FROM mediaq.workflow_notifications GROUP BY status;

-- name: endpoints_unhealthy
-- Breakers that are not closed, or closed with recent failures.
SELECT endpoint, state, consecutive_failures, open_until, last_error, last_failure_at
  FROM mediaq.notification_endpoints
 WHERE state <> 'closed' OR consecutive_failures > 0
 ORDER BY endpoint;

-- ===========================================================================
-- Content de-duplication (workflows with dedupe_window_seconds)
-- ===========================================================================

-- name: workflow_dedupe_window
-- Whether the current version of a workflow de-duplicates, and for how long.
SELECT version, dedupe_window_seconds FROM mediaq.workflow_definitions
 WHERE workflow_code = %(workflow_code)s AND is_current;

-- name: dedupe_claim
-- Take a de-duplication key: a new key, or one whose job is older than the window.
-- No row back: an identical submission inside the window holds it (a concurrent one
-- is waited for, so this cannot race).
INSERT INTO mediaq.job_dedupe_keys AS k (dedupe_key) VALUES (%(key)s)
ON CONFLICT (dedupe_key) DO UPDATE SET job_id = NULL, claimed_at = now()
 WHERE k.claimed_at < now() - make_interval(secs => %(window_s)s)
RETURNING k.dedupe_key;

-- name: dedupe_holder
-- The job an identical submission inside the window created.
SELECT j.* FROM mediaq.job_dedupe_keys k JOIN mediaq.workflow_jobs j ON j.id = k.job_id
 WHERE k.dedupe_key = %(key)s;

-- name: dedupe_attach
-- The new job holds the key it claimed, and records its input's content hash.
WITH attached AS (
    UPDATE mediaq.job_dedupe_keys SET job_id = %(job_id)s WHERE dedupe_key = %(key)s)
UPDATE mediaq.workflow_jobs SET content_hash = %(content_hash)s WHERE id = %(job_id)s
RETURNING *;

-- ===========================================================================
-- ETAs from history
-- ===========================================================================

-- name: job_eta
-- A waiting or running job's estimated start and finish, or why no live worker can start it
-- (no row once it is over).
SELECT estimated_seconds, estimated_start, estimated_finish, eta_blocked_reason
  FROM mediaq.job_etas WHERE job_id = %(job_id)s;

-- name: eta_accuracy
-- How far the estimates recorded at start were from what completed jobs took, per
-- workflow: the median of |actual - estimate| / actual.
SELECT wd.workflow_code, count(*) AS jobs,
       round(percentile_cont(0.5) WITHIN GROUP (
           ORDER BY abs(extract(epoch FROM j.completed_at - j.started_at) - e.estimated_seconds)
                    / nullif(extract(epoch FROM j.completed_at - j.started_at), 0))::numeric,
             3)::double precision AS median_abs_error
  FROM mediaq.job_estimates e
  JOIN mediaq.workflow_jobs j ON j.id = e.job_id
  JOIN mediaq.workflow_definitions wd ON wd.id = j.workflow_id
 WHERE j.status = 'completed'
   AND (%(since)s::timestamptz IS NULL OR j.completed_at >= %(since)s::timestamptz)
 GROUP BY wd.workflow_code ORDER BY wd.workflow_code;

-- ===========================================================================
-- Autoscaling (mediaq worker --autoscale) and external autoscalers
-- ===========================================================================

-- name: autoscale_demand
-- What a machine's supervisor scales on: jobs of its categories and queues that could
-- start now (not retrying later, not in a paused queue, not waiting for VRAM) and
-- jobs running on this machine.
SELECT (SELECT count(*) FROM mediaq.workflow_jobs j
         WHERE j.status IN ('pending', 'queued')
           AND j.resource_category = ANY (%(categories)s::text[])
           AND (j.retry_after IS NULL OR j.retry_after <= now())
           AND j.waiting_reason IS NULL
           AND (%(queues)s::text[] IS NULL OR j.queue_name = ANY (%(queues)s::text[]))
           AND NOT EXISTS (SELECT 1 FROM mediaq.queues q
                            WHERE q.queue_name = j.queue_name AND q.paused)) AS waiting,
       (SELECT count(*) FROM mediaq.workflow_jobs j
          JOIN mediaq.workers w ON w.worker_id = j.worker_id
         WHERE j.status = 'processing' AND w.host = %(host)s
           AND j.resource_category = ANY (%(categories)s::text[])) AS running;

-- ===========================================================================
-- Retention: pruning finished jobs (mediaq/prune.py)
-- ===========================================================================

-- name: prune_cutoff
-- The completion time before which a finished job is old enough to prune (the server's clock).
SELECT now() - %(older_than)s::interval AS cutoff;

-- name: jobs_prune_preview
-- What a prune would remove, counted without locking anything (a dry run).
WITH doomed AS (
    SELECT j.id, j.status
      FROM workflow_jobs j
     WHERE j.status = ANY (%(statuses)s::text[])
       AND j.completed_at < %(cutoff)s
       AND NOT EXISTS (SELECT 1 FROM workflow_notifications n
                        WHERE n.job_id = j.id AND n.status IN ('pending', 'sending'))
)
SELECT (SELECT count(*) FROM doomed) AS jobs,
       (SELECT count(*) FROM doomed WHERE status = 'completed') AS completed,
       (SELECT count(*) FROM doomed WHERE status = 'failed') AS failed,
       (SELECT count(*) FROM doomed WHERE status = 'cancelled') AS cancelled,
       (SELECT count(*) FROM step_executions s JOIN doomed d ON d.id = s.job_id) AS steps,
       (SELECT count(*) FROM media_workflow_events e JOIN doomed d ON d.id = e.workflow_id)
           AS events,
       (SELECT count(*) FROM workflow_notifications n JOIN doomed d ON d.id = n.job_id)
           AS notifications;

-- name: jobs_prune_codes
-- The codes of the jobs a prune would remove now, read without locking (a dry run that
-- lists their output folders).
SELECT j.job_code
  FROM workflow_jobs j
 WHERE j.status = ANY (%(statuses)s::text[])
   AND j.completed_at < %(cutoff)s
   AND NOT EXISTS (SELECT 1 FROM workflow_notifications n
                    WHERE n.job_id = j.id AND n.status IN ('pending', 'sending'))
 ORDER BY j.job_code;

-- name: jobs_prune_lock_batch
-- Lock the next batch of finished jobs to prune; rows another session holds (an operator's
-- retry, another pruner) are skipped, never waited for. A job whose notifications are
-- still to be delivered (pending, sending) is kept until they are. No ORDER BY: no index
-- orders finished jobs by completed_at, and a sort would read every candidate per batch.
SELECT j.id, j.job_code
  FROM workflow_jobs j
 WHERE j.status = ANY (%(statuses)s::text[])
   AND j.completed_at < %(cutoff)s
   AND NOT EXISTS (SELECT 1 FROM workflow_notifications n
                    WHERE n.job_id = j.id AND n.status IN ('pending', 'sending'))
 LIMIT %(batch)s
   FOR UPDATE OF j SKIP LOCKED;

-- name: jobs_prune_archive_rows
-- The locked jobs about to be pruned, each as one JSON document with its step executions.
SELECT to_jsonb(j) || jsonb_build_object('step_executions', coalesce(
           (SELECT jsonb_agg(to_jsonb(s) ORDER BY s.id)
              FROM step_executions s WHERE s.job_id = j.id), '[]'::jsonb)) AS record
  FROM workflow_jobs j
 WHERE j.id = ANY (%(ids)s::bigint[])
 ORDER BY j.completed_at, j.id;

-- name: jobs_prune_delete
-- Delete locked jobs: their stage events (no foreign key) here, the rest (step executions,
-- notifications, estimates, media_queue and dedupe rows) by ON DELETE CASCADE; the counts
-- are read from the snapshot before the deletes.
WITH events AS (
    DELETE FROM media_workflow_events WHERE workflow_id = ANY (%(ids)s::bigint[])
    RETURNING 1
), jobs AS (
    DELETE FROM workflow_jobs WHERE id = ANY (%(ids)s::bigint[])
    RETURNING id
)
SELECT (SELECT count(*) FROM jobs) AS jobs,
       (SELECT count(*) FROM step_executions WHERE job_id = ANY (%(ids)s::bigint[])) AS steps,
       (SELECT count(*) FROM events) AS events,
       (SELECT count(*) FROM workflow_notifications WHERE job_id = ANY (%(ids)s::bigint[]))
           AS notifications;

-- name: prune_take_turn
-- Whether this worker prunes now: at most once per interval for the whole deployment, the
-- last run's time kept in settings (a concurrent caller waits on the row, then finds it new).
INSERT INTO settings (key, value) VALUES ('maintenance_last_prune', to_jsonb(now()))
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value
 WHERE (settings.value #>> '{}')::timestamptz < now() - make_interval(secs => %(every_seconds)s)
RETURNING key;

-- name: prune_try_lock
-- Hold the deployment's pruning lock (session level) if no other session does.
SELECT pg_try_advisory_lock(%(key)s) AS locked;

-- name: prune_unlock
-- Release the pruning lock.
SELECT pg_advisory_unlock(%(key)s) AS unlocked;

-- name: staging_jobs_live
-- Of these job codes, the ones whose job exists and is not finished, or holds committed
-- outputs not yet published (their staging is live).
SELECT job_code FROM workflow_jobs j
 WHERE job_code = ANY (%(codes)s::text[])
   AND (status NOT IN (SELECT status FROM job_statuses WHERE terminal)
        OR EXISTS (SELECT FROM publications p
                    WHERE p.job_id = j.id AND p.published_at IS NULL));

-- ===========================================================================
-- Operations that survive a bad day (issue 25): circuit breakers on actions,
-- storage health of workers (mediaq/worker/breakers.py, storage_health.py)
-- ===========================================================================

-- name: breaker_record_failure
-- Count a transient failure of an action on this host, in its host's breaker and in the
-- action-wide one (host ''); a window that has run out starts again at this failure.
INSERT INTO action_breakers AS b (action, host, failures, failing_hosts, last_error)
VALUES (%(action)s, '', 1, ARRAY[%(host)s::text], %(error)s),
       (%(action)s, %(host)s, 1, ARRAY[%(host)s::text], %(error)s)
ON CONFLICT (action, host) DO UPDATE
   SET failures = CASE WHEN b.window_started_at
                            < now() - make_interval(secs => %(window_seconds)s)
                       THEN 1 ELSE b.failures + 1 END,
       failing_hosts = CASE WHEN b.window_started_at
                                 < now() - make_interval(secs => %(window_seconds)s)
                                 OR b.failing_hosts IS NULL
                            THEN ARRAY[%(host)s::text]
                            WHEN %(host)s::text = ANY (b.failing_hosts) THEN b.failing_hosts
                            ELSE b.failing_hosts || %(host)s::text END,
       window_started_at = CASE WHEN b.window_started_at
                                     < now() - make_interval(secs => %(window_seconds)s)
                                THEN now() ELSE b.window_started_at END,
       last_error = EXCLUDED.last_error, updated_at = now();

-- name: breakers_trip
-- Open this action's breakers that reached the threshold (the action-wide one only with
-- failures from two hosts or more), and re-open a half-open one whose probe failed.
UPDATE action_breakers
   SET state = 'open', opened_at = now(), probe_job_id = NULL,
       reopen_at = now() + make_interval(secs => %(cooldown_seconds)s),
       times_opened = times_opened + 1, updated_at = now()
 WHERE action = %(action)s AND host IN ('', %(host)s)
   AND (state = 'half_open'
        OR (state = 'closed' AND failures >= %(threshold)s
            AND (host <> '' OR cardinality(failing_hosts) >= 2)))
RETURNING action, host, failures, reopen_at;

-- name: breakers_blocking
-- The breakers that stand before a step of this action on this host (locked: the probe
-- is taken by one job only): open or half-open, with whether their wait is over.
SELECT action, host, state, failures, last_error, reopen_at, probe_job_id,
       reopen_at <= now() AS due
  FROM action_breakers
 WHERE action = %(action)s AND host IN ('', %(host)s) AND state <> 'closed'
 ORDER BY host
   FOR UPDATE;

-- name: breaker_take_probe
-- Let one job through a breaker whose cool-down is over (half-open); others wait until
-- the probe's window ends (then another job may probe, if this one never reported).
UPDATE action_breakers
   SET state = 'half_open', probe_job_id = %(job_id)s,
       reopen_at = now() + make_interval(secs => %(probe_seconds)s), updated_at = now()
 WHERE action = %(action)s AND host = %(host)s AND state <> 'closed';

-- name: breakers_close
-- Close this action's breakers on this host and the action-wide one (a success, or an
-- operator: host NULL closes the action's breakers on every host).
UPDATE action_breakers
   SET state = 'closed', failures = 0, failing_hosts = '{}', window_started_at = now(),
       reopen_at = NULL, probe_job_id = NULL, updated_at = now()
 WHERE action = %(action)s AND state <> 'closed'
   AND (%(host)s::text IS NULL OR host IN ('', %(host)s::text))
RETURNING action, host;

-- name: jobs_release_breaker_waits
-- Jobs that wait for a breaker of this action may start now that it closed.
UPDATE workflow_jobs
   SET retry_after = now(), waiting_reason = NULL, updated_at = now()
 WHERE status IN ('pending', 'queued')
   AND left(waiting_reason, length(%(prefix)s)) = %(prefix)s;

-- name: breakers_list
-- Every breaker that is not closed, or (all) every breaker, for operators.
SELECT action, nullif(host, '') AS host, state, failures, failing_hosts, last_error,
       opened_at, reopen_at, probe_job_id, times_opened, updated_at
  FROM action_breakers
 WHERE %(all)s OR state <> 'closed'
 ORDER BY action, host;

-- name: job_hand_back_waiting
-- Give running tasks back without spending a retry: a breaker (or this host's storage)
-- stops their step; the job is not claimed again before %(until)s, and says why.
WITH mine AS (
    UPDATE job_tasks t
       -- held by the job's retry_after (which closing the breaker clears)
       SET state = 'ready', lease_expires_at = NULL
     WHERE t.id = ANY (%(task_ids)s) AND t.job_id = %(job_id)s AND t.worker_id = %(worker_id)s
       AND t.state = 'running'
       AND task_owned(%(job_id)s, %(task_ids)s, %(task_attempts)s, %(worker_id)s)
), others AS (
    SELECT EXISTS (SELECT 1 FROM job_tasks o
                    WHERE o.job_id = %(job_id)s AND o.state = 'running'
                      AND o.id <> ALL (%(task_ids)s)) AS busy
)
UPDATE workflow_jobs
   SET status = CASE WHEN others.busy THEN status
                     ELSE after_attempt(cancel_requested, pause_requested) END,
       retry_after = %(until)s, waiting_reason = %(reason)s,
       completed_at = CASE WHEN cancel_requested AND NOT others.busy THEN now() END,
       error_class = CASE WHEN cancel_requested AND NOT others.busy THEN 'cancelled'
                          ELSE error_class END,
       cancel_requested = others.busy AND cancel_requested,
       pause_requested = others.busy AND pause_requested,
       progress_stage = CASE WHEN others.busy THEN progress_stage END,
       lease_expires_at = CASE WHEN others.busy THEN lease_expires_at END,
       updated_at = now(), log = job_log_append(log, %(log_line)s)
  FROM others
 WHERE id = %(job_id)s AND status = 'processing'
   AND task_owned(id, %(task_ids)s, %(task_attempts)s, %(worker_id)s)
RETURNING status;

-- name: worker_set_claim_problem
-- Show why this worker does not claim (its storage), or that it is healthy again (NULL).
UPDATE workers SET claim_problem = %(problem)s
 WHERE worker_id = %(worker_id)s AND claim_problem IS DISTINCT FROM %(problem)s;

-- name: jobs_mark_waiting_storage
-- Tell operators why runnable jobs of this worker's categories are not starting here:
-- only rows without a reason yet (another host's reason stands), at most 100.
UPDATE workflow_jobs j
   SET status = 'queued', waiting_reason = %(reason)s, updated_at = now()
 WHERE j.id IN (SELECT id FROM workflow_jobs
                 WHERE status IN ('pending', 'queued')
                   AND resource_category = ANY (%(categories)s::text[])
                   AND (retry_after IS NULL OR retry_after <= now())
                   AND waiting_reason IS NULL
                 ORDER BY priority DESC, id
                 LIMIT 100
                   FOR UPDATE SKIP LOCKED);

-- name: jobs_clear_waiting_storage
-- This host's storage is healthy again: clear the reasons it gave.
UPDATE workflow_jobs
   SET waiting_reason = NULL, updated_at = now()
 WHERE status IN ('pending', 'queued') AND waiting_reason = %(reason)s;

-- name: workers_claim_problems
-- Live workers that do not claim because of their storage.
SELECT worker_id, host, claim_problem, heartbeat_at
  FROM workers
 WHERE status <> 'stopped' AND claim_problem IS NOT NULL
 ORDER BY host, worker_id;

-- name: workers_list
-- Every worker not stopped long ago, with what it can run and why it may not claim.
SELECT worker_id, host, pid, status, categories, started_at, heartbeat_at, version,
       claim_problem
  FROM workers
 WHERE status <> 'stopped' OR stopped_at > now() - interval '1 day'
 ORDER BY host, worker_id;
-- name: storage_attempts_live
-- Of these job codes, (job_code, attempt) of those running now: an object-storage staging
-- prefix <code>.a<attempt>.… of any other attempt belongs to a dead attempt.
-- A committed step's staged objects not yet published are live too (publications).
SELECT job_code, attempt FROM workflow_jobs
 WHERE job_code = ANY (%(codes)s::text[])
   AND status = 'processing'
UNION
SELECT j.job_code, p.job_attempt FROM publications p JOIN workflow_jobs j ON j.id = p.job_id
 WHERE j.job_code = ANY (%(codes)s::text[]) AND p.published_at IS NULL;

-- ===========================================================================
-- Hosts paused by an operator (mediaq/hosts.py; read by each worker's admission watch)
-- ===========================================================================

-- name: host_pause
-- Pause a host's claims (its running jobs go on); the host must be known.
UPDATE worker_hosts SET paused_by = %(by)s, paused_at = now(), updated_at = now()
 WHERE host = %(host)s
RETURNING host, paused_by, paused_at;

-- name: host_resume
-- Let a paused host claim again.
UPDATE worker_hosts SET paused_by = NULL, paused_at = NULL, updated_at = now()
 WHERE host = %(host)s
RETURNING host;

-- name: host_paused
-- Who paused this host's claims, and when (no row or NULL: not paused).
SELECT paused_by, paused_at FROM worker_hosts WHERE host = %(host)s;

-- ===========================================================================
-- Publications: outputs made public after their step's commit (issues 19, 20;
-- mediaq/worker/publications.py)
-- ===========================================================================

-- name: publications_record
-- What a step's commit makes its outputs (in the commit, the job row locked): each staged
-- copy and its final location, size and SHA-256; their ids, in the order given.
-- The committing worker holds them (claimed) while it moves them after the commit.
INSERT INTO publications (job_id, execution_id, job_attempt, staged, final, size_bytes,
                          sha256, claimed_by, claimed_until)
SELECT %(job_id)s, %(execution_id)s, %(job_attempt)s, p.staged, p.final, p.size_bytes,
       p.sha256, %(worker_id)s, now() + make_interval(secs => %(claim_seconds)s)
  FROM unnest(%(staged)s::text[], %(final)s::text[], %(size_bytes)s::bigint[],
              %(sha256)s::text[]) WITH ORDINALITY AS p (staged, final, size_bytes, sha256, n)
 ORDER BY p.n
RETURNING id;

-- name: publications_done
-- These publications' files are at their final locations now (a second publisher of the
-- same one changes nothing).
UPDATE publications SET published_at = now()
 WHERE id = ANY (%(ids)s::bigint[]) AND published_at IS NULL;

-- name: publications_pending_of_job
-- A job's committed outputs not yet at their final locations (a task about to read them
-- publishes them first).
SELECT id, staged, final, size_bytes, sha256 FROM publications
 WHERE job_id = %(job_id)s AND published_at IS NULL
 ORDER BY id;

-- name: publications_claim
-- Take committed outputs not yet published (of one job, or of any when job_id is NULL)
-- that no live publisher holds: unclaimed, past their claim, or claimed by a worker
-- whose session is gone (its liveness lock is free, as jobs_rescue_expired tells).
-- Oldest first; held rows are skipped.
UPDATE publications p
   SET claimed_by = %(worker_id)s,
       claimed_until = now() + make_interval(secs => %(claim_seconds)s)
 WHERE p.id IN (
    SELECT q.id FROM publications q
     WHERE q.published_at IS NULL
       AND (%(job_id)s::bigint IS NULL OR q.job_id = %(job_id)s::bigint)
       AND (q.claimed_until IS NULL OR q.claimed_until < now()
            OR (q.claimed_by IS DISTINCT FROM %(worker_id)s
                AND (SELECT pg_try_advisory_xact_lock(28017, w.liveness_key) FROM workers w
                      WHERE w.worker_id = q.claimed_by AND w.liveness_key IS NOT NULL)))
     ORDER BY q.id
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED)
RETURNING p.id, p.staged, p.final, p.size_bytes, p.sha256;

-- name: publications_release
-- Let the next comer take these at once (this publisher could not move them: its store
-- or disk failed).
UPDATE publications SET claimed_by = NULL, claimed_until = NULL
 WHERE id = ANY (%(ids)s::bigint[]) AND published_at IS NULL AND claimed_by = %(worker_id)s;
