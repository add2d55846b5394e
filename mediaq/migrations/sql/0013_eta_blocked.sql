-- mediaq schema, revision 0013: no estimated start for a job no live worker can run.
-- Until now job_etas counted a category no live worker serves as one slot, so a
-- gpu_encode job on a machine without a GPU (a worker with a VRAM budget of 0) was
-- promised a start seconds away while it stayed queued for ever. Such a waiting job now
-- gets no estimated start or finish, and the new last column, eta_blocked_reason, says
-- why ("no live worker serves gpu_encode with 4000 MB of VRAM (the largest VRAM budget
-- is 0 MB)"). CREATE OR REPLACE keeps the view's grants (mediaq_reader).

SET LOCAL search_path = mediaq, public;

-- Estimated start and finish of every waiting or running job: its workflow version's
-- model (computed once per workflow, not once per job) applied to the job's input
-- size, the work ahead of it in its category (running jobs' remainder, then waiting
-- jobs by priority and age) shared by the slots of machines with a live worker for
-- the category. NULL where history is missing.
-- A waiting job that no live worker can run (none takes its category, none has the
-- VRAM it needs, none takes its queue) is promised no start or finish:
-- eta_blocked_reason says why instead, and the job counts for nothing in the work
-- ahead of the others (the workers that serve them pass it by). A live worker is one
-- running with a heartbeat in the last minute; a category is served by a worker that
-- lists it (or lists none) with a limit above 0; a GPU job needs vram_required ≤ the
-- worker's VRAM budget (what its claims compare).
CREATE OR REPLACE VIEW job_etas AS
WITH live_jobs AS (
    SELECT j.id, j.job_code, j.status, j.resource_category, j.priority, j.started_at,
           j.retry_after, j.workflow_id, j.input_bytes, j.vram_required, j.queue_name,
           coalesce(j.progress_percent, 0) AS progress_percent
      FROM workflow_jobs j
     WHERE j.status IN ('pending', 'queued', 'processing')),
models AS (
    SELECT w.workflow_id, m.*
      FROM (SELECT DISTINCT workflow_id FROM live_jobs) w,
           LATERAL workflow_runtime_model(w.workflow_id) m),
live AS (
    SELECT l.*, runtime_from_model(m.fixed_s, m.base_s, m.per_byte_s, m.sized_flat_s,
                              l.input_bytes)
               AS total_s
      FROM live_jobs l JOIN models m ON m.workflow_id = l.workflow_id),
live_workers AS (
    SELECT w.categories, w.limits, w.queues, w.vram_budget_mb
      FROM workers w
     WHERE w.status = 'running' AND w.heartbeat_at > now() - interval '1 minute'),
needs AS (  -- what the waiting jobs need, each combination once
    SELECT DISTINCT resource_category, vram_required, queue_name
      FROM live_jobs WHERE status <> 'processing'),
served AS (
    SELECT n.*, s.*
      FROM needs n, LATERAL (
        SELECT count(*) FILTER (WHERE k.takes) AS takers,
               max(w.vram_budget_mb) FILTER (WHERE k.takes) AS largest_budget_mb,
               count(*) FILTER (WHERE k.takes AND k.fits) AS fitting,
               count(*) FILTER (WHERE k.takes AND k.fits AND k.queued) AS serving
          FROM live_workers w,
               LATERAL (SELECT (cardinality(w.categories) = 0
                                OR n.resource_category = ANY (w.categories))
                               AND coalesce((w.limits ->> n.resource_category)::integer, 1) > 0
                                   AS takes,
                               n.resource_category = 'cpu'
                               OR coalesce(n.vram_required, 0) <= w.vram_budget_mb AS fits,
                               w.queues IS NULL OR n.queue_name = ANY (w.queues) AS queued) k
        ) s),
blocked AS (
    SELECT s.resource_category, s.vram_required, s.queue_name,
           CASE WHEN s.takers = 0
                    THEN format('no live worker serves %s', s.resource_category)
                WHEN s.fitting = 0
                    THEN format('no live worker serves %s with %s MB of VRAM (the largest '
                                'VRAM budget is %s MB)', s.resource_category,
                                s.vram_required, s.largest_budget_mb)
                WHEN s.serving = 0
                    THEN format('no live worker serving %s takes queue %s',
                                s.resource_category, s.queue_name) END AS reason
      FROM served s),
remaining AS (
    SELECT l.*,
           CASE WHEN l.status = 'processing' THEN l.total_s * (1 - l.progress_percent / 100.0)
                ELSE l.total_s END AS left_s,
           b.reason AS eta_blocked_reason
      FROM live l
      LEFT JOIN blocked b
        ON l.status <> 'processing'
       AND b.resource_category IS NOT DISTINCT FROM l.resource_category
       AND b.vram_required IS NOT DISTINCT FROM l.vram_required
       AND b.queue_name IS NOT DISTINCT FROM l.queue_name),
capacity AS (
    SELECT s.category, count(*) AS slots
      FROM worker_slots s
     WHERE EXISTS (SELECT 1 FROM workers w
                    WHERE w.host = s.host AND w.status = 'running'
                      AND w.heartbeat_at > now() - interval '1 minute'
                      AND (cardinality(w.categories) = 0 OR s.category = ANY (w.categories)))
     GROUP BY s.category),
queued_ahead AS (
    SELECT r.*,
           coalesce(sum(r.left_s) FILTER (WHERE r.eta_blocked_reason IS NULL) OVER (
               PARTITION BY r.resource_category
               ORDER BY (r.status = 'processing') DESC, r.priority DESC, r.id
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS ahead_s
      FROM remaining r)
SELECT q.id AS job_id, q.job_code, q.status, q.resource_category, q.total_s AS estimated_seconds,
       CASE WHEN q.status = 'processing' THEN q.started_at
            WHEN q.eta_blocked_reason IS NOT NULL THEN NULL
            ELSE greatest(coalesce(q.retry_after, now()),
                          now() + make_interval(secs => q.ahead_s / coalesce(c.slots, 1))) END
           AS estimated_start,
       CASE WHEN q.status = 'processing' THEN now() + make_interval(secs => q.left_s)
            WHEN q.eta_blocked_reason IS NOT NULL THEN NULL
            ELSE greatest(coalesce(q.retry_after, now()),
                          now() + make_interval(secs => q.ahead_s / coalesce(c.slots, 1)))
                 + make_interval(secs => q.total_s) END
           AS estimated_finish,
       q.eta_blocked_reason
  FROM queued_ahead q LEFT JOIN capacity c ON c.category = q.resource_category;
