SET LOCAL search_path = mediaq, public;

-- Jobs as tasks, continued: a job whose workflow has no steps gets one task with no
-- step (its worker fails the job: "the workflow has no steps", as before tasks); a
-- running task keeps its own fraction done, and the job's progress is the weighted
-- progress of its tasks, its current step the lowest one not done.
ALTER TABLE job_tasks ALTER COLUMN step_id DROP NOT NULL;
ALTER TABLE job_tasks ADD COLUMN progress REAL NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION job_tasks_create(job_ids bigint[]) RETURNS void
    SET search_path = pg_catalog, mediaq
    LANGUAGE sql AS $$
    INSERT INTO job_tasks (job_id, step_id, step_number, need_steps, pending_needs, state,
                           resource_category, vram_required, priority, queue_name)
    SELECT j.id, s.id, coalesce(s.step_number, 0), n.needs, cardinality(n.needs),
           CASE WHEN cardinality(n.needs) = 0 THEN 'ready' ELSE 'waiting' END,
           coalesce(s.resource_category, j.resource_category, 'cpu'),
           coalesce(s.vram_required,
                    CASE WHEN coalesce(s.resource_category, j.resource_category) = 'cpu' THEN 0
                         ELSE j.vram_required END, 0),
           coalesce(j.priority, 5), j.queue_name
      FROM workflow_jobs j
      LEFT JOIN workflow_steps s ON s.workflow_id = j.workflow_id
     CROSS JOIN LATERAL (SELECT coalesce(step_need_numbers(s.id), '{}') AS needs) n
     WHERE j.id = ANY (job_ids)
     ORDER BY j.id, s.step_number, s.id $$;

-- A job's progress, in percent, as the weighted progress of its tasks: each step weighs
-- the same (the share today's linear jobs show); a fanned-out step's items share its
-- weight; done, skipped and given-up tasks count whole, running ones by their own
-- fraction (``mine`` at ``fraction``: the caller's tasks, whose new figure this very
-- statement writes), waiting and ready ones not at all.
CREATE FUNCTION job_weighted_progress(job bigint, mine bigint[], fraction real)
    RETURNS numeric
    SET search_path = pg_catalog, mediaq
    LANGUAGE sql STABLE
    AS $$
    SELECT coalesce(round((100 * avg(per_step.done))::numeric, 2), 0)
      FROM (SELECT coalesce(avg(t.done) FILTER (WHERE t.item_index IS NOT NULL),
                            max(t.done)) AS done
              FROM (SELECT step_number, item_index,
                           CASE WHEN id = ANY (mine) THEN least(greatest(fraction, 0), 1)
                                WHEN state IN ('completed', 'skipped', 'failed') THEN 1
                                WHEN state = 'running' THEN progress
                                ELSE 0 END AS done
                      FROM job_tasks WHERE job_id = job) t
             GROUP BY t.step_number) per_step $$;

-- The step a job shows as current while its tasks run side by side: the lowest step
-- number not done yet (seed 000's dashboards read current_step).
CREATE FUNCTION job_lowest_unfinished_step(job bigint) RETURNS integer
    SET search_path = pg_catalog, mediaq
    LANGUAGE sql STABLE
    AS $$
    SELECT min(step_number) FROM job_tasks
     WHERE job_id = job AND state IN ('waiting', 'ready', 'running') $$;
