SET LOCAL search_path = mediaq, public;

-- mediaq schema, revision 0026: a dead worker is known dead as soon as its session is
-- gone, and wake-ups go only to the processes that can use them.
--
-- workers.liveness_key: the key of the session-level advisory lock a worker holds on
-- its listening session (namespace 28017); the rescuer rescues the jobs of a worker
-- whose lock is free without waiting for the lease. NULL (workers of earlier releases):
-- the lease alone decides.
ALTER TABLE workers ADD COLUMN liveness_key INTEGER;

-- Targeted wake-ups: one channel per resource category (new or requeued work), and one
-- per category and host for a freed slot, sent only when work of that category waits.
CREATE FUNCTION wake_channel(category text, host text DEFAULT NULL) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT 'mq:' || left(category, 40)
                 || CASE WHEN host IS NULL THEN '' ELSE '@' || left(md5(host), 12) END $$;

CREATE OR REPLACE FUNCTION jobs_after_insert_rows() RETURNS trigger
    SET search_path = pg_catalog, mediaq
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO media_queue (job_id, queue_name, priority, scheduled_time, status, worker_id)
    SELECT n.id, n.queue_name, n.priority, coalesce(n.retry_after, n.submitted_at),
           queue_status_for(n.status), n.worker_id
      FROM new_jobs n
     ORDER BY n.id;
    PERFORM pg_notify(wake_channel(c.resource_category), c.resource_category)
       FROM (SELECT DISTINCT resource_category FROM new_jobs
              WHERE status IN ('pending', 'queued')) AS c;
    RETURN NULL;
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
            RETURNING host, category
        LOOP
            -- Only that machine's processes can use the slot, and only if work waits.
            IF EXISTS (SELECT 1 FROM workflow_jobs w
                        WHERE w.status IN ('pending', 'queued')
                          AND w.resource_category = released.category) THEN
                PERFORM pg_notify(wake_channel(released.category, released.host),
                                  released.category);
            END IF;
        END LOOP;
    END IF;

    IF NEW.status IS DISTINCT FROM OLD.status
       OR NEW.progress_percent IS DISTINCT FROM OLD.progress_percent THEN
        PERFORM write_job_notifications(OLD, NEW);
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status AND NEW.status IN ('pending', 'queued') THEN
        PERFORM pg_notify(wake_channel(NEW.resource_category), NEW.resource_category);
    END IF;
    RETURN NULL;
END $$;
