SELECT
wj.job_code,
wd.workflow_name,
wj.status,
wj.current_step,
(SELECT COUNT(*) FROM workflow_steps WHERE workflow_id = wd.id) as total_steps,
wj.progress_percent,
wj.priority,
wj.submitted_by,
wj.submitted_at,
wj.started_at,
wj.completed_at
FROM workflow_jobs wj
INNER JOIN workflow_definitions wd ON wj.workflow_id = wd.id
ORDER BY
CASE wj.status
WHEN 'failed' THEN 1
WHEN 'processing' THEN 2
WHEN 'queued' THEN 3
WHEN 'pending' THEN 4
WHEN 'completed' THEN 5
END,
wj.priority DESC;