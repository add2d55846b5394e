-- Named queries of the triggers: watch folders, schedules, scans (loaded by mediaq/queries.py).

-- name: watch_folder_add
-- A new watch folder (the same folder and workflow twice is refused by the unique key).
INSERT INTO mediaq.watch_folders (path, workflow_code, patterns, priority, settle_seconds,
                                  recursive, params)
VALUES (%(path)s, %(workflow_code)s, %(patterns)s, %(priority)s, %(settle_seconds)s,
        %(recursive)s, %(params)s)
RETURNING *;

-- name: watch_folders_list
-- Every watch folder with the number of file versions it has submitted.
SELECT f.*, (SELECT count(*) FROM mediaq.watch_files w WHERE w.folder_id = f.id) AS files_submitted
  FROM mediaq.watch_folders f ORDER BY f.id;

-- name: watch_folders_enabled
-- What a watcher scans.
SELECT id, path, workflow_code, patterns, settle_seconds, recursive
  FROM mediaq.watch_folders WHERE enabled ORDER BY id;

-- name: watch_folder_remove
-- Forget a watch folder (and the versions it saw; their jobs stay).
DELETE FROM mediaq.watch_folders WHERE id = %(id)s RETURNING id;

-- name: watch_submit
-- Jobs for the settled files (or objects: with their ETags) a scan found that no one
-- submitted before.
SELECT rel_path, job_code
  FROM mediaq.watch_submit(%(folder_id)s, %(rel_paths)s::text[], %(sizes)s::bigint[],
                           %(mtimes)s::bigint[], %(etags)s::text[]);

-- name: watch_folder_scanned
-- A scan ran (and maybe failed): the watch folder list shows when and why.
UPDATE mediaq.watch_folders SET last_scan_at = now(), last_error = %(error)s
 WHERE id = %(id)s;

-- name: schedule_add
-- A new cron schedule; next_run_at is its first slot.
INSERT INTO mediaq.schedules (cron, timezone, workflow_code, input_path, params, priority,
                              missed, next_run_at)
VALUES (%(cron)s, %(timezone)s, %(workflow_code)s, %(input_path)s, %(params)s, %(priority)s,
        %(missed)s, %(next_run_at)s)
RETURNING *;

-- name: schedules_list
-- Every schedule, next slot first.
SELECT s.*, j.job_code AS last_job_code
  FROM mediaq.schedules s LEFT JOIN mediaq.workflow_jobs j ON j.id = s.last_job_id
 ORDER BY s.enabled DESC, s.next_run_at, s.id;

-- name: schedule_remove
-- Delete a schedule (its jobs stay).
DELETE FROM mediaq.schedules WHERE id = %(id)s RETURNING id;

-- name: schedules_claim_due
-- Due schedules, each locked by one firer; the others skip them (inside a transaction).
SELECT s.*, now() AS db_now
  FROM mediaq.schedules s
 WHERE s.enabled AND s.next_run_at <= now()
 ORDER BY s.next_run_at
 LIMIT 20
   FOR UPDATE SKIP LOCKED;

-- name: schedule_advanced
-- A schedule's due slots are handled: the next slot, what fired, what was skipped.
UPDATE mediaq.schedules
   SET next_run_at = %(next_run_at)s,
       last_slot_at = coalesce(%(fired_slot)s, last_slot_at),
       last_job_id = coalesce(%(job_id)s, last_job_id),
       last_error = %(error)s,
       fired_count = fired_count + CASE WHEN %(job_id)s::bigint IS NULL THEN 0 ELSE 1 END,
       skipped_count = skipped_count + %(skipped)s
 WHERE id = %(id)s;

-- name: schedules_next_due
-- Seconds until the next enabled schedule is due (NULL: none).
SELECT extract(epoch FROM min(next_run_at) - now())::float AS wait_s
  FROM mediaq.schedules WHERE enabled;

-- name: scan_existing_inputs
-- Which of these paths already have a job of the workflow (a scan's skipExisting).
SELECT DISTINCT j.input_file_path
  FROM mediaq.workflow_jobs j
  JOIN mediaq.workflow_definitions d ON d.id = j.workflow_id
 WHERE d.workflow_code = %(workflow_code)s AND j.input_file_path = ANY(%(paths)s::text[]);
