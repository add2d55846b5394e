-- mediaq schema, revision 0002: delivering the outbox.
-- Applied by mediaq/migrations/versions/0002_notifications.py into schema "mediaq".
SET LOCAL search_path = mediaq, public;

-- Delivery state on each outbox row. A row is "sending" while a notifier holds it
-- (until locked_until); a notifier that dies leaves it to be taken again, with the
-- same event id, so a receiver de-duplicates the rare second delivery.
ALTER TABLE workflow_notifications
    ADD COLUMN endpoint         TEXT,
    ADD COLUMN locked_by        TEXT,
    ADD COLUMN locked_until     TIMESTAMPTZ,
    ADD COLUMN last_attempt_at  TIMESTAMPTZ,
    ADD COLUMN last_status_code INTEGER,
    ADD CONSTRAINT workflow_notifications_status
        CHECK (status IN ('pending', 'sending', 'sent', 'failed'));
CREATE INDEX workflow_notifications_sending
    ON workflow_notifications (locked_until) WHERE status = 'sending';
CREATE INDEX workflow_notifications_job ON workflow_notifications (job_id);
CREATE INDEX workflow_notifications_failed
    ON workflow_notifications (created_at) WHERE status = 'failed';

-- A circuit breaker per endpoint (scheme://host:port of a webhook, "smtp" for e-mail).
-- closed: deliver; open: hold every row for the endpoint until open_until; half_open:
-- one probe is in flight (until open_until); disabled: the endpoint answered 410 Gone.
CREATE TABLE notification_endpoints (
    endpoint             TEXT PRIMARY KEY,
    state                TEXT NOT NULL DEFAULT 'closed'
        CHECK (state IN ('closed', 'open', 'half_open', 'disabled')),
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    times_opened         INTEGER NOT NULL DEFAULT 0,
    open_until           TIMESTAMPTZ,
    last_error           TEXT,
    last_success_at      TIMESTAMPTZ,
    last_failure_at      TIMESTAMPTZ,
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The breaker key of a recipient: what fails together shares it.
CREATE OR REPLACE FUNCTION notification_endpoint(recipient text) RETURNS text
    SET search_path = pg_catalog, mediaq
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT CASE notification_channel(recipient)
        WHEN 'webhook' THEN substring(lower(recipient) FROM '^(https?://[^/?#]+)')
        WHEN 'slack' THEN substring(lower(recipient) FROM '^slack\+(https?://[^/?#]+)')
        WHEN 'email' THEN 'smtp'
        ELSE 'log'
    END $$;

UPDATE workflow_notifications SET endpoint = notification_endpoint(recipient);

-- Events of one job state change (a retried failure is two: failed, then
-- retry_scheduled; a final one is failed, then dead_lettered).
DROP FUNCTION IF EXISTS job_event_type(workflow_jobs, workflow_jobs);
CREATE OR REPLACE FUNCTION job_event_types(old_job workflow_jobs, new_job workflow_jobs)
    RETURNS text[]
    SET search_path = pg_catalog, mediaq
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT CASE
        WHEN new_job.status = 'completed' THEN ARRAY['job.completed']
        WHEN new_job.status = 'failed' THEN ARRAY['job.failed', 'job.dead_lettered']
        WHEN new_job.status = 'cancelled' THEN ARRAY['job.cancelled']
        WHEN new_job.status = 'pending' AND new_job.retry_count > coalesce(old_job.retry_count, 0)
            THEN ARRAY['job.failed', 'job.retry_scheduled']
        WHEN new_job.status = 'processing' AND old_job.started_at IS NULL
            THEN ARRAY['job.started']
        ELSE ARRAY[]::text[]
    END $$;

-- Progress milestones reached by an update (25, 50, 75 %), for job.progress.
CREATE OR REPLACE FUNCTION job_progress_milestones(old_job workflow_jobs, new_job workflow_jobs)
    RETURNS int[]
    SET search_path = pg_catalog, mediaq
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT coalesce(array_agg(m ORDER BY m), ARRAY[]::int[])
      FROM unnest(ARRAY[25, 50, 75]) AS m
     WHERE new_job.status = 'processing'
       AND coalesce(old_job.progress_percent, 0) < m AND new_job.progress_percent >= m $$;

-- Recipients for one event: the job's own (not for started or progress; people
-- reading e-mail or Slack get only the outcome), the workflow's (per event type, or
-- "*" for all but started and progress), and the global default in settings.
CREATE OR REPLACE FUNCTION notification_recipients(job workflow_jobs, event_type text)
    RETURNS SETOF text
    SET search_path = pg_catalog, mediaq
    LANGUAGE sql STABLE
    AS $$
    SELECT DISTINCT r FROM (
        SELECT r FROM unnest(job.notify) AS r
            WHERE event_type NOT IN ('job.started', 'job.progress')
              AND (notification_channel(r) = 'webhook'
                   OR event_type IN ('job.completed', 'job.dead_lettered', 'job.cancelled'))
        UNION ALL
        SELECT jsonb_array_elements_text(coalesce(wd.notify -> event_type, '[]'))
            FROM workflow_definitions wd WHERE wd.id = job.workflow_id
        UNION ALL
        SELECT jsonb_array_elements_text(coalesce(wd.notify -> '*', '[]'))
            FROM workflow_definitions wd
            WHERE wd.id = job.workflow_id AND event_type NOT IN ('job.started', 'job.progress')
        UNION ALL
        SELECT jsonb_array_elements_text(coalesce(s.value -> event_type, '[]'))
            FROM settings s WHERE s.key = 'notify_default'
        UNION ALL
        SELECT jsonb_array_elements_text(coalesce(s.value -> '*', '[]'))
            FROM settings s
            WHERE s.key = 'notify_default' AND event_type NOT IN ('job.started', 'job.progress')
    ) recipients
    WHERE r IS NOT NULL AND r <> '' $$;

-- One outbox row per recipient of each event: a fresh event id each, carried in the
-- payload too, so the receiver sees the same id in the body and the webhook-id header.
CREATE OR REPLACE FUNCTION write_event_notifications(new_job workflow_jobs, ev text,
                                                      extra jsonb DEFAULT '{}'::jsonb)
    RETURNS void
    SET search_path = pg_catalog, mediaq
    LANGUAGE plpgsql AS $$
DECLARE
    wd workflow_definitions;
    body jsonb;
    subject text;
    written int;
BEGIN
    SELECT * INTO wd FROM workflow_definitions WHERE id = new_job.workflow_id;
    subject := format('%s %s: %s', coalesce(wd.workflow_name, wd.workflow_code),
                      new_job.job_code, replace(replace(ev, 'job.', ''), '_', ' '));
    body := jsonb_build_object(
        'type', ev,
        'api_version', '1',
        'timestamp', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'job', jsonb_build_object(
            'id', new_job.id,
            'job_code', new_job.job_code,
            'workflow_code', wd.workflow_code,
            'workflow_name', wd.workflow_name,
            'workflow_version', wd.version,
            'status', new_job.status,
            'priority', new_job.priority,
            'input_file_path', new_job.input_file_path,
            'input_metadata', new_job.input_metadata,
            'output_file_path', new_job.output_file_path,
            'output_metadata', new_job.output_metadata,
            'progress_percent', new_job.progress_percent,
            'current_step', new_job.current_step,
            'error_message', new_job.error_message,
            'error_class', new_job.error_class,
            'retry_count', new_job.retry_count,
            'max_retries', new_job.max_retries,
            'will_retry', new_job.status = 'pending',
            'retry_after', new_job.retry_after,
            'dead_letter', new_job.status = 'failed',
            'submitted_by', new_job.submitted_by,
            'submitted_at', new_job.submitted_at,
            'started_at', new_job.started_at,
            'completed_at', new_job.completed_at)) || extra;
    INSERT INTO workflow_notifications
        (job_id, notification_type, recipient, channel, endpoint, subject, message, payload,
         event_id)
    SELECT new_job.id, ev, r.recipient, notification_channel(r.recipient),
           notification_endpoint(r.recipient), subject,
           coalesce(CASE WHEN ev IN ('job.failed', 'job.dead_lettered', 'job.retry_scheduled')
                         THEN new_job.error_message END, subject),
           body || jsonb_build_object('id', 'msg_' || replace(r.eid::text, '-', '')),
           r.eid
      FROM (SELECT recipient, gen_random_uuid() AS eid
              FROM notification_recipients(new_job, ev) AS recipient) r;
    GET DIAGNOSTICS written = ROW_COUNT;
    IF written > 0 THEN
        PERFORM pg_notify('mediaq_notifications', '');
    END IF;
END $$;

CREATE OR REPLACE FUNCTION write_job_notifications(old_job workflow_jobs, new_job workflow_jobs)
    RETURNS void
    SET search_path = pg_catalog, mediaq
    LANGUAGE plpgsql AS $$
DECLARE
    ev text;
    milestone int;
BEGIN
    IF new_job.status IS DISTINCT FROM old_job.status THEN
        FOREACH ev IN ARRAY job_event_types(old_job, new_job) LOOP
            PERFORM write_event_notifications(new_job, ev);
        END LOOP;
    END IF;
    FOREACH milestone IN ARRAY job_progress_milestones(old_job, new_job) LOOP
        PERFORM write_event_notifications(new_job, 'job.progress',
                                          jsonb_build_object('milestone', milestone));
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION job_after_update() RETURNS trigger
    SET search_path = pg_catalog, mediaq
    LANGUAGE plpgsql AS $$
DECLARE
    released record;
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status OR NEW.attempt <> OLD.attempt
       OR NEW.retry_after IS DISTINCT FROM OLD.retry_after THEN
        UPDATE media_queue
           SET status = queue_status_for(NEW.status),
               priority = NEW.priority,
               worker_id = NEW.worker_id,
               picked_up_at = CASE WHEN NEW.status = 'processing' THEN now() ELSE picked_up_at END,
               scheduled_time = CASE WHEN NEW.status IN ('pending', 'queued')
                                     THEN coalesce(NEW.retry_after, now()) ELSE scheduled_time END
         WHERE job_id = NEW.id;
    END IF;

    -- Leaving "processing" (or being re-claimed) frees the slot and VRAM it held.
    IF OLD.status = 'processing' AND (NEW.status <> 'processing' OR NEW.attempt <> OLD.attempt) THEN
        FOR released IN
            UPDATE worker_slots
               SET job_id = NULL, job_attempt = NULL, worker_id = NULL, taken_at = NULL, vram_mb = 0
             WHERE job_id = OLD.id AND job_attempt = OLD.attempt
            RETURNING category
        LOOP
            PERFORM pg_notify('mediaq_jobs', released.category);
        END LOOP;
    END IF;

    IF NEW.status IS DISTINCT FROM OLD.status
       OR NEW.progress_percent IS DISTINCT FROM OLD.progress_percent THEN
        PERFORM write_job_notifications(OLD, NEW);
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status AND NEW.status IN ('pending', 'queued') THEN
        PERFORM pg_notify('mediaq_jobs', NEW.resource_category);
    END IF;
    RETURN NULL;
END $$;
