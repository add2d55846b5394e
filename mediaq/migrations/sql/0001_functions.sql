-- mediaq functions and triggers, revision 0001.
-- The state machine's side effects live here, so that every path that changes a
-- job (a worker, the CLI, psql) gets the same outbox rows, events, queue rows,
-- slot releases and wake-ups, in the same transaction as the change.

SET LOCAL search_path = mediaq, public;

-- ---------------------------------------------------------------------------
-- DuckDB compatibility: epoch() and round(double, int) for analytics queries written for DuckDB
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION epoch(interval) RETURNS double precision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT extract(epoch FROM $1)::double precision $$;

CREATE OR REPLACE FUNCTION round(double precision, integer) RETURNS double precision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT pg_catalog.round($1::numeric, $2)::double precision $$;

-- ---------------------------------------------------------------------------
-- Explicit ids (rows inserted with their own ids by SQL from outside the engine) must
-- not collide with generated ones later.
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION sync_id_sequence() RETURNS trigger
    SET search_path = pg_catalog, mediaq
    LANGUAGE plpgsql AS $$
DECLARE
    seq text := pg_get_serial_sequence(format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME), 'id');
    top bigint;
    last bigint;
BEGIN
    SELECT max(id) INTO top FROM new_rows;
    EXECUTE format('SELECT last_value FROM %s', seq) INTO last;
    IF top > last THEN
        PERFORM setval(seq, top);
    END IF;
    RETURN NULL;
END $$;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['workflow_definitions', 'workflow_steps', 'workflow_jobs',
                             'step_executions', 'media_queue', 'workflow_notifications',
                             'media_workflow_events']
    LOOP
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON mediaq.%I
                        REFERENCING NEW TABLE AS new_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION mediaq.sync_id_sequence()',
                       t || '_sync_id', t);
    END LOOP;
END $$;

-- ---------------------------------------------------------------------------
-- Jobs: defaults from the workflow, job codes, wake-ups
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION job_fill_defaults() RETURNS trigger
    SET search_path = pg_catalog, mediaq
    LANGUAGE plpgsql AS $$
DECLARE
    wd workflow_definitions;
BEGIN
    SELECT * INTO wd FROM workflow_definitions WHERE id = NEW.workflow_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'workflow id % does not exist', NEW.workflow_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    NEW.job_code := coalesce(NEW.job_code,
        format('JOB-%s-%s', to_char(now(), 'YYYY'), lpad(NEW.id::text, 6, '0')));
    NEW.priority := coalesce(NEW.priority, wd.default_priority, 5);
    NEW.resource_category := coalesce(NEW.resource_category, wd.resource_category, 'cpu');
    NEW.vram_required := coalesce(NEW.vram_required, wd.vram_required, 0);
    NEW.max_retries := coalesce(NEW.max_retries, wd.retry_count, 3);
    NEW.queue_name := coalesce(NEW.queue_name, wd.queue_name, wd.workflow_type, 'default');
    NEW.submitted_by := coalesce(NEW.submitted_by, session_user);
    RETURN NEW;
END $$;

CREATE TRIGGER workflow_jobs_fill_defaults BEFORE INSERT ON workflow_jobs
    FOR EACH ROW EXECUTE FUNCTION job_fill_defaults();

CREATE OR REPLACE FUNCTION job_after_insert() RETURNS trigger
    SET search_path = pg_catalog, mediaq
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO media_queue (job_id, queue_name, priority, scheduled_time, status, worker_id)
    VALUES (NEW.id, NEW.queue_name, NEW.priority, coalesce(NEW.retry_after, NEW.submitted_at),
            queue_status_for(NEW.status), NEW.worker_id);
    IF NEW.status IN ('pending', 'queued') THEN
        PERFORM pg_notify('mediaq_jobs', NEW.resource_category);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER workflow_jobs_after_insert AFTER INSERT ON workflow_jobs
    FOR EACH ROW EXECUTE FUNCTION job_after_insert();

-- Where a job goes when its attempt ends without finishing: an operator's request
-- made during the attempt wins (the request ends with the attempt).
CREATE OR REPLACE FUNCTION after_attempt(cancel_requested boolean, pause_requested boolean)
    RETURNS text
    SET search_path = pg_catalog, mediaq
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT CASE WHEN cancel_requested THEN 'cancelled'
                      WHEN pause_requested THEN 'paused'
                      ELSE 'pending' END $$;

CREATE OR REPLACE FUNCTION queue_status_for(job_status text) RETURNS text
    SET search_path = pg_catalog, mediaq
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT CASE WHEN job_status IN ('pending', 'queued') THEN 'queued' ELSE job_status END $$;

-- An insert from outside the engine takes over the engine's
-- row for that job, and the explicit id it asks for.
CREATE OR REPLACE FUNCTION media_queue_before_insert() RETURNS trigger
    SET search_path = pg_catalog, mediaq
    LANGUAGE plpgsql AS $$
BEGIN
    IF pg_trigger_depth() = 1 THEN
        DELETE FROM media_queue WHERE job_id = NEW.job_id;
        UPDATE media_queue
           SET id = nextval(pg_get_serial_sequence('mediaq.media_queue', 'id'))
         WHERE id = NEW.id;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER media_queue_before_insert BEFORE INSERT ON media_queue
    FOR EACH ROW EXECUTE FUNCTION media_queue_before_insert();

-- ---------------------------------------------------------------------------
-- Job state changes: queue row, slot release, outbox, wake-ups
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION notification_channel(recipient text) RETURNS text
    SET search_path = pg_catalog, mediaq
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT CASE
        WHEN recipient ILIKE 'mailto:%' THEN 'email'
        WHEN recipient ILIKE 'slack+%' THEN 'slack'
        WHEN recipient ~* '^https?://' THEN 'webhook'
        WHEN recipient LIKE '%@%' THEN 'email'
        ELSE 'log'
    END $$;

-- Recipients for one event: the job's own, the workflow's (per event type or
-- "*"), and the global default in settings.
CREATE OR REPLACE FUNCTION notification_recipients(job workflow_jobs, event_type text)
    RETURNS SETOF text
    SET search_path = pg_catalog, mediaq
    LANGUAGE sql STABLE
    AS $$
    SELECT DISTINCT r FROM (
        SELECT unnest(job.notify) AS r
            WHERE event_type <> 'job.started'
        UNION ALL
        SELECT jsonb_array_elements_text(coalesce(wd.notify -> event_type, '[]'))
            FROM workflow_definitions wd WHERE wd.id = job.workflow_id
        UNION ALL
        SELECT jsonb_array_elements_text(coalesce(wd.notify -> '*', '[]'))
            FROM workflow_definitions wd
            WHERE wd.id = job.workflow_id AND event_type <> 'job.started'
        UNION ALL
        SELECT jsonb_array_elements_text(coalesce(s.value -> event_type, '[]'))
            FROM settings s WHERE s.key = 'notify_default'
        UNION ALL
        SELECT jsonb_array_elements_text(coalesce(s.value -> '*', '[]'))
            FROM settings s WHERE s.key = 'notify_default' AND event_type <> 'job.started'
    ) recipients
    WHERE r IS NOT NULL AND r <> '' $$;

CREATE OR REPLACE FUNCTION job_event_type(old_job workflow_jobs, new_job workflow_jobs)
    RETURNS text
    SET search_path = pg_catalog, mediaq
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT CASE
        WHEN new_job.status = 'completed' THEN 'job.completed'
        WHEN new_job.status = 'failed' THEN 'job.failed'
        WHEN new_job.status = 'cancelled' THEN 'job.cancelled'
        WHEN new_job.status = 'pending' AND new_job.retry_count > coalesce(old_job.retry_count, 0)
            THEN 'job.retry_scheduled'
        WHEN new_job.status = 'processing' AND old_job.started_at IS NULL THEN 'job.started'
    END $$;

CREATE OR REPLACE FUNCTION write_job_notifications(old_job workflow_jobs, new_job workflow_jobs)
    RETURNS void
    SET search_path = pg_catalog, mediaq
    LANGUAGE plpgsql AS $$
DECLARE
    ev text := job_event_type(old_job, new_job);
    wd workflow_definitions;
    body jsonb;
    subject text;
BEGIN
    IF ev IS NULL THEN
        RETURN;
    END IF;
    SELECT * INTO wd FROM workflow_definitions WHERE id = new_job.workflow_id;
    subject := format('%s %s: %s', coalesce(wd.workflow_name, wd.workflow_code),
                      new_job.job_code, replace(ev, 'job.', ''));
    body := jsonb_build_object(
        'type', ev,
        'api_version', '1',
        'timestamp', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'job', jsonb_build_object(
            'id', new_job.id,
            'job_code', new_job.job_code,
            'workflow_code', wd.workflow_code,
            'workflow_version', wd.version,
            'status', new_job.status,
            'input_file_path', new_job.input_file_path,
            'output_file_path', new_job.output_file_path,
            'output_metadata', new_job.output_metadata,
            'error_message', new_job.error_message,
            'error_class', new_job.error_class,
            'retry_count', new_job.retry_count,
            'max_retries', new_job.max_retries,
            'retry_after', new_job.retry_after,
            'dead_letter', new_job.status = 'failed',
            'submitted_at', new_job.submitted_at,
            'started_at', new_job.started_at,
            'completed_at', new_job.completed_at));
    INSERT INTO workflow_notifications
        (job_id, notification_type, recipient, channel, subject, message, payload)
    SELECT new_job.id, ev, r, notification_channel(r), subject,
           coalesce(new_job.error_message, subject), body
      FROM notification_recipients(new_job, ev) AS r;
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

    IF NEW.status IS DISTINCT FROM OLD.status THEN
        PERFORM write_job_notifications(OLD, NEW);
        IF NEW.status IN ('pending', 'queued') THEN
            PERFORM pg_notify('mediaq_jobs', NEW.resource_category);
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER workflow_jobs_after_update AFTER UPDATE ON workflow_jobs
    FOR EACH ROW EXECUTE FUNCTION job_after_update();

-- A slot keeps the VRAM it reserved; freeing it gives the VRAM back to its host.
CREATE OR REPLACE FUNCTION slot_release_vram() RETURNS trigger
    SET search_path = pg_catalog, mediaq
    LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.vram_mb > 0 AND NEW.job_id IS NULL THEN
        UPDATE worker_hosts
           SET vram_reserved_mb = greatest(0, vram_reserved_mb - OLD.vram_mb),
               updated_at = now()
         WHERE host = OLD.host;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER worker_slots_release_vram AFTER UPDATE OF job_id ON worker_slots
    FOR EACH ROW WHEN (OLD.job_id IS NOT NULL AND NEW.job_id IS NULL)
    EXECUTE FUNCTION slot_release_vram();

-- ---------------------------------------------------------------------------
-- Step executions write the stage events
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION step_event(se step_executions, ev text, at timestamptz)
    RETURNS void
    SET search_path = pg_catalog, mediaq
    LANGUAGE sql AS $$
    INSERT INTO media_workflow_events
        (workflow_id, workflow_stage, event_type, event_timestamp, sla_due_timestamp,
         status, step_number, attempt)
    SELECT se.job_id, coalesce(ws.step_name, 'step ' || ws.step_number), ev, at,
           coalesce(se.started_at, at)
             + make_interval(secs => coalesce(ws.sla_seconds, ws.timeout_seconds, 300)),
           se.status, ws.step_number, se.retry_attempt
      FROM workflow_steps ws WHERE ws.id = se.step_id $$;

CREATE OR REPLACE FUNCTION step_execution_events() RETURNS trigger
    SET search_path = pg_catalog, mediaq
    LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status <> 'pending' THEN
            PERFORM step_event(NEW, 'stage_started', coalesce(NEW.started_at, clock_timestamp()));
        END IF;
    ELSIF NEW.status IS NOT DISTINCT FROM OLD.status THEN
        RETURN NULL;
    END IF;
    IF NEW.status = 'completed' THEN
        PERFORM step_event(NEW, 'stage_completed', coalesce(NEW.completed_at, clock_timestamp()));
    ELSIF NEW.status IN ('failed', 'cancelled') THEN
        PERFORM step_event(NEW, 'stage_failed', coalesce(NEW.completed_at, clock_timestamp()));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER step_executions_events AFTER INSERT OR UPDATE OF status ON step_executions
    FOR EACH ROW EXECUTE FUNCTION step_execution_events();

-- ---------------------------------------------------------------------------
-- Submission from SQL: SELECT * FROM mediaq.submit_job('WF-IMAGE-PROCESS', '/in.jpg')
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION submit_job(
    workflow_code   text,
    input_file_path text,
    priority        integer DEFAULT NULL,
    params          jsonb DEFAULT '{}'::jsonb,
    input_metadata  jsonb DEFAULT NULL,
    notify          text[] DEFAULT '{}',
    idempotency_key text DEFAULT NULL,
    submitted_by    text DEFAULT NULL
) RETURNS workflow_jobs
    SET search_path = pg_catalog, mediaq
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    wd workflow_definitions;
    job workflow_jobs;
BEGIN
    IF submit_job.idempotency_key IS NOT NULL THEN
        SELECT * INTO job FROM workflow_jobs j WHERE j.idempotency_key = submit_job.idempotency_key;
        IF FOUND THEN
            RETURN job;
        END IF;
    END IF;
    SELECT * INTO wd FROM workflow_definitions d
     WHERE d.workflow_code = submit_job.workflow_code AND d.is_current;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'workflow % does not exist', submit_job.workflow_code
            USING ERRCODE = 'no_data_found';
    END IF;
    IF NOT wd.is_active THEN
        RAISE EXCEPTION 'workflow % is disabled', submit_job.workflow_code
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF coalesce(submit_job.input_file_path, '') = '' THEN
        RAISE EXCEPTION 'an input file path is required' USING ERRCODE = 'not_null_violation';
    END IF;
    INSERT INTO workflow_jobs (workflow_id, input_file_path, input_metadata, priority, params,
                               notify, idempotency_key, submitted_by)
    VALUES (wd.id, submit_job.input_file_path, submit_job.input_metadata, submit_job.priority,
            coalesce(submit_job.params, '{}'::jsonb), coalesce(submit_job.notify, '{}'),
            submit_job.idempotency_key, submit_job.submitted_by)
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING * INTO job;
    IF NOT FOUND THEN  -- a concurrent submission with the same key won
        SELECT * INTO job FROM workflow_jobs j WHERE j.idempotency_key = submit_job.idempotency_key;
    END IF;
    RETURN job;
END $$;
