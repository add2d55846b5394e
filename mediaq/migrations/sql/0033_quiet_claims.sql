SET LOCAL search_path = mediaq, public;

-- Quieter claims (issue 19): a chain's next step wakes no other process (its worker
-- claims it at once, run-ahead: task_done names it in mediaq.run_ahead_task), a freed
-- slot wakes its machine only when work other than that waits, and a batch's tasks
-- resolve each step's needs once instead of once per job.

CREATE OR REPLACE FUNCTION task_after_update() RETURNS trigger
    SET search_path = pg_catalog, mediaq
    LANGUAGE plpgsql AS $$
DECLARE
    released record;
    -- The task the committing worker's run-ahead claim takes next (set by task_done):
    -- no other process is woken for it, so a chain's next step wakes no one.
    ahead bigint := nullif(current_setting('mediaq.run_ahead_task', true), '')::bigint;
BEGIN
    IF OLD.state = 'running' THEN
        FOR released IN
            UPDATE worker_slots
               SET job_id = NULL, job_attempt = NULL, task_id = NULL, worker_id = NULL,
                   taken_at = NULL, vram_mb = 0
             WHERE task_id = OLD.id
            RETURNING host, category
        LOOP
            -- Only that machine's processes can use the slot, and only if work waits.
            IF EXISTS (SELECT 1 FROM job_tasks t
                        WHERE t.state = 'ready' AND t.resource_category = released.category
                          AND t.id IS DISTINCT FROM ahead) THEN
                PERFORM pg_notify(wake_channel(released.category, released.host),
                                  released.category);
            END IF;
        END LOOP;
    END IF;
    IF NEW.state = 'ready' AND NEW.id IS DISTINCT FROM ahead THEN
        PERFORM pg_notify(wake_channel(NEW.resource_category), NEW.resource_category);
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION job_tasks_create(job_ids bigint[]) RETURNS void
    SET search_path = pg_catalog, mediaq
    LANGUAGE sql AS $$
    -- Each step's needs are resolved once per statement, not once per job and step: a
    -- batch of jobs of one workflow shares them.
    WITH jobs AS MATERIALIZED (
        SELECT id, workflow_id, resource_category, vram_required, priority, queue_name
          FROM workflow_jobs WHERE id = ANY (job_ids)
    ), steps AS MATERIALIZED (
        SELECT s.id, s.workflow_id, s.step_number, s.resource_category, s.vram_required,
               coalesce(step_need_numbers(s.id), '{}') AS needs
          FROM workflow_steps s
         WHERE s.workflow_id IN (SELECT DISTINCT workflow_id FROM jobs)
    )
    INSERT INTO job_tasks (job_id, step_id, step_number, need_steps, pending_needs, state,
                           resource_category, vram_required, priority, queue_name)
    SELECT j.id, s.id, coalesce(s.step_number, 0), coalesce(s.needs, '{}'),
           coalesce(cardinality(s.needs), 0),
           CASE WHEN coalesce(cardinality(s.needs), 0) = 0 THEN 'ready' ELSE 'waiting' END,
           coalesce(s.resource_category, j.resource_category, 'cpu'),
           coalesce(s.vram_required,
                    CASE WHEN coalesce(s.resource_category, j.resource_category) = 'cpu' THEN 0
                         ELSE j.vram_required END, 0),
           coalesce(j.priority, 5), j.queue_name
      FROM jobs j
      LEFT JOIN steps s ON s.workflow_id = j.workflow_id
     ORDER BY j.id, s.step_number, s.id $$;
